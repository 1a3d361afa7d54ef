"""The bottom layer: the types every stage shares and the protocols the loop drives.

The loop (`loop.Session`) is written against these shapes only, so its control flow (skip, resume,
model lineage, metrics written once) runs in seconds with fakes in tests, while a real run gets a
sampler (`generation/`), a teacher backend (`teachers/`) and TRL (`training.trainer.TrlTrainer`).

They sit in one module that imports nothing of the project, apart from their implementations,
because the implementations import heavy libraries at the top (torch, TRL, vLLM) and a fake must
not need them. `Completion`, `HandoffMode` and `ReleaseMode` are what every sampler backend
returns and takes; the `Teacher` protocol sits with the teachers' contract (`teachers.contract`,
beside `TeachRequest`, `TeachResult` and `verify`). `StageFailed` is what a stage asking a
teacher or judge endpoint raises on an outage.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

__all__ = [
    "Completion",
    "Generator",
    "HandoffMode",
    "PromptTooLongError",
    "ReleaseMode",
    "StageFailed",
    "Trainer",
    "TrainJob",
    "Trained",
]

# The `ChatFailure.kind` of a request the client refused because its circuit breaker is open.
CIRCUIT_OPEN = "circuit_open"

HandoffMode = Literal["reload", "lora", "restart"]


ReleaseMode = Literal["stop", "sleep"]


@dataclass
class Completion:
    """One sampled continuation; token counts feed the length and waste rewards."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (hit max_tokens)
    prompt_tokens: int
    completion_tokens: int
    # With `generate(..., logprobs=True)` (GRPO's samples): what was sampled, token by token,
    # and the sampler's log-probability of each token, so training sees exactly these tokens.
    prompt_ids: list[int] | None = None
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None


class PromptTooLongError(ValueError):
    """A prompt leaves less than `max_tokens` of room in the context window."""


class Generator(Protocol):
    """A live student: samples completions for chat prompts and takes new weights in place."""

    def generate(
        self,
        messages: list[list[dict]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        top_k: int,
        max_tokens: int,
        seed: int,
        logprobs: bool = False,
    ) -> list[list[Completion]]:
        """n completions per chat, in the order of `messages`; with `logprobs`, each keeps its
        prompt and completion token ids and the sampled tokens' log-probabilities."""
        ...

    def handoff(self, mode: HandoffMode, model_dir: str, adapter_dir: str | None = None) -> None:
        """Serve `model_dir` (with `adapter_dir` on top for mode "lora") from now on."""
        ...

    def release(self, mode: ReleaseMode) -> None:
        """Give the devices back before TRAIN (`engine.between_stages`): "stop" closes the
        generator (the loop builds a new one on the new model); "sleep" frees device memory but
        stays alive, and the next `handoff` (or generation) wakes it."""
        ...

    def close(self) -> None: ...


@dataclass
class TrainJob:
    """One round's training: SFT on `sft`, then DPO on `pairs`, then GRPO on `grpo` (stored
    samples with their token ids, log-probs and RL rewards), each from the model the previous
    step left (empty data skips a step). `reference` is DPO's frozen reference, None meaning the
    model DPO starts from."""

    start_model: str
    sft: Sized  # prompt/completion rows (a `datasets.Dataset` in a real run)
    pairs: Sized  # chosen/rejected rows
    out_dir: Path
    seed: int
    reference: str | None = None
    grpo: Sized = ()


@dataclass
class Trained:
    """The round's final model folder, its LoRA adapter as (base model dir, adapter dir) when it
    was trained as one, and the train/* metrics."""

    model: str
    adapter: tuple[str, str] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class Trainer(Protocol):
    """Turns a round's training rows into a new model folder on disk."""

    def train(self, job: TrainJob) -> Trained: ...


class StageFailed(RuntimeError):
    """A stage that asked a teacher or judge endpoint and could not trust the answer set: too many
    requests failed, the client's circuit breaker opened, or the stage's deadline passed. It raises
    instead of writing rows from nothing, so the stage stays unmarked and `--resume` asks again;
    the answers that did arrive are in the run's request cache and are not paid for twice."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason = stage, reason
        self.run_dir: Path | None = None  # set by the loop, for the resume command it names

    def resume_hint(self) -> str:
        """What to do next, as the CLI prints it below the error (a subclass says its own)."""
        return (
            f"The stage is not marked done; when the endpoint is back, run `mbt-online train "
            f"--resume {self.run_dir or '<run directory>'}`: only the failed requests are sent "
            "again."
        )


_outages: list[tuple[str, str]] = []  # (endpoint, first error) of each breaker that opened
_failures: dict[str, tuple[str, str]] = {}  # failure kind -> (endpoint, detail) of its last
_outages_lock = threading.Lock()


def note_outage(endpoint: str, cause: str) -> None:
    """An endpoint client's circuit breaker opened (`llm.retries.CircuitBreaker`): the endpoint
    and the first error of the outages in a row that opened it, for `check_failures` to name."""
    with _outages_lock:
        _outages.append((endpoint, cause))
        del _outages[:-8]


def last_outage() -> tuple[str, str] | None:
    """The endpoint and first error of the breaker that opened last in this process."""
    with _outages_lock:
        return _outages[-1] if _outages else None


def note_failure(endpoint: str, kind: str, detail: str) -> None:
    """A request to `endpoint` failed for good (`kind`, `detail`: what it answered, redacted)."""
    with _outages_lock:
        _failures[kind] = (endpoint, detail)


def forget_outages() -> None:
    """Forget what the endpoint clients noted (a process that runs unrelated stages)."""
    with _outages_lock:
        _outages.clear()
        _failures.clear()


def last_failure(kind: str) -> tuple[str, str] | None:
    """The endpoint and detail of the last request that failed as `kind` in this process."""
    with _outages_lock:
        return _failures.get(kind)


def check_failures(stage: str, failures: Sequence[str | None], max_rate: float) -> None:
    """Raise `StageFailed` when the share of failed requests passes `max_rate` or any request met
    an open circuit breaker. `failures` holds one entry per request: the failure's kind, or None
    for a request that was answered (a reply that fails `verify` or a judge's parser still counts
    as answered: that is the model's doing, not an outage). The message ends with the root cause,
    as the endpoint client noted it: the endpoint and the first error of the outage that opened
    the breaker, or the endpoint and what it answered to the last request of the commonest kind."""
    kinds = Counter(k for k in failures if k is not None)
    failed, total = sum(kinds.values()), len(failures)
    if not failed:
        return
    top, count = kinds.most_common(1)[0]
    common = f"most common error: {top} ({count} of {failed})"
    if CIRCUIT_OPEN in kinds:
        outage = last_outage()  # the breaker's consequence above, its root cause last
        cause = f"; {outage[0]} unreachable, first error: {outage[1]}" if outage else ""
        raise StageFailed(stage, f"the endpoint's circuit breaker is open ({common}){cause}")
    if failed / total > max_rate:
        seen = last_failure(top)
        cause = f"; the last from {seen[0]}: {seen[1]}" if seen else ""
        raise StageFailed(
            stage,
            f"{failed} of {total} requests failed ({failed / total:.0%}, over "
            f"teacher.max_failure_rate={max_rate:g}); {common}{cause}",
        )
