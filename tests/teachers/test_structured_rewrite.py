"""Structured teacher, MBT-R: rewriting the student's draft (kept findings, dropped loops,
the slip turned into a correction at a document)."""

from __future__ import annotations

import random

import pytest
from teacher_cases import chain_example, musique_two_hop

from mbt_online.scoring.metrics import contains_answer, detect_phases, repetition_ratio
from mbt_online.scoring.text import split_paragraphs, split_sentences
from mbt_online.teachers.contract import TeachRequest, verify
from mbt_online.teachers.structured import StructuredTeacher


def test_rewrite_of_a_looping_wrong_draft_drops_the_loop_and_self_corrects_at_a_document() -> None:
    ex = musique_two_hop()
    wrong = next(t for t, _ in ex.documents if t not in ex.supporting_titles)
    loop = "Hmm, wait, let me think about this again. " * 12
    fact = ex.hops[0].evidence
    draft = (
        f"<think>Okay, I need to find the answer. {fact} {loop}{fact} {fact} {loop}"
        f"So the answer is {wrong}.</think>\n\n<answer>{wrong}</answer>"
    )
    assert repetition_ratio(draft) > 0.5
    teacher = StructuredTeacher()
    trace = teacher.rewrite(ex, draft, random.Random(0))
    assert verify(trace, ex).ok, verify(trace, ex).reasons
    assert "think about this again" not in trace
    assert "<think>" not in trace and "<answer>" not in trace
    assert repetition_ratio(trace) < 0.2
    sentences = [s for s in split_sentences(trace)]
    assert len(sentences) == len(set(sentences))  # nothing said twice
    # the draft's correct first-hop finding is kept, once
    assert trace.count(fact.rstrip(".")) == 1
    # the wrong final answer is named, doubted at a cited document and corrected to the gold one
    correction = [
        p
        for p in split_paragraphs(trace)
        if wrong in p and "Document [" in p and "self_correction" in detect_phases(p)
    ]
    assert correction, trace
    assert contains_answer(correction[0], ex.answers)
    # the trace still ends on the gold answer, not the draft's
    assert split_paragraphs(trace)[-1].rstrip(".").endswith(ex.answer)


def test_rewrite_keeps_a_correct_drafts_supported_findings_in_our_voice() -> None:
    ex = chain_example()
    draft = (
        "<think>I see that Orla Venn was born in the town of Harrowgate. I think that is the "
        "first step. Harrowgate lies in the province of Keld, so I looked at Keld next. "
        "My reading is that the capital of Keld is Marrow Cross.</think>"
        "<answer>Marrow Cross</answer>"
    )
    trace = StructuredTeacher().rewrite(ex, draft, random.Random(0))
    assert verify(trace, ex).ok
    assert "We see that Orla Venn was born in the town of Harrowgate." in trace
    assert "Our reading is that the capital of Keld is Marrow Cross." in trace
    # each kept finding sits in the paragraph of the hop it reports
    paragraphs = split_paragraphs(trace)
    keld = next(p for p in paragraphs if "so we looked at Keld next" in p)
    assert "Document [2]" in keld and "Document [1]" not in keld
    assert "I think that is the first step" not in trace  # doubt/filler is not a finding
    assert " I " not in trace and "My " not in trace


@pytest.mark.parametrize(
    "draft",
    ["", "zq#@ lorem ipsum <think> 42 42 42", "</think>", "<answer>", "The the the the " * 50],
)
def test_rewrite_survives_empty_and_garbage_drafts(draft: str) -> None:
    ex = chain_example()
    result = StructuredTeacher().teach([TeachRequest(ex, "mbt-r", draft)])[0]
    assert result.verified, result.reasons
    assert "lorem" not in result.trace


def test_rewrite_turns_a_distractor_entity_into_a_correction() -> None:
    ex = chain_example()
    draft = "Orla Venning was born in Dunmere, so Dunmere is the birthplace we need."
    trace = StructuredTeacher().rewrite(ex, draft, random.Random(0))
    assert verify(trace, ex).ok
    correction = [p for p in split_paragraphs(trace) if "Orla Venning" in p and "Document [4]" in p]
    assert correction and "self_correction" in detect_phases(correction[0])


def test_rewrite_notes_a_loop_on_a_correct_but_looping_draft() -> None:
    ex = chain_example()
    loop = "Keld is a province whose capital is Marrow Cross. " * 8
    draft = f"Orla Venn was born in the town of Harrowgate. {loop}"
    trace = StructuredTeacher(seed=1).rewrite(ex, draft, random.Random(0))
    assert verify(trace, ex).ok
    assert trace.count("Keld is a province whose capital is Marrow Cross") <= 2
    assert any(w in trace for w in ("same step again", "circling back"))
