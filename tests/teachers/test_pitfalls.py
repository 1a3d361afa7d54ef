"""MBT-S pitfalls: a look-alike document, stopping at the bridge, one-sided comparisons, and the
re-reading note when none applies; each grounded in the example's own documents."""

from __future__ import annotations

import random
import re

from teacher_cases import chain_example, examples

from mbt_online.scoring.metrics import detect_phases
from mbt_online.tasks.base import Example
from mbt_online.teachers.chain import gold_steps
from mbt_online.teachers.phrases import (
    PITFALL_BRIDGE,
    PITFALL_COMPARE,
    PITFALL_DISTRACTOR,
    PITFALL_REREAD,
)
from mbt_online.teachers.pitfalls import pick_pitfall


def pattern(template: str) -> re.Pattern:
    """A phrasing as a regex: its fixed words literal, each slot any text."""
    parts = re.split(r"\{\w+\}", template)
    return re.compile("(?s)" + ".+?".join(re.escape(x) for x in parts))


POOLS = {
    "distractor": PITFALL_DISTRACTOR,
    "bridge": PITFALL_BRIDGE,
    "compare": PITFALL_COMPARE,
    "reread": PITFALL_REREAD,
}


def pool_of(text: str) -> str:
    """Which pool a paragraph was drawn from (exactly one must match)."""
    names = [n for n, pool in POOLS.items() if any(pattern(t).fullmatch(text) for t in pool)]
    assert len(names) == 1, (names, text)
    return names[0]


def draws(ex: Example, n: int = 60) -> dict[tuple[int, str], str]:
    steps = gold_steps(ex)
    out: dict[tuple[int, str], str] = {}
    for seed in range(n):
        k, text = pick_pitfall(ex, steps, random.Random(seed))
        out.setdefault((k, pool_of(text)), text)
    return out


def test_a_bridge_chain_gets_the_look_alike_or_the_bridge_after_the_right_step():
    found = draws(chain_example())
    assert set(found) == {(0, "distractor"), (0, "bridge"), (1, "bridge")}
    # the look-alike: Orla Venning shares "Orla" with step 1's entity, and the right one is kept
    look = found[(0, "distractor")]
    assert "Document [4] (Title: Orla Venning)" in look and "Orla" in look
    assert "Document [1]" in look and "Dunmere" not in look
    # stopping at Harrowgate (after step 1) or at Keld (after step 2), naming what is left to do
    assert "Harrowgate" in found[(0, "bridge")] and "administrative" in found[(0, "bridge")]
    assert "Keld" in found[(1, "bridge")] and "find the capital of Keld" in found[(1, "bridge")]
    # the final answer is never offered as a bridge to stop at
    assert not any("Marrow Cross" in text for text in found.values())


def test_every_pitfall_reads_as_self_correction():
    for text in draws(chain_example()).values():
        assert "self_correction" in detect_phases(text), text


def test_the_draw_is_deterministic_per_seed():
    ex = chain_example()
    steps = gold_steps(ex)
    assert pick_pitfall(ex, steps, random.Random(5)) == pick_pitfall(ex, steps, random.Random(5))


def test_a_comparison_may_get_the_one_sided_pitfall_after_the_last_step():
    ex = examples("hotpotqa")[0]  # Scott Derrickson vs Ed Wood, answered yes
    steps = gold_steps(ex)
    assert [s.title for s in steps] == ["Scott Derrickson", "Ed Wood"]
    found = draws(ex)
    compare = [text for (k, kind), text in found.items() if kind == "compare"]
    assert compare and all(k == 1 for k, kind in found if kind == "compare")
    refs = ("Document [2]", "Document [5]", "Scott Derrickson", "Ed Wood")
    assert all(any(r in text for r in refs) for text in compare)
    # no bridge to stop at in a comparison
    assert not any(kind == "bridge" for _, kind in found)


def test_with_nothing_to_trip_on_the_trace_rereads_its_one_document():
    ex = Example(
        id="one",
        question="Which country is Keld a province of?",
        documents=[("Keld", "Keld is a province of Norland.")],
        answer="Norland",
        supporting_titles=["Keld"],
    )
    steps = gold_steps(ex)
    assert len(steps) == 1
    for seed in range(10):
        k, text = pick_pitfall(ex, steps, random.Random(seed))
        assert k == 0 and pool_of(text) == "reread"
        assert "Document [1] (Title: Keld)" in text


def test_without_steps_the_reread_cites_the_documents():
    ex = Example(id="x", question="Q?", documents=[("A", "Nothing here.")], answer="Z")
    for seed in range(10):
        k, text = pick_pitfall(ex, [], random.Random(seed))
        assert k == 0 and pool_of(text) == "reread"
        assert "{" not in text
        assert "the documents" in text
