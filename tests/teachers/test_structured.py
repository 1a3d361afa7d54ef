"""Structured teacher (full style): MBT-S synthesis on the dev samples and a hand-made chain,
variation, determinism, and the retry loop of `teach`."""

from __future__ import annotations

import random

import pytest
from paths import SAMPLES
from teacher_cases import chain_example, examples, good_trace

from mbt_online.scoring.metrics import PHASES, contains_answer, detect_phases
from mbt_online.scoring.text import split_paragraphs, split_sentences
from mbt_online.tasks import Example
from mbt_online.teachers.contract import TeachRequest, count_words, verify
from mbt_online.teachers.structured import StructuredTeacher

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
