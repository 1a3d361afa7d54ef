"""The teacher's wording: every pool fills in with the slots its callers pass, carries its
phase's cue, and the small helpers (citations, quotes, lists, numbers) write what they say."""

from __future__ import annotations

import ast
import random
import string
from pathlib import Path

import pytest
from teacher_cases import chain_example

from mbt_online.scoring.metrics import detect_phases
from mbt_online.teachers import phrases
from mbt_online.teachers.phrases import (
    TERSE,
    cite,
    cite_short,
    join_and,
    number,
    pick,
    quote,
)

TEACHERS = Path(phrases.__file__).parent
POOLS = {
    name: value
    for name, value in vars(phrases).items()
    if name.isupper()
    and not name.startswith("_")
    and isinstance(value, tuple)
    and value
    and isinstance(value[0], str)
}
# `pick(rng, pool, ...)` where the pool is chosen first (writers._monitor)
CHOSEN = {"pool": ("LINK_OK", "LINK_SOFT")}


def slots(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def pick_calls() -> list[tuple[str, str, set[str]]]:
    """(module, pool name, slot names passed) for every `pick(...)` in the teachers."""
    calls = []
    for path in sorted(TEACHERS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "pick":
                pool = ast.unparse(node.args[1])
                passed = {k.arg for k in node.keywords}
                for name in CHOSEN.get(pool, (pool,)):
                    calls.append((path.name, name, passed))
    return calls


def test_the_pools_are_found_and_none_is_empty():
    assert {"GOAL", "EXEC", "VERIFY", "WRONG_ANSWER", "PITFALL_BRIDGE"} <= set(POOLS)
    assert all(len(pool) >= 2 for pool in POOLS.values())  # several phrasings per phase
    assert all(len(set(pool)) == len(pool) for pool in POOLS.values())


def test_every_pick_passes_every_slot_its_pool_uses():
    calls = pick_calls()
    assert len(calls) >= 20
    unknown = sorted({name for _, name, _ in calls} - set(POOLS))
    assert unknown == []
    missing = [
        f"{module}: {name}[{i}] needs {sorted(slots(text) - passed)}"
        for module, name, passed in calls
        for i, text in enumerate(POOLS[name])
        if slots(text) - passed
    ]
    assert missing == []


def test_every_pool_is_used_by_some_writer():
    assert set(POOLS) - {name for _, name, _ in pick_calls()} == set()


def test_every_phrasing_formats_with_its_callers_slots():
    for _, name, passed in pick_calls():
        filled = {k: f"<{k}>" for k in passed}
        for text in POOLS[name]:
            out = text.format(**filled)
            assert "{" not in out and "}" not in out, (name, out)


EXAMPLE = chain_example()
# realistic fills: citations as `cite` writes them, so each pool is read as a trace reads it
FILL = {
    "q": EXAMPLE.question,
    "rel": "Document [1] (Title: Orla Venn) and Document [2] (Title: Harrowgate)",
    "dis": '"Dunmere"',
    "dis_cap": '"Dunmere"',
    "n": "three",
    "ref": cite(EXAMPLE, 2),
    "ev": "It lies in the province of Keld.",
    "dref": cite(EXAMPLE, 4),
    "w": "Orla",
    "dt": "Orla Venning",
    "t": "Orla Venn",
    "b": "Harrowgate",
    "vp": "find the capital of Keld",
    "a": "Orla Venn",
    "ra": "Document [1]",
    "rb": "Document [4]",
    "wrong": "Dunmere",
    "src": "",
    "gold": "Marrow Cross",
    "chain": "Document [1] gives Harrowgate, then Document [2] gives Keld",
    "ans": "Marrow Cross",
}


@pytest.mark.parametrize(
    ("pools", "phase"),
    [
        (("GOAL", "DISTRACT", "NO_DISTRACT"), "understanding"),
        (("PLAN_LEAD",), "planning"),
        (("EXEC",), "execution"),
        (
            (
                "PITFALL_DISTRACTOR",
                "PITFALL_BRIDGE",
                "PITFALL_COMPARE",
                "PITFALL_REREAD",
                "WRONG_ANSWER",
                "WRONG_ENTITY",
                "LOOP",
            ),
            "self_correction",
        ),
        (("VERIFY",), "verification"),
    ],
)
def test_each_phrasing_carries_its_phases_cue(pools: tuple[str, ...], phase: str):
    misses = [
        f"{name}[{i}]"
        for name in pools
        for i, text in enumerate(POOLS[name])
        if phase not in detect_phases(text.format(**FILL))
    ]
    assert misses == []


def test_pick_draws_by_index_and_keeps_one_full_stop_after_a_quote():
    pool = ('A "{ev}".', 'B "{ev}".', 'C "{ev}".')
    rng, twin = random.Random(3), random.Random(3)
    out = pick(rng, pool, ev="It rains.")
    assert out == pool[twin.randrange(3)].format(ev="It rains.").replace('.".', '."')
    assert out.endswith(' "It rains."')
    assert pick(rng, ('"{q}".',), q="Who?") == '"Who?"'
    assert pick(rng, ('"{q}".',), q="Go!") == '"Go!"'
    assert pick(rng, ('"{q}".',), q="plain") == '"plain".'


@pytest.mark.parametrize(
    ("items", "text"),
    [([], ""), (["a"], "a"), (["a", "b"], "a and b"), (["a", "b", "c"], "a, b and c")],
)
def test_join_and(items: list[str], text: str):
    assert join_and(items) == text


def test_citations():
    assert cite(EXAMPLE, 3) == "Document [3] (Title: Keld)"
    assert cite(EXAMPLE, 0, "Keld") == "the document on Keld"
    assert cite(EXAMPLE, 0) == "the documents"
    assert cite_short(3, "Keld") == "Document [3]"
    assert cite_short(0, "Keld") == "the document on Keld"


def test_quote_prefers_the_sentence_naming_the_focus_and_cuts_around_it():
    text = "Orla Venn is a painter. She was born in the town of Harrowgate in the north."
    assert quote(text, 50, "Harrowgate") == "She was born in the town of Harrowgate in the north."
    assert quote(text, 5, "Harrowgate") == "... town of Harrowgate in the ..."
    assert quote("A b c d e f g h.", 4) == "A b c d ..."  # no focus: the start
    assert quote('He said "hi" to them.', 10) == "He said 'hi' to them."  # no nested quotes


def test_quote_never_exceeds_its_word_budget():
    text = " ".join(f"w{i}" for i in range(100)) + " Keld."
    for words in (1, 5, 12, 45):
        kept = quote(text, words, "Keld").replace("...", "").split()
        assert len(kept) == words and "Keld." in kept


def test_numbers_in_words_then_digits():
    assert [number(n) for n in (0, 1, 3, 9, 10, 42)] == [
        "no",
        "one",
        "three",
        "nine",
        "10",
        "42",
    ]


def test_terse_levels_only_ever_shorten():
    quotes, named = [t[0] for t in TERSE], [t[1] for t in TERSE]
    assert quotes == sorted(quotes, reverse=True) and named == sorted(named, reverse=True)
    assert TERSE[0][2:] == (True, True) and TERSE[-1][2:] == (False, False)
