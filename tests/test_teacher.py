"""Structured teacher and `verify` on the real dev samples and on hand-made examples."""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

import pytest

from mbt_online.scoring.metrics import (
    PHASES,
    contains_answer,
    detect_phases,
    repetition_ratio,
    split_paragraphs,
    split_sentences,
)
from mbt_online.tasks.base import Example, Hop, load_examples
from mbt_online.teachers.structured import StructuredTeacher, TeachRequest, count_words, verify

DATA = Path(__file__).parents[1].parent / "shared" / "data"
SAMPLES = {
    "hotpotqa": DATA / "hotpotqa" / "hotpot_dev_distractor_sample.json",
    "musique": DATA / "musique" / "musique_ans_v1.0_dev_sample.jsonl",
    "2wikimultihopqa": DATA / "2wikimultihopqa" / "dev_sample.json",
}


@cache
def examples(dataset: str) -> tuple[Example, ...]:
    return tuple(load_examples(dataset, SAMPLES[dataset]).examples)


def chain_example() -> Example:
    """A synthetic-world style 3-hop chain with look-alike distractors."""
    docs = [
        ("Orla Venn", "Orla Venn is a painter. She was born in the town of Harrowgate."),
        ("Harrowgate", "Harrowgate is a town on the river Sull. It lies in the province of Keld."),
        ("Keld", "Keld is a province whose capital is Marrow Cross."),
        ("Orla Venning", "Orla Venning is a sculptor who was born in Dunmere."),
        ("Dunmere", "Dunmere is a town in the province of Astor."),
    ]
    hops = [
        Hop("Where was Orla Venn born?", "Harrowgate", "Orla Venn"),
        Hop("#1 >> located in the administrative territorial entity", "Keld", "Harrowgate"),
        Hop("#2 >> capital", "Marrow Cross", "Keld", docs[2][1]),
    ]
    return Example(
        id="world-1",
        question="What is the capital of the province that contains the birthplace of Orla Venn?",
        documents=docs,
        answer="Marrow Cross",
        supporting_titles=["Orla Venn", "Harrowgate", "Keld"],
        hops=hops,
        type="3hop",
    )


def good_trace() -> str:
    return StructuredTeacher().synthesize(chain_example(), random.Random(0))


# ---- synthesize + verify on every real example ----


@pytest.mark.parametrize("dataset", list(SAMPLES))
def test_synthesize_verifies_on_every_sample_example(dataset: str) -> None:
    teacher = StructuredTeacher(seed=3)
    exs = examples(dataset)
    assert len(exs) >= 100
    verdicts = []
    for ex in exs:
        trace = teacher.synthesize(ex, random.Random(ex.id))
        assert contains_answer(trace, ex.answers), ex.id
        assert detect_phases(trace) == list(PHASES), ex.id
        assert "\n\n" in trace and "#" not in trace and "**" not in trace  # paragraphs, no markdown
        verdicts.append(verify(trace, ex))
    ok = sum(v.ok for v in verdicts)
    assert ok >= 0.95 * len(exs), [v.reasons for v in verdicts if not v.ok][:5]


@pytest.mark.parametrize("dataset", list(SAMPLES))
def test_synthesized_trace_cites_every_gold_document(dataset: str) -> None:
    """Execution is grounded: each supporting document is cited by its number in the trace."""
    teacher = StructuredTeacher()
    for ex in examples(dataset)[:30]:
        trace = teacher.synthesize(ex, random.Random(0))
        gold = {t for t in ex.supporting_titles}
        cited = {
            title
            for i, (title, _) in enumerate(ex.documents, 1)
            if title in gold and f"Document [{i}]" in trace
        }
        assert cited == gold, ex.id


def test_chain_trace_walks_the_hops_in_order_and_sets_aside_lookalikes() -> None:
    ex = chain_example()
    trace = good_trace()
    paragraphs = split_paragraphs(trace)
    # understanding first: names the relevant documents, sets aside the two look-alikes by title
    assert "Document [1] (Title: Orla Venn)" in paragraphs[0]
    assert '"Orla Venning"' in paragraphs[0] and '"Dunmere"' in paragraphs[0]
    # planning: the hops in order, with "#k" placeholders filled by earlier findings
    plan = paragraphs[1]
    assert 'find the "located in the administrative territorial entity" of Harrowgate' in plan
    assert plan.index("of Harrowgate") < plan.index("find the capital of Keld")
    # findings appear in chain order, each from its own document
    positions = [trace.index(h.answer) for h in ex.hops]
    assert positions == sorted(positions)
    for doc in ("Document [1]", "Document [2]", "Document [3]"):
        assert doc in trace
    assert verify(trace, ex).ok
    assert paragraphs[-1].endswith("Marrow Cross.")


def test_example_without_hops_or_supporting_sentences_still_reaches_the_answer() -> None:
    ex = Example(
        id="bare",
        question="Which river flows through Harrowgate?",
        documents=[("Keld", "Keld is a province."), ("Harrowgate", "Harrowgate lies on the Sull.")],
        answer="Sull",
    )
    trace = StructuredTeacher().synthesize(ex, random.Random(1))
    assert verify(trace, ex).ok
    assert "Document [2] (Title: Harrowgate)" in trace


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


# ---- MBT-R ----


def musique_two_hop() -> Example:
    return next(ex for ex in examples("musique") if len(ex.hops) == 2 and ex.hops[0].evidence)


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


# ---- variation and determinism ----


def test_wording_varies_across_examples() -> None:
    teacher = StructuredTeacher()
    exs = list(examples("hotpotqa")[:20]) + list(examples("musique")[:20])
    traces = [r.trace for r in teacher.teach([TeachRequest(ex, "mbt-s") for ex in exs])]
    sentence_sets = [set(split_sentences(t)) for t in traces]
    assert not set.intersection(*sentence_sets)  # no sentence shared by every trace
    first, second, last = (
        {" ".join(split_paragraphs(t)[i].split()[:3]) for t in traces} for i in (0, 1, -1)
    )
    # understanding, planning and verification each open in several ways
    assert len(first) >= 4 and len(second) >= 4 and len(last) >= 3
    corrections = {
        " ".join(p.split()[:2])
        for t in traces
        for p in split_paragraphs(t)
        if "self_correction" in detect_phases(p) and p.split()[0] != "According"
    }
    assert len(corrections) >= 4


def test_teach_is_deterministic_per_seed_and_varies_with_it() -> None:
    exs = list(examples("2wikimultihopqa")[:10])
    reqs = [TeachRequest(ex, "mbt-s") for ex in exs] + [
        TeachRequest(ex, "mbt-r", draft="I think the answer is Paris.") for ex in exs
    ]
    a = StructuredTeacher(seed=7).teach(reqs)
    b = StructuredTeacher(seed=7).teach(list(reversed(reqs)))[::-1]  # order does not matter
    c = StructuredTeacher(seed=8).teach(reqs)
    assert [r.trace for r in a] == [r.trace for r in b]
    assert sum(x.trace != y.trace for x, y in zip(a, c, strict=True)) >= 10
    assert all(r.backend == "structured" and r.verified and r.tries == 1 for r in a)
    assert [r.mode for r in a] == ["mbt-s"] * 10 + ["mbt-r"] * 10
    assert [r.example_id for r in a[:10]] == [ex.id for ex in exs]


# ---- teach: retries and recorded failures ----


def test_over_budget_trace_is_retried_tersely_then_accepted() -> None:
    ex = examples("musique")[0]
    teacher = StructuredTeacher(seed=0)
    first = teacher.synthesize(ex, random.Random(f"0|{ex.id}|mbt-s|0"))
    tersest = teacher.synthesize(ex, random.Random(f"0|{ex.id}|mbt-s|2"), terse=2)
    budget = count_words(tersest)
    assert count_words(first) > budget  # the first attempt is rejected
    result = StructuredTeacher(seed=0, budget_tokens=budget).teach([TeachRequest(ex, "mbt-s")])[0]
    assert result.verified and result.tries in (2, 3)
    assert result.usage["completion_tokens"] <= budget
    assert result.trace != first


def test_failure_is_recorded_with_reasons_after_max_tries() -> None:
    ex = chain_example()
    result = StructuredTeacher(budget_tokens=5, max_tries=2).teach([TeachRequest(ex, "mbt-s")])[0]
    assert not result.verified
    assert result.reasons == ["over_budget"]
    assert result.tries == 2
    assert result.trace and contains_answer(result.trace, ex.answers)  # kept for inspection
    assert result.usage["completion_tokens"] == count_words(result.trace)


def test_unknown_mode_and_bad_max_tries_fail_loudly() -> None:
    with pytest.raises(ValueError, match="mode"):
        StructuredTeacher().teach([TeachRequest(chain_example(), "mbt-x")])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StructuredTeacher(max_tries=0)


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
    from mbt_online.teachers.structured import _CLIP_WORDS, _is_yes_no

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
        if _is_yes_no(ex):
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
