"""A teacher endpoint that fails every way a real one does: refusing connections, dying mid-stage,
too slow to answer, accepting and never answering, never accepting, 500s, 429 with a Retry-After
of an hour, bodies over the size cap, non-UTF-8 junk and JSON nested past the parser's depth.

Each run is a child process driving the real LLM teacher (`teacher.backend=openai`, the run's
request cache) inside the loop, with the fake generator and trainer, against tests/
fake_llm_server.py. The server answers the first question, then fails every other request the
chosen way. TEACH must fail unmarked within a bound (at once for a Retry-After past the ceiling,
or a body too large: neither is retried), and with the endpoint healthy again `--resume` must send
exactly the requests that failed, once each, and end as a run against a healthy endpoint ends.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from fake_llm_server import BlackHole, FakeLLMServer
from fakes import Fakes, artifacts, tiny_config

from faults.harness import Child, in_child, run_dir_of
from mbt_online import loop
from mbt_online.config import Config, load_config
from mbt_online.evaluation.judges import judge_round
from mbt_online.rundir import load_rows, stage_dir

TIMEOUT_S = 0.5  # read and connect timeouts: the bound a stage must fail within scales with it
BOUND_S = 10 * TIMEOUT_S  # the check: within ten times the request timeout
RETRIES = 3  # the client's retries after the first try (its default)


def key(payload: dict) -> str:
    """A chat request's identity (what the client's cache key hashes, less the endpoint)."""
    return json.dumps({k: payload.get(k) for k in ("messages", "n", "seed")}, sort_keys=True)


class FaultServer(FakeLLMServer):
    """Answers the first `answer_first` distinct requests, then meets every other request (retries
    included) with `fault` (a FakeLLMServer behaviour) while it is set; records the payloads of
    the requests answered and failed."""

    def __init__(self, fault: str | None = None, answer_first: int = 1, **kw: Any) -> None:
        super().__init__(**kw)
        self.fault, self.answer_first = fault, answer_first
        self.answered: set[str] = set()
        self.failed: list[str] = []  # one entry per failed attempt

    def behaviour(self, payload: dict, planned: str) -> str:
        k = key(payload)
        with self._lock:
            if self.fault is None or k in self.answered or len(self.answered) < self.answer_first:
                self.answered.add(k)
                return planned
            self.failed.append(k)
            return self.fault

    def _handler_class(self) -> type:
        base, server = super()._handler_class(), self

        class Handler(base):  # type: ignore[misc, valid-type]
            def _behave(self, behaviour: str, payload: dict) -> None:
                super()._behave(server.behaviour(payload, behaviour), payload)

        return Handler


def teacher_config(tmp_path: Path, base_url: str, **extra: object) -> Config:
    """One round, MBT-S, one try per question: each question is exactly one chat request."""
    return tiny_config(
        tmp_path,
        **{
            "loop.rounds": 1,
            "teacher.backend": "openai",
            "teacher.base_url": base_url,
            "teacher.model": "m",
            "teacher.mode": "mbt-s",
            "teacher.max_tries": 1,
            "teacher.timeout_s": TIMEOUT_S,
            "teacher.connect_timeout_s": TIMEOUT_S,
            "teacher.max_response_bytes": 100_000,
            **extra,
        },
    )


def train(cfg: Config, resume: bool = False) -> None:
    """The loop with the fake generator and trainer and the run's real LLM teacher, its client
    backing off for milliseconds (the retry policy is the client's own)."""
    from mbt_online.llm import client
    from mbt_online.teachers import llm, stage

    llm.make_client = functools.partial(client.make_client, backoff_s=0.001, max_backoff_s=0.01)
    run_dir = run_dir_of(cfg)
    fakes = Fakes(cfg)

    def drivers(cfg: Config, run_dir: Path) -> loop.Drivers:
        d = fakes.drivers(cfg, run_dir)
        d.make_teacher = lambda r: stage.round_teacher(cfg, r, run_dir, d.count_tokens)
        return d

    if resume:
        cfg = load_config(run_dir / "config.yaml")
    loop.train(cfg, run_dir, resume=resume, drivers=drivers)


def comparable(art: dict) -> dict:
    """A run's artifacts less the teacher's usage accounting (a resumed run finds the answers it
    had in its cache: same texts, other counts) and the endpoint's address."""
    out = dict(art)
    out["round-1/teach"] = [{**t, "usage": None} for t in art["round-1/teach"]]
    return out


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> dict:
    """A run against an endpoint that always answers."""
    tmp = tmp_path_factory.mktemp("healthy")
    with FaultServer() as server:
        cfg = teacher_config(tmp, server.base_url)
        in_child(lambda: train(cfg), tmp).value  # noqa: B018 - raises unless it finished
    return comparable(artifacts(run_dir_of(cfg)))


# fault -> (the failure kinds TEACH may report, each failed request's tries on the server)
FAULTS: dict[str, tuple[set[str], int | None]] = {
    "refused": ({"connection", "circuit_open"}, 0),  # nothing listens at the address
    "die": ({"connection", "circuit_open"}, None),  # the server stops mid-stage
    "slow": ({"timeout", "circuit_open"}, None),  # answers after the read timeout
    "hang": ({"timeout", "circuit_open"}, None),  # accepts, never answers
    "blackhole": ({"timeout", "circuit_open"}, 0),  # never accepts a connection
    "500": ({"http_500"}, RETRIES + 1),
    "429;Retry-After=3600": ({"http_429"}, 1),  # past max_retry_after_s: not waited for
    "huge": ({"too_large"}, 1),  # Content-Length over the cap: not retried
    "huge_chunked": ({"too_large"}, 1),  # no length; over the cap while reading
    "junk": ({"malformed"}, RETRIES + 1),
    "nested": ({"malformed"}, RETRIES + 1),
}


def fail_run(fault: str, tmp_path: Path) -> tuple[Config, Child, FaultServer | None, int]:
    """The failing run; returns the config, the child, the server (if any was up) and the port
    a healthy server must take for the resume."""
    if fault == "blackhole":
        with BlackHole() as hole:
            cfg = teacher_config(tmp_path, hole.base_url)
            return cfg, in_child(lambda: train(cfg), tmp_path), None, _port(hole.base_url)
    if fault == "refused":
        with FakeLLMServer() as gone:
            url = gone.base_url  # a port that refuses connections once the server is gone
        cfg = teacher_config(tmp_path, url)
        return cfg, in_child(lambda: train(cfg), tmp_path), None, _port(url)
    server = FaultServer(fault)
    server.slow_s = 3 * TIMEOUT_S
    server.huge_bytes = 1_000_000
    with server:
        cfg = teacher_config(tmp_path, server.base_url)
        child = in_child(lambda: train(cfg), tmp_path)
    return cfg, child, server, server.port


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failing_teacher_fails_teach_unmarked_and_resume_sends_only_the_failed(
    fault, healthy, tmp_path
):
    kinds, tries = FAULTS[fault]
    cfg, failed_run, server, port = fail_run(fault, tmp_path)
    run_dir = run_dir_of(cfg)

    assert failed_run.error == "StageFailed", failed_run.describe() + failed_run.output[-2000:]
    message = failed_run.result["message"]
    assert message.startswith("teach: ")
    cause = message.split("most common error: ")[1]
    assert cfg.teacher.base_url.rstrip("/") in cause, "the root cause names the endpoint"
    assert message.split("most common error: ")[1].split(" ")[0] in kinds, message
    assert failed_run.seconds < BOUND_S, f"{fault}: TEACH took {failed_run.seconds:.1f} s"
    state = json.loads((run_dir / "state.json").read_text())
    assert state["completed"][-1] == "round-1/score", "TEACH not marked, nothing after it ran"
    assert not stage_dir(run_dir, 1, "teach").exists()
    answered = server.answered if server else set()
    if server is not None and tries is not None:  # each failing request tried this many times
        per_key = {k: server.failed.count(k) for k in set(server.failed)}
        assert set(per_key.values()) == {tries}, per_key
        assert len(per_key) == 3 and len(answered) == 1

    with FaultServer(port=port) as healed:  # the endpoint is back, at the same address
        back = in_child(lambda: train(cfg, resume=True), tmp_path)
        sent = [key(p) for p in healed.payloads]
    assert back.code == 0, back.describe() + back.output[-2000:]
    assert len(sent) == len(set(sent)) == 4 - len(answered), "each failed request sent once"
    assert not set(sent) & answered, "an answer received before the outage is not asked again"
    assert comparable(artifacts(run_dir)) == healthy
    taught = load_rows(stage_dir(run_dir, 1, "teach"))
    assert sum(json.loads(t["usage"])["cached_requests"] for t in taught) == len(answered)


def test_an_open_circuit_breaker_names_the_endpoint_and_its_first_error_last(tmp_path):
    """The breaker is the consequence: the error ends with the endpoint and what refused it."""
    with FakeLLMServer() as gone:
        url = gone.base_url  # a port that refuses connections once the server is gone
    cfg = teacher_config(tmp_path, url, **{"teacher.breaker_failures": 2})
    failed_run = in_child(lambda: train(cfg), tmp_path)
    assert failed_run.error == "StageFailed", failed_run.describe()
    message = failed_run.result["message"]
    assert "circuit breaker is open (most common error: circuit_open" in message
    cause = message.rsplit("); ", 1)[1]
    assert cause.startswith(f"{url.rstrip('/')} unreachable, first error: connection: ")
    assert cause.endswith("Connection refused"), message


NESTED_REPLY = '{"level": ' + "[" * 5000  # a well-formed completion whose text no parser reads


def test_a_judge_reply_nested_past_the_parsers_depth_is_unparsable_not_a_crash(tmp_path):
    with FaultServer(responder=lambda payload, i: NESTED_REPLY) as server:
        extra = {"loop.rounds": 0, "eval.judges": "[mqi,rrp]"}
        cfg = teacher_config(tmp_path, server.base_url, **extra)
        run_dir = run_dir_of(cfg)
        first = in_child(lambda: train(cfg), tmp_path)
        assert first.code == 0, first.describe()
        asked = server.chat_requests
        again = in_child(lambda: judge_round(run_dir, 0, ["mqi", "rrp"], cfg) and None, tmp_path)
        assert again.code == 0, "re-judged from the cache: the same replies, read again"
        assert server.chat_requests == asked
    verdicts = load_rows(stage_dir(run_dir, 0, "judge"))
    assert verdicts and all(v["mqi_unparsable"] and v["rrp_unparsable"] for v in verdicts)
