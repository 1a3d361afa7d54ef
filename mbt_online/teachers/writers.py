"""The paragraph writers shared by MBT-S and MBT-R: understanding, planning, one execution
paragraph per hop (with its monitoring sentence), comparison and verification, and `assemble`,
which lays them out around the pitfall (MBT-S) or the correction (MBT-R)."""

from __future__ import annotations

import random
from collections import Counter

from mbt_online.scoring.text import mentions, normalize_answer
from mbt_online.tasks.base import Example
from mbt_online.teachers.chain import Step, compared_titles, is_comparison, link_from
from mbt_online.teachers.drafts import content, restates
from mbt_online.teachers.phrases import (
    COMPARE,
    CONFIRM,
    CONFIRM_SHORT,
    DISTRACT,
    EXEC,
    FOUND,
    GOAL,
    LINK_CMP,
    LINK_OK,
    LINK_SOFT,
    NO_DISTRACT,
    NOTED,
    PLAN_LEAD,
    RELEVANT,
    TERSE,
    VERIFY,
    cite,
    cite_short,
    join_and,
    number,
    pick,
    quote,
)


def understanding(ex: Example, steps: list[Step], rng: random.Random, terse: int) -> str:
    """The goal, the documents that matter, and the distractors set aside (fewer when terse)."""
    relevant = list(dict.fromkeys(s.doc for s in steps if s.doc))
    parts = [pick(rng, GOAL, q=" ".join(ex.question.split()))]
    if relevant:
        refs = [cite(ex, d) for d in relevant]
        parts.append(pick(rng, RELEVANT, rel=join_and(refs)))
    counts = Counter(t for t, _ in ex.documents)
    others = [
        f'"{t}"' if counts[t] == 1 else f'Document [{i}] ("{t}")'
        for i, (t, _) in enumerate(ex.documents, 1)
        if i not in relevant
    ]
    if not others:
        parts.append(pick(rng, NO_DISTRACT))
        return " ".join(parts)
    limit = TERSE[terse][1]
    named = sorted(rng.sample(range(len(others)), min(limit, len(others))))
    names = [others[i] for i in named]
    rest = len(others) - len(names)
    if rest:
        names.append(f"{number(rest)} other document{'s' if rest > 1 else ''}")
    dis = join_and(names)
    parts.append(pick(rng, DISTRACT, dis=dis, dis_cap=dis[:1].upper() + dis[1:]))
    return " ".join(parts)


def _plan_items(ex: Example, steps: list[Step]) -> list[str]:
    items = [s.vp for s in steps]
    if is_comparison(ex) and len(steps) >= 2:
        a, b = (compared_titles(ex, steps) + ["the first", "the second"])[:2]
        items.append(f"compare {a} and {b} on what the question asks")
    return items or ["find the document that speaks to the question and read off what it asks"]


def planning(ex: Example, steps: list[Step], rng: random.Random) -> str:
    """The hops as a plan, in one of three list styles."""
    items = _plan_items(ex, steps)
    lead = pick(rng, PLAN_LEAD, n=number(len(items)))
    style = rng.randrange(3)
    if style == 0:
        heads = ["First, we"] + ["Then we"] * max(0, len(items) - 2) + ["Finally, we"]
        body = " ".join(f"{h} {vp}." for h, vp in zip(heads[: len(items)], items, strict=False))
        if len(items) == 1:
            body = f"First, we {items[0]}."
    elif style == 1:
        body = " ".join(f"Step {k}: {vp}." for k, vp in enumerate(items, 1))
    else:
        joins = ["To begin, we"] + ["next we"] * max(0, len(items) - 2) + ["and last, we"]
        body = "; ".join(f"{h} {vp}" for h, vp in zip(joins, items, strict=False)) + "."
        if len(items) == 1:
            body = f"To begin, we {items[0]}, then we check it."
    return f"{lead} {body}"


def _monitor(ex: Example, steps: list[Step], k: int, rng: random.Random) -> str:
    step, j = steps[k], link_from(steps, k)
    if j is not None:
        prev, text = steps[j].answer, f"{step.title} {step.evidence}"
        pool = LINK_OK if mentions(text, prev) else LINK_SOFT
        return pick(rng, pool, ref=cite_short(step.doc, step.title), prev=prev)
    prev = steps[k - 1]
    if is_comparison(ex):
        return pick(rng, LINK_CMP, t=step.title, prev=prev.title)
    return pick(rng, LINK_SOFT, prev=prev.answer or prev.title)


def _execution(
    ex: Example, steps: list[Step], k: int, rng: random.Random, terse: int, lead: str = ""
) -> str:
    """One hop: (the draft's own words, if any) the cited sentence, the finding, and a check
    against earlier findings."""
    step = steps[k]
    words, _, monitoring, full = TERSE[terse]
    ev = quote(step.evidence, words, step.answer) if step.evidence else ""
    ref = cite(ex, step.doc, step.title) if full else cite_short(step.doc, step.title)
    if lead and (not ev or restates(content(lead), content(step.evidence))):
        parts = [lead, pick(rng, CONFIRM_SHORT, ref=ref)]
    elif lead:
        parts = [lead, pick(rng, CONFIRM, ref=ref, ev=ev)]
    else:
        parts = [pick(rng, EXEC, ref=ref, ev=ev)] if ev else [f"We turn to {ref}."]
    if step.answer and not (lead and mentions(lead, step.answer)):
        parts.append(pick(rng, FOUND, a=step.answer))
    elif not step.answer:
        parts.append(pick(rng, NOTED, t=step.title or "this document"))
    if k > 0 and monitoring:
        parts.append(_monitor(ex, steps, k, rng))
    return " ".join(parts)


def _option_fact(steps: list[Step], option: str) -> str:
    """The last finding on the chain that starts at this option's step (2Wiki: director -> date)."""
    k = next((i for i, s in enumerate(steps) if s.title == option), None)
    if k is None:
        return ""
    fact = steps[k].answer
    for j in range(k + 1, len(steps)):
        if link_from(steps, j) == k:
            k, fact = j, steps[j].answer
    return fact


def _comparison(ex: Example, steps: list[Step], rng: random.Random) -> str:
    a, b = (compared_titles(ex, steps) + ["the first", "the second"])[:2]
    text = pick(rng, COMPARE, a=a, b=b, ans=ex.answer)
    fa, fb = _option_fact(steps, a), _option_fact(steps, b)
    if fa and fb and normalize_answer(fa) != normalize_answer(fb):
        text = f"For {a} we have {fa}; for {b}, {fb}. {text}"
    return text


def _chain(steps: list[Step]) -> str:
    parts = [
        f"{cite_short(s.doc, s.title)} gives {s.answer}"
        if s.answer
        else f"{cite_short(s.doc, s.title)} covers {s.title}"
        for s in steps
    ]
    return ", then ".join(parts) if parts else "the documents point one way"


def _verification(ex: Example, steps: list[Step], rng: random.Random) -> str:
    return pick(rng, VERIFY, chain=_chain(steps), ans=ex.answer)


def assemble(
    ex: Example,
    steps: list[Step],
    rng: random.Random,
    terse: int,
    head: list[str],
    after: int,
    pitfall: str,
    facts: dict[int, list[str]],
) -> str:
    """The shared body of MBT-S and MBT-R: one execution paragraph per hop (led by the draft's
    kept findings for MBT-R), the pitfall or correction after hop `after`, then verification."""
    paragraphs = list(head)
    for k in range(len(steps)):
        lead = " ".join(facts.get(k, []))
        paragraphs.append(_execution(ex, steps, k, rng, terse, lead=lead))
        if k == after:
            paragraphs.append(pitfall)
    if not steps:
        paragraphs.append(pitfall)
    if is_comparison(ex) and len(steps) >= 2:
        paragraphs.append(_comparison(ex, steps, rng))
    paragraphs.append(_verification(ex, steps, rng))
    return "\n\n".join(paragraphs)
