"""The teacher contract every backend shares: what is asked, what comes back, and the gate.

`verify` is the project's answer to the paper's missing check: a teacher trace only becomes
training data if it actually reaches the gold answer, shows all five phases, fits the token budget
and never lets slip that the answer (or the student's draft) was handed to the teacher.

`Teacher` is the shape the loop drives; `StructuredTeacher` (rule-based) and `LLMTeacher` both fit
it, and a test fake only needs `teach`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from mbt_online.scoring.metrics import PHASES, contains_answer, detect_phases
from mbt_online.scoring.text import count_words, squash
from mbt_online.tasks.base import Example

Mode = Literal["mbt-s", "mbt-r", "distill", "distill-r", "direct-r"]
MODES: tuple[str, ...] = ("mbt-s", "mbt-r", "distill", "distill-r", "direct-r")
# the paper's controls without the five-phase structure: their traces need no phases to verify
UNSTRUCTURED: tuple[str, ...] = ("distill", "distill-r")
# modes that rewrite the student's own drafts (one request per failing draft); the others write
# one trace per question
DRAFT_MODES: tuple[str, ...] = ("mbt-r", "distill-r")


@dataclass
class TeachRequest:
    """One trace to produce; `draft` is the student's own reasoning, used by MBT-R."""

    example: Example
    mode: Mode
    draft: str | None = None


@dataclass
class TeachResult:
    """The teacher's output for one request. `trace` holds the last attempt even when it failed
    verification, so a run's artifacts show what was rejected; train only on `verified` ones."""

    example_id: str
    mode: str
    trace: str | None
    verified: bool
    reasons: list[str]
    tries: int
    backend: str
    usage: dict = field(default_factory=dict)


@dataclass
class Verdict:
    """`verify`'s answer: accepted, or the stable reasons why not."""

    ok: bool
    reasons: list[str]


@runtime_checkable
class Teacher(Protocol):
    """What the loop's teach stage drives: one `TeachResult` per request, in order, whatever
    happened (a failed request is an unverified result, not an exception).

    A teacher holding resources (an engine, a client) may also define `close()`; the loop calls it
    when present, so it is not part of the protocol.
    """

    def teach(self, requests: list[TeachRequest]) -> list[TeachResult]: ...


# --------------------------------------------------------------------------------------------------
# verify

# Phrases by which a trace would reveal that the teacher was handed the answer or the draft. A
# student trained on them learns to expect an oracle, which it never has at test time.
LEAK_PHRASES = (
    "the given answer",
    "the provided answer",
    "the answer provided",
    "the answer we were given",
    "we were given the answer",
    "we were told the answer",
    "the correct answer is given",
    "the draft",
    "gold solution",
    "gold answer",
    "reference answer",
    "the expected answer",
    "the answer key",
)


def leaked_phrases(trace: str, ex: Example) -> list[str]:
    """Leak phrases in the trace that are not quoted from the documents ("the draft" is a normal
    phrase in an article about the NBA draft; a trace citing it has leaked nothing)."""
    low, docs = squash(trace), squash(" ".join(text for _, text in ex.documents))
    return [p for p in LEAK_PHRASES if re.search(rf"\b{p}\b", low) and p not in docs]


def verify(
    trace: str | None,
    ex: Example,
    budget_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    require_phases: bool = True,
) -> Verdict:
    """Accept a teacher trace only if it could serve as a training target; say why not otherwise.
    `require_phases` is off for the unstructured controls (Distill-R, teacher distillation).

    Reasons are stable short strings (they are counted per round): "empty", "answer_not_reached",
    "missing_phases:<comma list>", "over_budget", "leak".
    """
    if not trace or not trace.strip():
        return Verdict(False, ["empty"])
    reasons = []
    if not contains_answer(trace, ex.answers):
        reasons.append("answer_not_reached")
    found = detect_phases(trace)
    missing = [p for p in PHASES if p not in found] if require_phases else []
    if missing:
        reasons.append("missing_phases:" + ",".join(missing))
    if budget_tokens is not None and (count_tokens or count_words)(trace) > budget_tokens:
        reasons.append("over_budget")
    if leaked_phrases(trace, ex):
        reasons.append("leak")
    return Verdict(not reasons, reasons)
