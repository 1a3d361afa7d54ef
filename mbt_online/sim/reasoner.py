"""A simulated unregulated reasoner: the behaviour the embedded student is bootstrapped to have.

MBT targets a student that can derive the right chain but does not regulate itself. The tiny
student learns its habits from these traces, so their mix (config `bootstrap.p_*`) sets how often
the untrained student overthinks, switches to a distractor after reaching the answer
(answer-inclusive error) or loops until the length cap (degeneration).

The style is terse on purpose: a student of a few hundred thousand weights, trained for two CPU
minutes, can only produce it because every word is either fixed wording, a copy from a fixed
place in the line above, or a copy of what follows the same two words elsewhere in the context:
    We need to find Ida Vale's employer's location? Plan: follow each hop.
    Ida Vale's employer: Ida Vale employer House Flint.
    ...'s employer's location: House Flint location Port Alder.
    ...'s location? So the answer is Port Alder.
It understands and plans (the goal line) and executes; what it lacks is monitoring: after the
answer is first stated the trace branches, so the four behaviours differ at one learnable decision
point that SFT and DPO can later move.
"""

from __future__ import annotations

import random
from typing import Literal, Protocol

from mbt_online.prompts import format_target
from mbt_online.tasks.base import Example
from mbt_online.tasks.world import (
    answer_line,
    clean_lines,
    hop_lines,
    hop_path,
    parse_sentence,
    twin_slip,
    world_sentences,
)

TraceKind = Literal["clean", "overthink", "distractor_switch", "loop", "hop_slip"]
TRACE_KINDS: tuple[TraceKind, ...] = ("clean", "overthink", "distractor_switch", "loop", "hop_slip")

LOOP_CUE = "Let me check again."
RECHECK_CUE = "Let me double-check."


class Rates(Protocol):
    """The behaviour mix; `BootstrapConfig` provides it. Clean traces take the remainder."""

    p_loop: float
    p_distractor_switch: float
    p_overthink: float
    p_hop_slip: float
    p_slip_repair: float


def draw_kind(rng: random.Random, rates: Rates) -> TraceKind:
    """One behaviour, drawn with the configured probabilities."""
    u = rng.random()
    for kind, p in (
        ("loop", rates.p_loop),
        ("distractor_switch", rates.p_distractor_switch),
        ("overthink", rates.p_overthink),
        ("hop_slip", rates.p_hop_slip),
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
    goal, *steps, said = clean_lines(ex)
    head = [goal]
    if kind == "loop":
        return _loop(head, steps, said, rng, loop_words), kind
    if kind == "hop_slip":
        slipped = _slip_lines(ex, rng, rates.p_slip_repair)
        if slipped is not None:
            return format_target("\n".join([*head, *slipped[0]]), slipped[1]), kind
        kind = "overthink"
    lines = [*head, *steps, said]
    final = ex.answer
    if kind == "distractor_switch":
        switch = _switch_lines(ex)
        if switch is None:
            kind = "overthink"
        else:
            lines += switch[0]
            final = switch[1]
    if kind == "overthink":
        lines += _recheck_lines(ex, rng)
    return format_target("\n".join(lines), final), kind


def _loop(head: list[str], steps: list[str], said: str, rng: random.Random, words: int) -> str:
    """Derive part or all of the chain, then circle through it again and again."""
    reached = rng.random() < 0.5 or len(steps) == 1
    j = len(steps) if reached else rng.randint(1, len(steps) - 1)
    body = steps[:j] + ([said] if reached else [])
    lines = [*head, *body]
    while sum(len(line.split()) for line in lines) < words:
        lines += [LOOP_CUE, *body]
    return "<think>\n" + "\n".join(lines)


def _slip_lines(ex: Example, rng: random.Random, p_repair: float) -> tuple[list[str], str] | None:
    """The hop lines with the look-alike's fact copied at the slip hop and its wrong chain
    followed to the end; with probability `p_repair` the trace notices at once (names the
    look-alike), re-reads the hop's document and goes on right. None without a look-alike chain."""
    slip = twin_slip(ex)
    if slip is None:
        return None
    k, steps = slip.hop, hop_lines(ex)
    wrong = [f"{hop_path(ex, k + j)}: {s}" for j, s in enumerate(slip.wrong)]
    if rng.random() < p_repair:
        return [*steps[:k], wrong[0], slip.repair_line(), *steps[k:], answer_line(ex)], ex.answer
    return [*steps[:k], *wrong, answer_line(ex, slip.answer)], slip.answer


def _look_alike(ex: Example) -> tuple[str, str] | None:
    """(sentence, object) of an off-chain fact with the last hop's relation and another answer."""
    last = ex.hops[-1]
    parsed = parse_sentence(last.evidence)
    if parsed is None:
        return None
    rel = parsed[1]
    gold_titles = set(ex.supporting_titles)
    for title, text in ex.documents:
        if title in gold_titles:
            continue
        for sentence in world_sentences(text):
            fact = parse_sentence(sentence)
            if fact and fact[1] == rel and fact[2] != ex.answer and fact[0] != last.title:
                return sentence, fact[2]
    return None


def _switch_lines(ex: Example) -> tuple[list[str], str] | None:
    """Keep exploring after the answer, adopt a look-alike fact and drop the right answer."""
    found = _look_alike(ex)
    if found is None:
        return None
    sentence, wrong = found
    return [f"Wait, maybe {sentence}", f"So the answer is {wrong}."], wrong


def _recheck_lines(ex: Example, rng: random.Random) -> list[str]:
    """Redundant re-verification: restate facts, glance at an irrelevant document, restate."""
    facts = [h.evidence for h in ex.hops]
    lines = [RECHECK_CUE, *facts[rng.randint(0, len(facts) - 1) :]]
    others = [x for t, x in ex.documents if t not in set(ex.supporting_titles)]
    if others:
        lines += [f"Also {world_sentences(rng.choice(others))[0]} Not needed."]
    return [*lines, f"So the answer is {ex.answer}."]
