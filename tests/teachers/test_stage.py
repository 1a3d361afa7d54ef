"""Outages never commit: a TEACH or judge stage whose endpoint fails (too many failed requests, an
open circuit breaker, a passed deadline) raises `StageFailed` before writing anything, stays
unmarked, and a resume sends only the requests that failed (the answers are in the run's request
cache). The loop runs with the fake generator and trainer of `test_loop_flow` and the real
`LLMTeacher` against a local HTTP server."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer
from fakes import Fakes, FakeTeacher, quick_datasets, tiny_config  # noqa: F401
from typer.testing import CliRunner

from mbt_online import loop
from mbt_online.config import Config, TeacherConfig, load_config
from mbt_online.contracts import StageFailed, check_failures, forget_outages, note_failure
from mbt_online.evaluation.judges import judge_round
from mbt_online.llm import client as llm_client
from mbt_online.llm.client import LLMClient
from mbt_online.rundir import load_rows, read_metrics, save_rows, stage_dir
from mbt_online.tasks.base import Example
from mbt_online.teachers import llm as llm_teacher
from mbt_online.teachers import stage
from mbt_online.teachers.contract import TeachRequest, TeachResult
from mbt_online.teachers.llm import LLMTeacher
from mbt_online.teachers.stage import round_teacher, taught_rows

TIMEOUT_S = 2.0


def key(payload: dict) -> str:
    """A chat request's identity: what the client's cache key hashes, less the endpoint."""
    return json.dumps({k: payload.get(k) for k in ("messages", "n", "seed")}, sort_keys=True)


class OutageServer(FakeLLMServer):
    """Answers 503 to every chat request while `down`; with `answer_first=N` it answers the first
    N distinct requests and fails every other one (retries included). It records which requests
    were answered and which failed."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.down = True
        self.answer_first: int | None = None
        self.answered: set[str] = set()
        self.failed: set[str] = set()

    def fails(self, payload: dict) -> bool:
        k = key(payload)
        with self._lock:
            if k in self.answered:
                return False
            if k not in self.failed and self.answer_first is not None:
                if len(self.answered) < self.answer_first:
                    self.answered.add(k)
                    return False
            elif not self.down:
                self.answered.add(k)
                return False
            self.failed.add(k)
            return True

    def _handler_class(self) -> type:
        base, server = super()._handler_class(), self

        class Handler(base):  # type: ignore[misc, valid-type]
            def _behave(self, behaviour: str, payload: dict) -> None:
                if server.fails(payload):
                    behaviour = "503"
                super()._behave(behaviour, payload)

        return Handler


def outage_config(tmp_path: Path, server: FakeLLMServer, **extra: object) -> Config:
    """One round, MBT-S, one try per request: each question is exactly one chat request."""
    return tiny_config(
        tmp_path,
        **{
            "loop.rounds": 1,
            "teacher.backend": "openai",
            "teacher.base_url": server.base_url,
            "teacher.model": "m",
            "teacher.mode": "mbt-s",
            "teacher.max_tries": 1,
            "teacher.timeout_s": TIMEOUT_S,
            **extra,
        },
    )


def with_real_teacher(fakes: Fakes):
    """The fake generator and trainer, and the run's real LLM teacher (its cache in the run)."""

    def drivers(cfg: Config, run_dir: Path) -> loop.Drivers:
        d = fakes.drivers(cfg, run_dir)
        d.make_teacher = lambda r: round_teacher(cfg, r, run_dir, d.count_tokens)
        return d

    return drivers


def train(cfg: Config, resume: bool = False) -> Path:
    run_dir = Path(cfg.run.runs_dir) / cfg.run.name
    if resume:
        cfg = load_config(run_dir / "config.yaml")
    return loop.train(cfg, run_dir, resume=resume, drivers=with_real_teacher(Fakes(cfg)))


def completed(run_dir: Path) -> list[str]:
    return json.loads((run_dir / "state.json").read_text())["completed"]


@pytest.fixture
def fast_retries(monkeypatch):
    """Clients that back off for milliseconds, not seconds (the retry policy is the same)."""
    fast = functools.partial(llm_client.make_client, backoff_s=0.001, max_backoff_s=0.01)
    monkeypatch.setattr(llm_teacher, "make_client", fast)
    monkeypatch.setattr("mbt_online.evaluation.judges.make_client", fast)


# ---------------------------------------------------------------------------------------------
# the TEACH stage through the loop


def test_a_teacher_answering_503_fails_teach_unmarked_and_resume_sends_only_the_failed(tmp_path):
    with OutageServer() as server:
        cfg = outage_config(tmp_path, server)
        start = time.monotonic()
        with pytest.raises(StageFailed) as e:
            train(cfg)
        assert time.monotonic() - start < 10 * TIMEOUT_S  # the client's own retry policy
        assert e.value.stage == "teach" and "4 of 4 requests failed" in str(e.value)
        assert "http_503" in str(e.value)
        run_dir = Path(cfg.run.runs_dir) / cfg.run.name
        assert "round-1/score" in completed(run_dir) and "round-1/teach" not in completed(run_dir)
        assert not stage_dir(run_dir, 1, "teach").exists()
        assert "train --resume" in (run_dir / "run.log").read_text()
        failed = set(server.failed)
        assert len(failed) == 4 and not server.answered

        server.down, server.payloads = False, []
        train(cfg, resume=True)
    assert "round-1/teach" in completed(run_dir) and "round-1/eval" in completed(run_dir)
    assert {key(p) for p in server.payloads} == failed and len(server.payloads) == len(failed)
    # the fake's replies fail verify: rejected traces are a normal outcome, not an outage
    taught = load_rows(stage_dir(run_dir, 1, "teach"))
    assert len(taught) == 4 and not any(t["verified"] for t in taught)
    assert not any(r.startswith("request_failed") for t in taught for r in t["reasons"])


def test_resume_after_a_partial_outage_asks_only_what_failed(tmp_path, fast_retries):
    with OutageServer() as server:
        server.answer_first = 2  # two questions answered, two failed: 50% > 0.2
        cfg = outage_config(tmp_path, server)
        with pytest.raises(StageFailed, match="2 of 4 requests failed"):
            train(cfg)
        answered, failed = set(server.answered), set(server.failed)
        assert len(answered) == 2 and len(failed) == 2

        server.answer_first, server.down, server.payloads = None, False, []
        train(cfg, resume=True)
    assert {key(p) for p in server.payloads} == failed and len(server.payloads) == 2
    run_dir = Path(cfg.run.runs_dir) / cfg.run.name
    taught = load_rows(stage_dir(run_dir, 1, "teach"))
    assert sum(json.loads(t["usage"])["cached_requests"] for t in taught) == 2


def test_failures_under_the_threshold_commit_the_stage(tmp_path, fast_retries):
    with OutageServer() as server:
        server.answer_first = 2
        cfg = outage_config(tmp_path, server, **{"teacher.max_failure_rate": 0.5})
        run_dir = train(cfg)  # 50% is not past 0.5
    taught = load_rows(stage_dir(run_dir, 1, "teach"))
    lost = [t for t in taught if t["reasons"] == ["request_failed:http_503"]]
    assert len(lost) == 2 and "round-1/teach" in completed(run_dir)


def test_a_teach_stage_past_its_deadline_sends_no_new_batch(tmp_path, monkeypatch):
    class SlowTeacher(FakeTeacher):
        def teach(self, requests):
            time.sleep(0.2)
            return super().teach(requests)

    monkeypatch.setattr(stage, "BATCH", 1)
    cfg = tiny_config(tmp_path, **{"teacher.stage_deadline_s": 0.1, "loop.rounds": 1})
    fakes = Fakes(cfg)

    def drivers(cfg: Config, run_dir: Path) -> loop.Drivers:
        d = fakes.drivers(cfg, run_dir)
        d.make_teacher = lambda r: SlowTeacher(r, fakes.calls)
        return d

    run_dir = Path(cfg.run.runs_dir) / cfg.run.name
    with pytest.raises(StageFailed, match="past teacher.stage_deadline_s=0.1 with 1 of"):
        loop.train(cfg, run_dir, drivers=drivers)
    assert fakes.of("teach") == [("teach", 1, 1)]  # one batch, then no more
    assert "round-1/teach" not in completed(run_dir)


# ---------------------------------------------------------------------------------------------
# the stage's check on its own


def result(ex_id: str, reasons: list[str]) -> TeachResult:
    return TeachResult(ex_id, "mbt-s", None, not reasons, reasons, 1, "fake")


class ScriptedTeacher:
    """Returns one scripted result per request, batch by batch; counts the batches asked."""

    def __init__(self, reasons: list[list[str]]) -> None:
        self.reasons, self.batches = list(reasons), 0

    def teach(self, requests: list[TeachRequest]) -> list[TeachResult]:
        self.batches += 1
        return [result(r.example.id, self.reasons.pop(0)) for r in requests]


EXAMPLES = [Example(id=f"q{i}", question=f"q{i}?", documents=[], answer="a") for i in range(6)]
REQUESTS = [TeachRequest(ex, "mbt-s") for ex in EXAMPLES]


def test_verify_rejections_are_not_failures():
    rejected = [["answer_not_reached", "missing_phases:planning"]] * 6
    rows = taught_rows(REQUESTS, ScriptedTeacher(rejected), max_failure_rate=0.0)
    assert len(rows) == 6 and not any(r["verified"] for r in rows)


def test_an_open_circuit_breaker_fails_the_stage_after_its_batch(monkeypatch):
    monkeypatch.setattr(stage, "BATCH", 2)
    teacher = ScriptedTeacher([[], ["request_failed:circuit_open"]] + [[]] * 4)
    with pytest.raises(StageFailed, match="circuit breaker is open"):
        taught_rows(REQUESTS, teacher, max_failure_rate=1.0)
    assert teacher.batches == 1


def test_the_failure_message_names_stage_rate_and_most_common_error():
    forget_outages()  # an endpoint client of another test noted its failures
    with pytest.raises(StageFailed) as e:
        check_failures("teach", ["http_503", "http_503", "timeout", None, None], 0.2)
    assert str(e.value) == (
        "teach: 3 of 5 requests failed (60%, over teacher.max_failure_rate=0.2); "
        "most common error: http_503 (2 of 3)"
    )
    note_failure("http://127.0.0.1:9/v1", "http_503", "HTTP 503: overloaded")
    with pytest.raises(
        StageFailed, match=r"\(2 of 3\); the last from http://127.0.0.1:9/v1: HTTP 503"
    ):
        check_failures("teach", ["http_503", "http_503", "timeout", None, None], 0.2)
    check_failures("teach", ["timeout", None, None, None, None], 0.2)  # 20% is not past 0.2


def test_an_open_breaker_stops_the_llm_teachers_further_tries(tmp_path):
    with FakeLLMServer() as dead:
        url = dead.base_url  # a port that refuses connections once the server is gone
    client = LLMClient(url, "m", concurrency=1, max_retries=0, breaker_failures=1)
    cfg = TeacherConfig(backend="openai", max_tries=3, concurrency=1)
    results = LLMTeacher(client, cfg).teach(REQUESTS[:2])
    assert [r.reasons for r in results] == [
        ["request_failed:connection"],
        ["request_failed:circuit_open"],
    ]
    assert [r.tries for r in results] == [1, 1]  # not max_tries: every try would fail alike


# ---------------------------------------------------------------------------------------------
# judges


ROWS = [
    {
        "example_id": f"e{i}",
        "question": f"Who is {i}?",
        "answer": "Ann",
        "trace": "t",
        "predicted": "Ann",
    }
    for i in range(3)
]


def test_a_judge_stage_past_the_threshold_writes_nothing(tmp_path, fast_retries):
    run = tmp_path / "run"
    save_rows(ROWS, stage_dir(run, 1, "eval"))
    (run / "metrics.jsonl").write_text(json.dumps({"round": 1, "eval/accuracy": 0.5}) + "\n")
    with OutageServer() as server:
        cfg = Config(teacher=TeacherConfig(base_url=server.base_url, model="m"))
        with pytest.raises(StageFailed, match="judge: 3 of 3 requests failed"):
            judge_round(run, 1, ["correctness"], cfg)
    assert not stage_dir(run, 1, "judge").exists()
    assert read_metrics(run) == [{"round": 1, "eval/accuracy": 0.5}]


def test_a_failed_judge_leaves_the_rounds_eval_unmarked(tmp_path, fast_retries):
    with OutageServer() as server:
        cfg = tiny_config(
            tmp_path,
            **{
                "loop.rounds": 0,
                "eval.judges": "[correctness]",
                "teacher.base_url": server.base_url,
            },
        )
        with pytest.raises(StageFailed, match="judge: "):
            loop.train(cfg, Path(cfg.run.runs_dir) / cfg.run.name, drivers=Fakes(cfg).drivers)
        run_dir = Path(cfg.run.runs_dir) / cfg.run.name
        assert "round-0/eval" not in completed(run_dir)
        server.down = False
        train(cfg, resume=True)
    assert "round-0/eval" in completed(run_dir)
    assert "judge/correct_rate" in read_metrics(run_dir)[0]


# ---------------------------------------------------------------------------------------------
# the CLI


def test_train_exits_1_and_says_to_resume(monkeypatch, tmp_path):
    from mbt_online.cli import app

    def down(*args, **kwargs):
        e = StageFailed("teach", "4 of 4 requests failed")
        e.run_dir = tmp_path / "runs" / "r"
        raise e

    monkeypatch.setattr(loop, "train", down)
    out = CliRunner().invoke(app, ["train", "run.name=r"])
    assert out.exit_code == 1  # a stage failed (an outage), not a usage error
    text = " ".join(out.output.split())
    assert "teach: 4 of 4 requests failed" in text
    assert f"mbt-online train --resume {tmp_path / 'runs' / 'r'}" in text


def test_judge_exits_1_and_writes_nothing(tmp_path, fast_retries):
    from mbt_online.cli import app
    from mbt_online.config import dump_config

    run = tmp_path / "run"
    save_rows(ROWS, stage_dir(run, 1, "eval"))
    with OutageServer() as server:
        dump_config(Config(teacher=TeacherConfig(base_url=server.base_url)), run / "config.yaml")
        args = ["judge", "--run", str(run), "--round", "1", "--judges", "correctness"]
        out = CliRunner().invoke(app, args)
    assert out.exit_code == 1  # a stage failed (an outage), not a usage error
    assert "judge: 3 of 3 requests failed" in " ".join(out.output.split())
    assert not stage_dir(run, 1, "judge").exists()
