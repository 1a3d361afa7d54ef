"""MBT-S pitfalls: one plausible mistake per trace, grounded in this example's documents.

A pitfall is a look-alike document sharing a name with a step, stopping at the bridge entity,
or deciding a comparison from one side; a re-reading note when none applies.
"""

from __future__ import annotations

import random
import re

from mbt_online.scoring.text import mentions, wordset
from mbt_online.tasks.base import Example
from mbt_online.teachers.chain import Step, compared_titles, is_comparison, link_from, lookalikes
from mbt_online.teachers.phrases import (
    PITFALL_BRIDGE,
    PITFALL_COMPARE,
    PITFALL_DISTRACTOR,
    PITFALL_REREAD,
    cite,
    cite_short,
    pick,
)

_CAPITALISED = re.compile(r"\b[A-Z][\w'-]{3,}\b")
# Capitalised words that are not names (sentence openers), so never a "shared name".
_NOT_NAMES = wordset(
    """What Which Where When Whose While After Before During Since From With Into Does Have This
    That There These Those They Were Their Document Title Also However Although"""
)


def _names(text: str) -> set[str]:
    return {w for w in _CAPITALISED.findall(text) if w not in _NOT_NAMES}


def _pitfall_distractor(
    ex: Example, steps: list[Step], rng: random.Random
) -> tuple[int, str] | None:
    """A non-gold document that shares a name with a step: the look-alike a reader could grab."""
    others = lookalikes(ex, steps)
    found: list[tuple[int, int, str, bool]] = []  # (step, document, shared name, in its title)
    for k, step in enumerate(steps):
        names = _names(f"{step.title} {step.answer}") if step.doc else set()
        for i in others:
            title, text = ex.documents[i - 1]
            for w in sorted(names & _names(f"{title} {text}")):
                found.append((k, i, w, w in title))
    if not found:
        return None
    titled = [f for f in found if f[3]]
    k, i, w, _ = rng.choice(titled or found)
    step = steps[k]
    text = pick(
        rng,
        PITFALL_DISTRACTOR,
        dref=cite(ex, i),
        w=w,
        dt=ex.documents[i - 1][0],
        t=step.title,
        ref=cite_short(step.doc, step.title),
    )
    return k, text


def _pitfall_bridge(ex: Example, steps: list[Step], rng: random.Random) -> tuple[int, str] | None:
    """Stopping at the bridge entity: the answer-inclusive error's mirror image."""
    options = [
        j
        for k in range(1, len(steps))
        if (j := link_from(steps, k)) is not None and not mentions(steps[j].answer, ex.answer)
    ]
    if not options:
        return None
    j = rng.choice(sorted(set(options)))
    nxt = next(k for k in range(j + 1, len(steps)) if link_from(steps, k) == j)
    return j, pick(rng, PITFALL_BRIDGE, b=steps[j].answer, vp=steps[nxt].vp)


def _pitfall_compare(ex: Example, steps: list[Step], rng: random.Random) -> tuple[int, str] | None:
    """Deciding a comparison from one side only."""
    if not is_comparison(ex) or len(steps) < 2:
        return None
    a, b = (compared_titles(ex, steps) + ["the first", "the second"])[:2]
    by_title = {s.title: s for s in steps}
    sa, sb = by_title.get(a, steps[0]), by_title.get(b, steps[1])
    text = pick(
        rng,
        PITFALL_COMPARE,
        a=a,
        b=b,
        ra=cite_short(sa.doc, sa.title),
        rb=cite_short(sb.doc, sb.title),
    )
    return len(steps) - 1, text


def pick_pitfall(ex: Example, steps: list[Step], rng: random.Random) -> tuple[int, str]:
    """(step index after which it goes, paragraph)."""
    candidates = [
        p
        for f in (_pitfall_distractor, _pitfall_bridge, _pitfall_compare)
        if (p := f(ex, steps, rng)) is not None
    ]
    if candidates:
        return rng.choice(candidates)
    last = steps[-1] if steps else Step("", "", 0, "", "")
    ref = cite(ex, last.doc, last.title) if steps else "the documents"
    return max(0, len(steps) - 1), pick(rng, PITFALL_REREAD, ref=ref, t=last.title or "it")
