"""The LLM teacher: MBT-S syntheses and MBT-R rewrites from a large model, every output verified.

The model is reached through anything with `chat_many(list[ChatRequest])`: an `LLMClient` (a
`vllm serve` or a hosted API) or `EngineChat` (a local vLLM engine running another model). Either
way the teacher is the same: it asks for `teacher.samples` completions per request, keeps the
first that passes `verify`, asks again with a fresh seed for the ones that did not, up to
`teacher.max_tries`, and returns one `TeachResult` per request whatever happened. A request that
still fails (rejected text, or a server that never answered: `request_failed:<kind>`) is recorded
with its reasons; the TEACH stage (`teachers.stage`) goes on past a few lost rewrites, and fails
unmarked when they pass `teacher.max_failure_rate` or the client's circuit breaker opens (then no
further try is sent here: every one would fail alike).

MBT-R is the paper's three-turn conversation: the teacher first writes a gold solution for the
question, then rewrites the student's thinking with that solution in its context. A gold solution
is asked for once per question (and cached with the client's request cache), because every draft
of the same question shares it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mbt_online.config import Config, ConfigError, TeacherConfig
from mbt_online.contracts import CIRCUIT_OPEN
from mbt_online.llm.client import make_client
from mbt_online.llm.wire import ChatFailure, ChatRequest, ChatResult
from mbt_online.prompts import (
    distill_messages,
    distill_r_messages,
    gold_solution_messages,
    mbt_r_messages,
    mbt_s_messages,
)
from mbt_online.scoring.metrics import split_trace
from mbt_online.scoring.text import count_words
from mbt_online.seeds import hash_seed, stage_seed
from mbt_online.teachers.contract import MODES, UNSTRUCTURED, TeachRequest, TeachResult, verify

# the modes whose request carries the teacher's gold solution as its first turn
_GOLD_MODES = ("mbt-r", "distill-r", "direct-r")

if TYPE_CHECKING:
    from mbt_online.teachers.structured import StructuredTeacher


class ChatBackend(Protocol):
    def chat_many(self, requests: Sequence[ChatRequest]) -> list[ChatResult | ChatFailure]: ...


class EngineChat:
    """A local vLLM `Engine` answering `ChatRequest`s the way `LLMClient.chat_many` does.

    Requests are batched by their sampling parameters, so a teaching round is one `generate` call
    per distinct (n, temperature, max_tokens, seed). A batch that fails (e.g. a prompt longer than
    the context) is retried request by request, so one bad prompt fails alone.
    """

    def __init__(self, engine: Any, top_p: float = 1.0, top_k: int = -1) -> None:
        self.engine = engine
        self.top_p = top_p
        self.top_k = top_k

    def chat_many(self, requests: Sequence[ChatRequest]) -> list[ChatResult | ChatFailure]:
        out: list[ChatResult | ChatFailure | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.n, r.temperature, r.max_tokens, r.seed or 0), []).append(i)
        for idx in groups.values():
            batch = [requests[i] for i in idx]
            try:
                results = self._generate(batch)
            except Exception:  # isolate the culprit: one prompt at a time
                results = [self._generate_one(r) for r in batch]
            for i, res in zip(idx, results, strict=True):
                out[i] = res
        return [r for r in out if r is not None]

    def _generate_one(self, req: ChatRequest) -> ChatResult | ChatFailure:
        try:
            return self._generate([req])[0]
        except Exception as e:  # the engine's error is the record of why
            return ChatFailure("engine_error", f"{type(e).__name__}: {e}", 1)

    def _generate(self, batch: list[ChatRequest]) -> list[ChatResult]:
        first = batch[0]
        outs = self.engine.generate(
            [r.messages for r in batch],
            n=first.n,
            temperature=first.temperature,
            top_p=first.top_p or self.top_p,
            top_k=self.top_k,
            max_tokens=first.max_tokens,
            seed=first.seed or 0,
            progress=False,
        )
        return [
            ChatResult(
                texts=[c.text for c in completions],
                usage={
                    "prompt_tokens": completions[0].prompt_tokens if completions else 0,
                    "completion_tokens": sum(c.completion_tokens for c in completions),
                },
                finish_reasons=[c.finish_reason for c in completions],
                attempts=1,
            )
            for completions in outs
        ]

    def close(self) -> None:
        self.engine.close()


@dataclass
class _Job:
    """One request's progress across tries."""

    req: TeachRequest
    tries: int = 0
    trace: str | None = None
    reasons: list[str] = field(default_factory=lambda: ["empty"])
    done: bool = False
    usage: dict[str, int] = field(
        default_factory=lambda: {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "requests": 0,
            "cached_requests": 0,
        }
    )


class LLMTeacher:
    """MBT-S / MBT-R through a chat backend, with verification and bounded resampling."""

    def __init__(
        self,
        chat: ChatBackend,
        cfg: TeacherConfig,
        budget_tokens: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
        seed: int = 0,
        backend: str = "openai",
    ) -> None:
        self.chat = chat
        self.cfg = cfg
        self.budget_tokens = budget_tokens
        self.count_tokens = count_tokens or count_words
        self.seed = seed
        self.backend = backend
        self.gold_solutions: dict[str, str] = {}
        self.gold_failures: dict[str, str] = {}  # question id -> the last failure's kind

    def teach(self, requests: list[TeachRequest]) -> list[TeachResult]:
        """One result per request, in order; never raises for a server or a model failure."""
        for r in requests:
            if r.mode not in MODES:
                raise ValueError(f"unknown teacher mode {r.mode!r}; expected one of {MODES}")
        jobs = [_Job(r) for r in requests]
        for attempt in range(self.cfg.max_tries):
            pending = [j for j in jobs if not j.done]
            if not pending:
                break
            # A gold solution depends on the question only, not on the round or the student:
            # its seed leaves out `self.seed`, so later rounds find it in the request cache.
            self._ensure_gold_solutions(pending, _hash_seed(f"gold:{attempt}"))
            self._attempt(pending, self._seed(attempt))
            if any(f"request_failed:{CIRCUIT_OPEN}" in j.reasons for j in jobs):
                break  # the endpoint is down: another try would only fail the same way
        return [self._result(j) for j in jobs]

    def close(self) -> None:
        close = getattr(self.chat, "close", None)
        if close is not None:
            close()

    # -- one try -------------------------------------------------------------------------------

    def _seed(self, attempt: int) -> int:
        """A fixed seed per try: a resumed stage sends the same requests and hits the cache,
        while a retry differs from the rejected try (else a cache would hand back the same text)."""
        return _hash_seed(f"teacher:{self.seed}:{attempt}")

    def _request(self, messages: list[dict], n: int, seed: int) -> ChatRequest:
        return ChatRequest(messages, n, self.cfg.temperature, self.cfg.max_tokens, seed)

    def _ensure_gold_solutions(self, jobs: list[_Job], seed: int) -> None:
        """MBT-R's first turn, once per question that still lacks one."""
        needed: dict[str, _Job] = {}
        for j in jobs:
            ex_id = j.req.example.id
            if j.req.mode in _GOLD_MODES and ex_id not in self.gold_solutions:
                needed.setdefault(ex_id, j)
        if not needed:
            return
        owners = list(needed.values())
        outs = self.chat.chat_many(
            [self._request(gold_solution_messages(j.req.example), 1, seed) for j in owners]
        )
        for owner, out in zip(owners, outs, strict=True):
            _add_usage(owner, out)  # charged to the first request that needed it
            ex_id = owner.req.example.id
            if isinstance(out, ChatFailure):
                self.gold_failures[ex_id] = out.kind
                continue
            self.gold_failures.pop(ex_id, None)
            text = out.texts[0].strip() if out.texts else ""
            if text:
                self.gold_solutions[ex_id] = split_trace(text) or text

    def _attempt(self, jobs: list[_Job], seed: int) -> None:
        ready = []
        for j in jobs:
            j.tries += 1
            if j.req.mode in _GOLD_MODES and j.req.example.id not in self.gold_solutions:
                # an unanswered gold request is a failed request too: it counts as an outage
                kind = self.gold_failures.get(j.req.example.id)
                j.reasons = ["gold_solution_failed"] + ([f"request_failed:{kind}"] if kind else [])
            else:
                ready.append(j)
        outs = self.chat.chat_many(
            [self._request(self._messages(j.req), self.cfg.samples, seed) for j in ready]
        )
        for j, out in zip(ready, outs, strict=True):
            _add_usage(j, out)
            if isinstance(out, ChatFailure):
                j.reasons = [f"request_failed:{out.kind}"]
            else:
                self._judge_samples(j, out.texts)

    def _messages(self, req: TeachRequest) -> list[dict]:
        if req.mode == "mbt-s":
            return mbt_s_messages(req.example)
        if req.mode == "distill":
            return distill_messages(req.example)
        gold = self.gold_solutions[req.example.id]
        if req.mode == "direct-r":  # MBT-R of the teacher's own solution, not a student draft
            return mbt_r_messages(req.example, gold, gold)
        draft = split_trace(req.draft or "")
        if req.mode == "distill-r":
            return distill_r_messages(req.example, gold, draft)
        return mbt_r_messages(req.example, gold, draft)

    def _judge_samples(self, job: _Job, texts: list[str]) -> None:
        """Keep the first sample that verifies; otherwise the least-wrong one, with its reasons."""
        if not texts:
            job.reasons = ["empty"]
            return
        best: tuple[int, str, list[str]] | None = None
        for text in texts:
            trace = clean_trace(text)
            verdict = verify(
                trace,
                job.req.example,
                self.budget_tokens,
                self.count_tokens,
                job.req.mode not in UNSTRUCTURED,
            )
            if verdict.ok:
                job.trace, job.reasons, job.done = trace, [], True
                return
            if best is None or len(verdict.reasons) < best[0]:
                best = (len(verdict.reasons), trace, verdict.reasons)
        assert best is not None
        _, job.trace, job.reasons = best

    def _result(self, job: _Job) -> TeachResult:
        return TeachResult(
            example_id=job.req.example.id,
            mode=job.req.mode,
            trace=job.trace,
            verified=job.done,
            reasons=[] if job.done else list(job.reasons),
            tries=job.tries,
            backend=self.backend,
            usage=dict(job.usage),
        )


def _hash_seed(key: str) -> int:
    return hash_seed(key, digest_size=4)


def clean_trace(text: str) -> str:
    """The monologue without wrapping tags: models often put it in <think> or append an
    <answer>, and the SFT target adds both itself."""
    return split_trace(text or "").strip()


def _add_usage(job: _Job, out: ChatResult | ChatFailure) -> None:
    job.usage["requests"] += 1
    if isinstance(out, ChatResult):
        job.usage["prompt_tokens"] += out.usage.get("prompt_tokens", 0)
        job.usage["completion_tokens"] += out.usage.get("completion_tokens", 0)
        job.usage["cached_requests"] += int(out.cached)


def default_engine_factory(cfg: Config) -> Callable[[str], Any]:
    """A local engine for the teacher model, of the backend and size the engine section sets."""

    def build(model_path: str) -> Any:
        from mbt_online.generation.backends import make_generator
        from mbt_online.models.pretrained import resolve_model

        # a known name, a local folder or a hub id (through the hub cache); the teacher's chats
        # go through its own template, whatever student.chat_template says
        own = cfg.model_copy(
            update={"student": cfg.student.model_copy(update={"chat_template": "model"})}
        )
        return make_generator(own, resolve_model(model_path), lora=False)

    return build


def make_teacher(
    cfg: Config,
    engine_factory: Callable[[str], Any] | None = None,
    *,
    round_: int = 0,
    budget_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    cache_dir: str | Path | None = None,
) -> StructuredTeacher | LLMTeacher:
    """The teacher `teacher.backend` asks for: the one place that picks.

    `cache_dir` holds the request cache of the openai backend; by default it is
    `<runs_dir>/<run name>/cache/llm`, the run directory's own, so a resumed run finds it.
    """
    t = cfg.teacher
    seed = stage_seed(cfg.run.seed, round_, "teach")
    if t.backend == "structured":
        from mbt_online.teachers.structured import StructuredTeacher

        return StructuredTeacher(seed, budget_tokens, count_tokens, t.max_tries, t.style)
    if t.backend == "openai":
        cache = cache_dir or cfg.run_dir() / "cache" / "llm"
        client = make_client(t, cache_dir=cache)
        return LLMTeacher(client, t, budget_tokens, count_tokens, seed, backend="openai")
    if t.backend == "vllm":
        if not t.model:
            raise ConfigError(
                "teacher.backend=vllm needs teacher.model: a local model folder or a hub id"
            )
        engine = (engine_factory or default_engine_factory(cfg))(t.model)
        return LLMTeacher(EngineChat(engine), t, budget_tokens, count_tokens, seed, backend="vllm")
    raise ConfigError(f"teacher.backend {t.backend!r}: expected structured, openai or vllm")
