"""Prompt templates: exact layouts where other code depends on them, content rules elsewhere."""

from __future__ import annotations

import json
import re

from mbt_online.prompts import (
    JUDGE_GRADES,
    METACOGNITIVE_SYSTEM,
    RRP_LABELS,
    STUDENT_INSTRUCTION,
    WORLD_INSTRUCTION,
    format_target,
    gold_solution_messages,
    judge_answer_hit_messages,
    judge_correctness_messages,
    judge_mqi_messages,
    judge_rrp_messages,
    mbt_r_messages,
    mbt_s_messages,
    render_documents,
    student_messages,
)
from mbt_online.scoring.metrics import extract_answer
from mbt_online.tasks.base import Example


def example() -> Example:
    return Example(
        id="q1",
        question="Which town is the seat of the county that contains Van Hook Township?",
        documents=[
            ("Van Hook Township", "Van Hook Township is in\n Mountrail County."),
            ("Mountrail County Courthouse", "The courthouse is in Stanley."),
        ],
        answer="Stanley",
        aliases=["Stanley, North Dakota"],
    )


def test_render_documents_one_numbered_line_each() -> None:
    assert render_documents(example()) == (
        "Document [1] (Title: Van Hook Township) Van Hook Township is in Mountrail County.\n"
        "Document [2] (Title: Mountrail County Courthouse) The courthouse is in Stanley."
    )


def test_student_prompt_has_no_system_turn_and_no_answer() -> None:
    msgs = student_messages(example())
    assert [m["role"] for m in msgs] == ["user"]
    text = msgs[0]["content"]
    assert text.startswith("Document [1] (Title: Van Hook Township)")
    assert "Question: Which town is the seat" in text
    assert "<think>" in text and "</think>" in text
    assert "<answer>" in text and "</answer>" in text
    assert "Correct answer" not in text and "North Dakota" not in text
    # documents come before the question, the instruction after it
    assert text.index("Document [2]") < text.index("Question:") < text.index("<answer>")


def test_world_questions_get_the_short_instruction_others_the_full_one() -> None:
    from dataclasses import replace

    plain = student_messages(example())[0]["content"]
    world = student_messages(replace(example(), source="world"))[0]["content"]
    assert plain.endswith("\n\n" + STUDENT_INSTRUCTION)
    assert world == plain.removesuffix(STUDENT_INSTRUCTION) + WORLD_INSTRUCTION
    assert len(WORLD_INSTRUCTION) < len(STUDENT_INSTRUCTION) / 2
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        assert tag in WORLD_INSTRUCTION


def test_metacognitive_prompt_adds_the_five_phase_system_turn_only() -> None:
    plain, meta = student_messages(example()), student_messages(example(), metacognitive=True)
    assert [m["role"] for m in meta] == ["system", "user"]
    assert meta[0]["content"] == METACOGNITIVE_SYSTEM
    assert meta[1] == plain[0]
    low = METACOGNITIVE_SYSTEM.lower()
    for phase in ("understanding", "planning", "execution", "self-correction", "verification"):
        assert phase in low
    assert re.findall(r"^\d\.", METACOGNITIVE_SYSTEM, flags=re.M) == ["1.", "2.", "3.", "4.", "5."]


def test_format_target_layout_and_answer_round_trip() -> None:
    target = format_target("  We reason.\n\nWe check.  ", " Stanley ")
    assert target == "<think>\nWe reason.\n\nWe check.\n</think>\n\n<answer>Stanley</answer>"
    assert extract_answer(target) == "Stanley"


def test_teacher_prompts_carry_the_answer_and_the_rules() -> None:
    gold = gold_solution_messages(example())
    assert [m["role"] for m in gold] == ["user"]
    assert "Correct answer: Stanley (also accepted: Stanley, North Dakota)" in gold[0]["content"]
    assert "pitfall" in gold[0]["content"]
    synth = mbt_s_messages(example())[0]["content"]
    assert "Correct answer: Stanley" in synth
    for rule in ('"we"', "blank line", "no markdown", "never mention"):
        assert rule in synth
    assert "Document [2] (Title: Mountrail County Courthouse)" in synth


def test_mbt_r_is_a_three_turn_conversation_with_the_draft_last() -> None:
    msgs = mbt_r_messages(example(), "Guide: read Document [1], then [2].", "<think>I guess Paris")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0] == gold_solution_messages(example())[0]
    assert msgs[1]["content"] == "Guide: read Document [1], then [2]."
    request = msgs[2]["content"]
    assert request.rstrip().endswith("<think>I guess Paris")
    assert "do not silently replace it" in request and "never mention" in request
    assert mbt_r_messages(example(), "g", "  ")[2]["content"].endswith("(empty)")


def test_correctness_judge_asks_for_a_parseable_grade_line() -> None:
    text = judge_correctness_messages("Q?", "Stanley", "Minot")[0]["content"]
    assert "Question: Q?\nGold answer: Stanley\nPredicted answer: Minot" in text
    for grade in JUDGE_GRADES:
        assert f"GRADE: {grade}" in text
    assert "last line" in text


def test_answer_hit_judge_shows_the_trace_and_asks_yes_or_no() -> None:
    text = judge_answer_hit_messages("Q?", "Stanley", "We find Stanley. Then Minot.")[0]["content"]
    assert "Trace:\nWe find Stanley. Then Minot." in text
    assert "HIT: YES" in text and "HIT: NO" in text
    assert "even if it later abandons it" in text


def test_rrp_judge_numbers_paragraphs_and_shows_a_valid_json_example() -> None:
    paragraphs = ["First we plan.", "Document [2] gives Stanley.", "Stanley again."]
    text = judge_rrp_messages("Q?", "Stanley", paragraphs)[0]["content"]
    assert "[P1] First we plan.\n\n[P2] Document [2] gives Stanley.\n\n[P3] Stanley again." in text
    assert "exactly 3 entries" in text
    shown = json.loads(re.search(r"e\.g\. (\{.*?\});", text).group(1))
    assert set(shown) == {"answer_paragraph", "labels"}
    assert set(shown["labels"]) <= set(RRP_LABELS)


def test_mqi_judge_lists_the_phase_names_and_a_valid_json_example() -> None:
    text = judge_mqi_messages("Q?", "We plan. We check.")[0]["content"]
    for name in ("understanding", "planning", "execution", "self_correction", "verification"):
        assert name in text
    shown = json.loads(re.search(r"e\.g\. (\{.*?\});", text).group(1))
    assert isinstance(shown["level"], int) and isinstance(shown["phases"], list)
    assert "5 = all five phases" in text
