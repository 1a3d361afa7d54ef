"""A simulated unregulated reasoner: the behaviour the embedded student is bootstrapped to have.

MBT targets a student that can derive the right chain but does not regulate itself. The tiny
student learns its habits from these traces, so their mix (config `bootstrap.p_*`) sets how often
the untrained student overthinks, switches to a distractor after reaching the answer
(answer-inclusive error) or loops until the length cap (degeneration).

Every trace starts the same way: restate the goal, then one line per hop, "The <relation> of
<subject>: <document sentence>". After the answer is first stated the trace branches, so the four
behaviours differ at one learnable decision point that SFT and DPO can later move.
"""

from __future__ import annotations

import random
from typing import Literal, Protocol

from mbt_online.data import Example, Hop
from mbt_online.prompts import format_target
from mbt_online.world import Relation, parse_sentence, question_chain, split_sentences

TraceKind = Literal["clean", "overthink", "distractor_switch", "loop"]
TRACE_KINDS: tuple[TraceKind, ...] = ("clean", "overthink", "distractor_switch", "loop")

LOOP_CUE = "Let me check again."
RECHECK_CUE = "Let me double-check."


class Rates(Protocol):
    """The behaviour mix; `BootstrapConfig` provides it. Clean traces take the remainder."""

    p_loop: float
    p_distractor_switch: float
    p_overthink: float


def draw_kind(rng: random.Random, rates: Rates) -> TraceKind:
    """One behaviour, drawn with the configured probabilities."""
    u = rng.random()
    for kind, p in (
        ("loop", rates.p_loop),
        ("distractor_switch", rates.p_distractor_switch),
        ("overthink", rates.p_overthink),
    ):
        if u < p:
            return kind  # type: ignore[return-value]
        u -= p
    return "clean"


def unregulated_trace(
    ex: Example, rng: random.Random, rates: Rates, loop_words: int = 400
) -> tuple[str, str]:
    """(completion text, kind) for one world example.

    Completed traces are `<think>...</think>` plus `<answer>...</answer>` in the SFT target format;
    a loop has no closing tag and runs for at least `loop_words` words, so after truncation to the
    training length it never ends and the student learns to run into the cap. A distractor switch
    falls back to overthinking when the example has no look-alike document.
    """
    kind = draw_kind(rng, rates)
    head = [_goal_line(ex)]
    steps = [hop_line(h) for h in ex.hops]
    said = f"So the answer is {ex.answer}."
    if kind == "loop":
        return _loop(head, steps, said, rng, loop_words), kind
    lines = [*head, *steps, said]
    final = ex.answer
    if kind == "distractor_switch":
        switch = _switch_lines(ex, rng)
        if switch is None:
            kind = "overthink"
        else:
            lines += switch[0]
            final = switch[1]
    if kind == "overthink":
        lines += _recheck_lines(ex, steps, said, rng)
    return format_target("\n".join(lines), final), kind


def hop_line(hop: Hop) -> str:
    """'The employer of Tom Vale: Tom Vale works for Quarry Mills.'"""
    noun = _noun(hop.question)
    return f"The {noun} of {hop.title}: {hop.evidence}"


def _noun(hop_question: str) -> str:
    parsed = question_chain(hop_question)
    if parsed is None:
        raise ValueError(f"not a world hop question: {hop_question!r}")
    return parsed[1][0].noun


def _goal_line(ex: Example) -> str:
    parsed = question_chain(ex.question)
    if parsed is None:
        raise ValueError(f"not a world question: {ex.question!r}")
    start, chain = parsed
    nouns = " of the ".join(r.noun for r in reversed(chain))
    return f"We need the {nouns} of {start}."


def _loop(head: list[str], steps: list[str], said: str, rng: random.Random, words: int) -> str:
    """Derive part or all of the chain, then circle through it again and again."""
    reached = rng.random() < 0.5 or len(steps) == 1
    j = len(steps) if reached else rng.randint(1, len(steps) - 1)
    body = steps[:j] + ([said] if reached else [])
    lines = [*head, *body]
    while sum(len(line.split()) for line in lines) < words:
        lines += [LOOP_CUE, *body]
    return "<think>\n" + "\n".join(lines)


def _look_alike(ex: Example) -> tuple[Relation, str, str] | None:
    """(relation, subject, object) of an off-chain sentence with the last hop's relation."""
    last = ex.hops[-1]
    parsed = parse_sentence(last.evidence)
    if parsed is None:
        return None
    rel = parsed[1]
    gold_titles = set(ex.supporting_titles)
    for title, text in ex.documents:
        if title in gold_titles:
            continue
        for sentence in split_sentences(text):
            fact = parse_sentence(sentence)
            if fact and fact[1] == rel and fact[2] != ex.answer and fact[0] != last.title:
                return rel, fact[0], fact[2]
    return None


def _switch_lines(ex: Example, rng: random.Random) -> tuple[list[str], str] | None:
    """Keep exploring after the answer, adopt a look-alike document and drop the right answer."""
    found = _look_alike(ex)
    if found is None:
        return None
    rel, subject, wrong = found
    lines = [
        f"Wait, maybe the {rel.noun} comes from {subject} instead.",
        f"The {rel.noun} of {subject}: {rel.sentence(subject, wrong)}",
        f"So the answer is {wrong}.",
    ]
    return lines, wrong


def _recheck_lines(ex: Example, steps: list[str], said: str, rng: random.Random) -> list[str]:
    """Redundant re-verification: repeat hops, glance at an irrelevant document, restate."""
    lines = [RECHECK_CUE, *steps[rng.randint(0, len(steps) - 1) :]]
    others = [(t, x) for t, x in ex.documents if t not in set(ex.supporting_titles)]
    if others:
        title, text = rng.choice(others)
        lines += [f"Maybe {title} matters too: {split_sentences(text)[0]}"]
        lines += ["That does not change anything."]
    return [*lines, said]
