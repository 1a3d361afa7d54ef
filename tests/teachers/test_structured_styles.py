"""Structured teacher, the short styles: "concise" (one line per phase) and "student" (the world
student's own lines)."""

from __future__ import annotations

import random

import pytest
from paths import SAMPLES
from teacher_cases import chain_example, examples

from mbt_online.teachers.contract import TeachRequest, verify
from mbt_online.teachers.structured import StructuredTeacher


def test_concise_style_is_short_verified_and_corrects_the_draft():
    from mbt_online.config import load_config
    from mbt_online.tasks.world import world_split

    cfg = load_config()
    exs = world_split(cfg.data.train, cfg.world, "train")[:30]
    teacher = StructuredTeacher(seed=0, style="concise", budget_tokens=60)
    wrong = "<think>\nSo the answer is Nobody Known.\n</think>\n\n<answer>Nobody Known</answer>"
    synth = teacher.teach([TeachRequest(ex, "mbt-s") for ex in exs])
    fixed = teacher.teach([TeachRequest(ex, "mbt-r", draft=wrong) for ex in exs])
    assert all(r.verified for r in synth + fixed)
    full = StructuredTeacher(seed=0).teach([TeachRequest(ex, "mbt-s") for ex in exs])
    words = [len(r.trace.split()) for r in synth]
    assert max(words) < min(len(r.trace.split()) for r in full)  # shorter than the monologue
    assert all("Wait, not Nobody Known" in r.trace for r in fixed)
    with pytest.raises(ValueError, match="style"):
        StructuredTeacher(style="terse")


def test_student_style_keeps_the_students_lines_and_stops_after_one_check():
    from mbt_online.config import load_config
    from mbt_online.scoring.metrics import extract_answer
    from mbt_online.sim.reasoner import unregulated_trace
    from mbt_online.tasks.world import clean_lines, world_split

    cfg = load_config()
    exs = world_split(cfg.data.train, cfg.world, "train")[:40]
    teacher = StructuredTeacher(seed=0, style="student", budget_tokens=80)
    rng = random.Random(0)
    drafts = [unregulated_trace(ex, rng, cfg.bootstrap) for ex in exs]
    fixed = teacher.teach(
        [TeachRequest(ex, "mbt-r", draft=d) for ex, (d, _) in zip(exs, drafts, strict=True)]
    )
    assert all(r.verified for r in fixed), [r.reasons for r in fixed if not r.verified]
    for ex, (draft, kind), r in zip(exs, drafts, fixed, strict=True):
        goal, *hops, said = clean_lines(ex)
        lines = r.trace.splitlines()
        assert lines[0].startswith(goal) and lines[-1].startswith("Check: ")
        assert lines[-2] == said and all(h in lines for h in hops)  # the draft's own wording
        final = extract_answer(draft)
        assert ("was wrong" in lines[-1]) == (final is not None and final != ex.answer)
        assert (final not in (None, ex.answer)) == (kind == "distractor_switch")
        assert "Let me" not in r.trace and "Wait, maybe" not in r.trace
    # real data has no line style to keep: concise there
    real = chain_example()
    assert teacher.student_words(real, None) == teacher.concise(
        real, None, random.Random(f"0|{real.id}")
    )


@pytest.mark.parametrize("dataset", sorted(SAMPLES))
def test_concise_style_on_real_data_clips_quotes_and_states_yes_no_answers(dataset: str):
    from mbt_online.teachers.chain import is_yes_no
    from mbt_online.teachers.structured import _CLIP_WORDS

    teacher = StructuredTeacher(seed=0, style="concise", budget_tokens=256)
    exs = examples(dataset)
    results = teacher.teach([TeachRequest(ex, "mbt-s") for ex in exs])
    assert all(r.verified for r in results), [r.reasons for r in results if not r.verified][:3]
    docs = {ex.id: " ".join(text for _, text in ex.documents) for ex in exs}
    for ex, r in zip(exs, results, strict=True):
        lines = r.trace.splitlines()
        evidence = lines[2:-2]
        evidence[-1] = evidence[-1].rsplit(" This gives ", 1)[0].rsplit(" So the answer is ", 1)[0]
        for line in evidence:
            quote = line.removeprefix("... ").removesuffix(" ...")
            assert len(quote.split()) <= _CLIP_WORDS
            # copied from the documents, not paraphrased
            assert " ".join(quote.split()[:4]) in " ".join(docs[ex.id].split())
        if is_yes_no(ex):
            assert f"So the answer is {ex.answer}." in r.trace


def test_concise_mbt_r_names_a_short_slip_but_not_a_garbled_one():
    ex = next(e for e in examples("hotpotqa") if len(e.answer.split()) <= 3)
    teacher = StructuredTeacher(seed=0, style="concise")
    wrong = "<think>\nIt is Nobody Known.\n</think>\n\n<answer>Nobody Known</answer>"
    garbled = f"<think>\n{ex.question}\n</think>\n\n<answer>{ex.question}</answer>"
    named = teacher.concise(ex, wrong, random.Random(0))
    assert "Wait, not Nobody Known: the chain does not lead there." in named
    unnamed = teacher.concise(ex, garbled, random.Random(0))
    assert "Wait, not" not in unnamed and "is not on the chain." in unnamed
    assert verify(unnamed, ex).ok
    # the draft's own boilerplate is not a name either
    boiler = "<think>\nIt is unclear.\n</think>\n\n<answer>The answer is:</answer>"
    assert "Wait, not" not in teacher.concise(ex, boiler, random.Random(0))
