"""The teacher contract: `verify` names each reason a trace is rejected, every backend fits the
`Teacher` protocol, and the contract imports no backend."""

from __future__ import annotations

import subprocess
import sys

import pytest
from teacher_cases import chain_example, good_trace

from mbt_online.teachers.contract import Teacher, count_words, verify

# ---- verify: each rejection has its reason ----


def test_verify_accepts_a_good_trace_and_rejects_empty_ones() -> None:
    ex = chain_example()
    assert verify(good_trace(), ex).ok
    assert verify(good_trace(), ex).reasons == []
    for empty in ("", "   \n\n ", None):
        assert verify(empty, ex).reasons == ["empty"]
        assert not verify(empty, ex).ok


def test_verify_answer_not_reached() -> None:
    ex = chain_example()
    trace = good_trace().replace("Marrow Cross", "Marrowgate")
    assert verify(trace, ex).reasons == ["answer_not_reached"]
    # an alias counts as reaching the answer
    ex.aliases = ["Marrowgate"]
    assert verify(trace, ex).ok


def test_verify_missing_phases_names_each_missing_phase() -> None:
    ex = chain_example()
    only_answer = "Marrow Cross."
    assert verify(only_answer, ex).reasons == [
        "missing_phases:understanding,planning,execution,self_correction,verification"
    ]
    no_correction = (
        "The question asks for a capital. Our plan: first, find the birthplace.\n\n"
        "Document [3] says the capital is Marrow Cross. We verify that it matches."
    )
    assert verify(no_correction, ex).reasons == ["missing_phases:self_correction"]


def test_verify_over_budget_default_words_and_custom_counter() -> None:
    ex = chain_example()
    trace = good_trace()
    words = count_words(trace)
    assert verify(trace, ex, budget_tokens=words).ok
    assert verify(trace, ex, budget_tokens=words - 1).reasons == ["over_budget"]
    chars = len(trace)
    assert verify(trace, ex, budget_tokens=chars, count_tokens=len).ok
    assert verify(trace, ex, budget_tokens=chars - 1, count_tokens=len).reasons == ["over_budget"]


@pytest.mark.parametrize(
    "slip",
    [
        "This agrees with the given answer.",
        "As the provided answer says, we are done.",
        "The draft went the wrong way here.",
        "We were told the answer, so this is easy.",
        "The gold solution confirms it.",
        "Since the correct answer is given, we stop.",
    ],
)
def test_verify_flags_leaks(slip: str) -> None:
    ex = chain_example()
    assert verify(f"{good_trace()}\n\n{slip}", ex).reasons == ["leak"]


def test_verify_does_not_flag_a_leak_phrase_quoted_from_a_document() -> None:
    ex = chain_example()
    ex.documents[2] = (
        "Keld",
        "Keld is a province whose capital is Marrow Cross. Its team won the draft.",
    )
    trace = good_trace() + '\n\nDocument [3] adds "Its team won the draft."'
    assert verify(trace, ex).ok


def test_verify_reports_several_reasons_together() -> None:
    ex = chain_example()
    reasons = verify("We were told the answer is Harrowgate.", ex, budget_tokens=3).reasons
    assert reasons[0] == "answer_not_reached"
    assert reasons[1].startswith("missing_phases:")
    assert reasons[2:] == ["over_budget", "leak"]


# ---- the Teacher protocol and import hygiene ----


def test_every_backend_is_a_teacher() -> None:
    from mbt_online.config import TeacherConfig
    from mbt_online.teachers.llm import LLMTeacher
    from mbt_online.teachers.structured import StructuredTeacher

    assert isinstance(StructuredTeacher(), Teacher)
    assert isinstance(LLMTeacher(object(), TeacherConfig()), Teacher)


def test_the_llm_teacher_selection_and_build_do_not_import_the_structured_teacher() -> None:
    """The contract is all they need; the rule-based teacher (and the world it writes for) loads
    only where a run builds one."""
    code = (
        "import sys; import mbt_online.teachers.llm, mbt_online.teachers.selection, "
        "mbt_online.training.build; "
        "print(sorted(m for m in sys.modules if m.startswith('mbt_online.teachers.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "['mbt_online.teachers.contract',",
        "'mbt_online.teachers.llm',",
        "'mbt_online.teachers.selection']",
    ]
