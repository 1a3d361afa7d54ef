"""The paragraph writers MBT-S and MBT-R share, on the hand-made three-hop chain and a HotpotQA
comparison: what each paragraph names, how terseness shortens it, and how `assemble` lays out
the trace around the pitfall or correction."""

from __future__ import annotations

import random

import pytest
from teacher_cases import chain_example, examples

from mbt_online.scoring.metrics import PHASES, detect_phases
from mbt_online.tasks.base import Example
from mbt_online.teachers.chain import gold_steps
from mbt_online.teachers.contract import verify
from mbt_online.teachers.phrases import FOUND
from mbt_online.teachers.pitfalls import pick_pitfall
from mbt_online.teachers.writers import assemble, planning, understanding

EX = chain_example()
STEPS = gold_steps(EX)
RELEVANT = (
    "Document [1] (Title: Orla Venn), Document [2] (Title: Harrowgate) and "
    "Document [3] (Title: Keld)"
)


@pytest.mark.parametrize("seed", range(5))
def test_understanding_states_the_goal_the_relevant_and_both_distractors(seed: int):
    text = understanding(EX, STEPS, random.Random(seed), 0)
    assert EX.question in text and RELEVANT in text
    assert '"Orla Venning"' in text and '"Dunmere"' in text
    assert "understanding" in detect_phases(text)


def test_a_terse_understanding_names_one_distractor_and_counts_the_rest():
    for seed in range(5):
        text = understanding(EX, STEPS, random.Random(seed), 2)
        named = [t for t in ('"Orla Venning"', '"Dunmere"') if t in text]
        assert len(named) == 1 and "one other document" in text


def test_the_question_is_quoted_on_one_line():
    ex = chain_example()
    ex.question = "What is the capital\n of   the province?"
    text = understanding(ex, gold_steps(ex), random.Random(0), 0)
    assert '"What is the capital of the province?"' in text


def test_with_every_document_relevant_nothing_is_set_aside():
    ex = chain_example()
    ex.documents = ex.documents[:3]
    text = understanding(ex, gold_steps(ex), random.Random(0), 0)
    assert text.endswith(
        (
            "There are no distractor documents to set aside this time.",
            "Every document seems to bear on the question, so there is nothing to set aside.",
        )
    )


def test_a_repeated_distractor_title_is_named_by_its_number():
    ex = chain_example()
    ex.documents.append(("Dunmere", "Dunmere is also a river."))
    text = understanding(ex, gold_steps(ex), random.Random(0), 0)
    assert 'Document [5] ("Dunmere")' in text and 'Document [6] ("Dunmere")' in text


@pytest.mark.parametrize("seed", range(8))
def test_planning_lists_every_hop_in_order(seed: int):
    text = planning(EX, STEPS, random.Random(seed))
    at = [text.index(s.vp) for s in STEPS]
    assert at == sorted(at)
    assert "planning" in detect_phases(text)
    assert "{" not in text


def test_a_comparison_plan_ends_with_the_comparison():
    ex = examples("hotpotqa")[0]  # Scott Derrickson vs Ed Wood
    for seed in range(6):
        text = planning(ex, gold_steps(ex), random.Random(seed))
        assert text.rstrip(".").endswith(
            "compare Scott Derrickson and Ed Wood on what the question asks"
        )
        assert "two steps" not in text  # three items: two reads and the comparison


def test_a_plan_without_steps_still_has_one_item():
    text = planning(EX, [], random.Random(0))
    assert "find the document that speaks to the question" in text


def paragraphs(ex: Example, terse: int = 0, after: int = 1, facts=None, seed: int = 0):
    steps = gold_steps(ex)
    text = assemble(ex, steps, random.Random(seed), terse, ["HEAD"], after, "PITFALL", facts or {})
    return text.split("\n\n")


def test_assemble_lays_out_head_hops_pitfall_and_verification():
    parts = paragraphs(EX, after=1)
    assert len(parts) == 1 + 3 + 1 + 1
    assert parts[0] == "HEAD" and parts[3] == "PITFALL"  # after the second hop
    for part, step in zip((parts[1], parts[2], parts[4]), STEPS, strict=True):
        assert step.evidence in part and step.answer in part
        assert f"Document [{step.doc}] (Title: {step.title})" in part
    assert "verification" in detect_phases(parts[-1])
    assert (
        "Document [1] gives Harrowgate, then Document [2] gives Keld, then Document [3] gives "
        "Marrow Cross" in parts[-1]
    )
    assert parts[-1].rstrip(".").endswith("Marrow Cross")


@pytest.mark.parametrize("after", [0, 1, 2])
def test_the_pitfall_follows_its_hop(after: int):
    assert paragraphs(EX, after=after).index("PITFALL") == 1 + after + 1


def test_later_hops_check_the_link_to_the_earlier_finding():
    parts = paragraphs(EX, after=2)
    assert "Harrowgate" in parts[2].split(STEPS[1].evidence)[-1]  # hop 2 checks Harrowgate
    assert "Keld" in parts[3].split(STEPS[2].evidence)[-1]


def test_a_terse_trace_cites_short_quotes_less_and_skips_monitoring():
    full, terse = paragraphs(EX, terse=0), paragraphs(EX, terse=2)
    assert "(Title:" in full[2] and "(Title:" not in terse[2]
    assert "Document [2]" in terse[2]
    # the monitoring sentence (the link back to Harrowgate) is gone at the tersest level
    assert "Harrowgate" in full[2].split(STEPS[1].evidence)[-1]
    assert "Harrowgate" not in terse[2]


def test_kept_draft_findings_lead_their_hop():
    lead = "We found that Harrowgate lies in the province of Keld."
    parts = paragraphs(EX, facts={1: [lead]})
    assert parts[2].startswith(lead)
    # the draft already stated the finding: no "This gives us Keld." after it
    assert not any(f.format(a="Keld") in parts[2] for f in FOUND)
    assert any(f.format(a="Keld") in paragraphs(EX)[2] for f in FOUND)


def test_a_comparison_gets_its_own_paragraph_before_verification():
    ex = examples("hotpotqa")[0]
    parts = paragraphs(ex, after=1)
    assert len(parts) == 1 + 2 + 1 + 1 + 1
    assert "yes" in parts[-2] and ("compare" in parts[-2] or "comparison" in parts[-2])
    assert "covers Scott Derrickson" in parts[-1] and parts[-1].rstrip(".").endswith("yes")


def test_without_steps_the_pitfall_and_a_verification_remain():
    ex = Example(id="x", question="Q?", documents=[("A", "Nothing here.")], answer="Z")
    parts = assemble(ex, [], random.Random(0), 0, ["HEAD"], 0, "PITFALL", {}).split("\n\n")
    assert parts[:2] == ["HEAD", "PITFALL"] and "the documents point one way" in parts[2]


@pytest.mark.parametrize("seed", range(5))
def test_the_writers_together_make_a_trace_with_all_five_phases(seed: int):
    rng = random.Random(seed)
    head = [understanding(EX, STEPS, rng, 0), planning(EX, STEPS, rng)]
    after, pitfall = pick_pitfall(EX, STEPS, rng)
    trace = assemble(EX, STEPS, rng, 0, head, after, pitfall, {})
    assert detect_phases(trace) == list(PHASES)
    assert verify(trace, EX).ok
