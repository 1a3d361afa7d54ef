"""EM / F1 as each benchmark's official script computes them, and the paper's substring cover.

Every expected value below was worked out by hand from the official rules, not by running the
code: HotpotQA's `hotpot_evaluate_v1.py` and 2WikiMultihopQA's `2wikimultihop_evaluate_v1.1.py`
(F1 is 0 when either normalised side is yes / no / noanswer and they differ; an empty side has
nothing in common, so F1 0; max over the answer and its aliases) and MuSiQue's `evaluate_v1.0`
answer metric (SQuAD v2.0 `compute_f1`: no yes / no rule, empty vs empty is 1; max over the answer
and its aliases). EM is normalised equality in all three.
"""

from __future__ import annotations

import json

import pytest

from mbt_online.config import Config, RewardConfig
from mbt_online.scoring.metrics import (
    cover_match,
    cover_substring,
    diagnose,
    exact_match,
    f1_score,
    official_rule,
)
from mbt_online.scoring.rewards import score
from mbt_online.scoring.round_metrics import summarize
from mbt_online.scoring.rows import scored_row
from mbt_online.scoring.text import normalize_answer
from mbt_online.tasks.base import Example

# --------------------------------------------------------------------------------------------------
# Normalisation, the same in all three scripts: lower, drop ASCII punctuation, drop articles, squash


def test_normalisation_order_of_the_official_scripts():
    assert normalize_answer("A.n apple") == "apple"  # punctuation goes first, then "an"
    assert normalize_answer("Tolkien\u2019s") == "tolkien\u2019s"  # only `string.punctuation`
    assert normalize_answer("the\u00a0Beatles") == "beatles"  # str.split() splits NBSP
    assert normalize_answer("Theatre") == "theatre"  # articles only as whole words


# --------------------------------------------------------------------------------------------------
# HotpotQA


@pytest.mark.parametrize(
    ("pred", "gold", "f1"),
    [
        ("yes it is", "yes", 0.0),  # gold is "yes" and they differ; SQuAD would give 0.5
        ("no answer", "no", 0.0),  # "no answer" is not "noanswer", but the gold "no" is listed
        ("no", "no way", 0.0),  # the prediction "no" is listed; SQuAD would give 2/3
        ("No answer", "noanswer", 0.0),  # gold "noanswer", prediction "no answer": differ
        ("noanswer", "noanswer", 1.0),  # equal: the rule does not apply
        ("Yes.", "yes", 1.0),  # punctuation goes before the comparison
        ("yes", "no", 0.0),
        ("The", "a", 0.0),  # both normalise to "": nothing in common; SQuAD v2.0 would give 1
        ("", "Paris", 0.0),
        ("Eiffel Tower in Paris", "the Eiffel Tower", 2 / 3),  # p 2/4, r 2/2
        ("new york city hall", "New York City, a place", 0.75),  # p 3/4, r 3/4
    ],
)
def test_hotpotqa_f1(pred, gold, f1):
    assert f1_score(pred, [gold], "hotpotqa") == f1


@pytest.mark.parametrize(
    ("pred", "gold", "em"),
    [
        ("the Eiffel Tower", "Eiffel Tower", 1.0),
        ("Eiffel Tower!", "The eiffel  tower", 1.0),
        ("The", "a", 1.0),  # "" == "": EM has no empty-answer rule
        ("no answer", "noanswer", 0.0),  # whitespace stays a token boundary
        ("Eiffel Tower in Paris", "Eiffel Tower", 0.0),
    ],
)
def test_hotpotqa_em(pred, gold, em):
    assert exact_match(pred, [gold]) == em


def test_hotpotqa_missing_answer_scores_zero():
    assert f1_score(None, ["yes"], "hotpotqa") == 0.0
    assert exact_match(None, ["yes"]) == 0.0


# --------------------------------------------------------------------------------------------------
# 2WikiMultihopQA: HotpotQA's rule per gold, max over the answer and its id_aliases

USA = ["United States", "USA", "America"]


def test_2wiki_yes_no_rule():
    assert official_rule("2wikimultihopqa") == "hotpotqa"
    assert f1_score("No, he was not.", ["no"], "2wikimultihopqa") == 0.0  # SQuAD: 0.4
    assert f1_score("yes", ["Yes"], "2wikimultihopqa") == 1.0
    assert f1_score("yes", ["no"], "2wikimultihopqa") == 0.0
    assert f1_score("no", ["No Man's Land"], "2wikimultihopqa") == 0.0  # SQuAD: 0.5


def test_2wiki_max_over_aliases():
    assert exact_match("America", USA) == 1.0
    assert f1_score("America", USA, "2wikimultihopqa") == 1.0
    # "united states of america": 2/3 against "united states", 0.4 against "america", 0 "usa"
    assert f1_score("the United States of America", USA, "2wikimultihopqa") == 2 / 3
    # the rule is applied per gold, then the best kept: "no" against ["No.", "Norway"]
    assert f1_score("no", ["Norway", "No."], "2wikimultihopqa") == 1.0


# --------------------------------------------------------------------------------------------------
# MuSiQue: SQuAD v2.0 per gold, max over the answer and its aliases

GB = ["Kingdom of Great Britain", "Great Britain", "UK"]


def test_musique_max_over_answer_and_aliases():
    assert official_rule("musique") == "squad"
    assert exact_match("Great Britain", GB) == 1.0
    assert exact_match("the U.K.", GB) == 1.0  # "uk" after punctuation and articles go
    assert f1_score("Great Britain", GB, "musique") == 1.0
    # "great britain empire": 4/7 against the answer (p 2/3, r 2/4), 0.8 against the alias
    assert f1_score("the Great Britain empire", GB, "musique") == pytest.approx(0.8)
    assert f1_score("the Great Britain empire", GB[:1], "musique") == pytest.approx(4 / 7)


def test_musique_has_no_yes_no_rule_and_scores_empty_pairs_as_squad_v2():
    assert f1_score("no answer", ["no"], "musique") == pytest.approx(2 / 3)  # HotpotQA: 0
    assert f1_score("yes it is", ["yes"], "musique") == pytest.approx(0.5)
    assert f1_score("The", ["An"], "musique") == 1.0  # both empty: "they agree"
    assert f1_score("", ["Paris"], "musique") == 0.0
    assert f1_score(None, ["Paris"], "musique") == 0.0


# --------------------------------------------------------------------------------------------------
# The world task and unknown sources


def test_world_uses_the_hotpotqa_rule_and_unknown_sources_plain_squad():
    assert official_rule("world") == "hotpotqa"
    assert f1_score("no", ["No Man's Land"], "world") == 0.0
    assert official_rule("") == official_rule("some-new-set") == "squad"
    assert f1_score("no", ["No Man's Land"]) == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------------
# The benchmark reaches the per-row diagnostics


def _example(source: str, answer: str = "no") -> Example:
    return Example(id="q", question="Is it?", documents=[("T", "x")], answer=answer, source=source)


def test_diagnose_and_score_follow_the_example_benchmark():
    text = "<think>The document says no.</think><answer>no answer</answer>"
    assert diagnose(text, "stop", 9, ["no"], 100, benchmark="hotpotqa").f1 == 0.0
    hot, _, _ = score(text, "stop", 9, _example("hotpotqa"), RewardConfig())
    wiki, _, _ = score(text, "stop", 9, _example("2wikimultihopqa"), RewardConfig())
    mus, _, _ = score(text, "stop", 9, _example("musique"), RewardConfig())
    assert hot.f1 == wiki.f1 == 0.0
    assert mus.f1 == pytest.approx(2 / 3)
    assert hot.correct == mus.correct == 1.0  # the reward's cover is the same for every benchmark


def test_scored_row_carries_official_f1_and_substring_cover():
    raw = {"example_id": "q", "completion": "<answer>Knowles</answer>", "finish_reason": "stop"}
    row = scored_row(_example("hotpotqa"), {**raw, "tokens": 3}, Config())
    d = json.loads(row["diagnostics"])
    assert d["cover_substring"] == 1.0 and d["correct"] == 0.0  # "no" inside "knowles"
    assert d["f1"] == 0.0 and d["em"] == 0.0


# --------------------------------------------------------------------------------------------------
# The paper's substring cover, beside the whole-word one


@pytest.mark.parametrize(
    ("pred", "golds", "substring", "whole_word"),
    [
        ("Patric Knowles", ["no"], 1.0, 0.0),  # the paper counts "no" inside "Knowles"
        ("1990", ["19"], 1.0, 0.0),
        ("It was Frank Herbert.", ["Herbert"], 1.0, 1.0),
        ("Herbert", ["Frank Herbert"], 0.0, 0.0),
        ("Stephen Kings novel", ["Stephen King's"], 1.0, 0.0),  # "stephen kings" either way
        ("Jay-Z", ["Jay Z"], 0.0, 1.0),  # SQuAD drops "-": "jayz" does not contain "jay z"
        ("the UK", ["Kingdom of Great Britain", "UK"], 1.0, 1.0),  # max over aliases
        ("anything", ["The"], 0.0, 0.0),  # a gold that normalises to nothing is skipped
        (None, ["Paris"], 0.0, 0.0),
    ],
)
def test_cover_substring_beside_whole_word_cover(pred, golds, substring, whole_word):
    assert cover_substring(pred, golds) == substring
    assert cover_match(pred, golds) == whole_word


def _row(source: str, answer: str, predicted: str) -> dict:
    text = f"<answer>{predicted}</answer>"
    d = diagnose(text, "stop", 5, [answer], 100, benchmark=source)
    comps = {"correct": d.correct}
    return {
        "tier": "",
        "source": source,
        "diagnostics": json.dumps(d.__dict__),
        "components": json.dumps(comps),
        "reward": d.correct,
    }


def test_summarize_logs_cover_substring_and_official_scores_per_benchmark():
    rows = [
        _row("hotpotqa", "no", "Knowles"),  # substring hit, whole-word miss
        _row("hotpotqa", "yes", "yes it is"),  # whole-word hit, F1 0 under HotpotQA's rule
        _row("musique", "no", "no answer"),  # F1 2/3 under SQuAD
    ]
    out = summarize(rows, Config(), [], prefix="eval")
    assert out["eval/cover_substring"] == pytest.approx(1.0)
    assert out["eval/accuracy"] == pytest.approx(2 / 3)  # accuracy stays the whole-word cover
    assert out["eval/f1"] == pytest.approx((0 + 0 + 2 / 3) / 3)
    assert out["eval/hotpotqa/cover_substring"] == 1.0 and out["eval/hotpotqa/f1"] == 0.0
    assert out["eval/musique/f1"] == pytest.approx(2 / 3) and out["eval/musique/em"] == 0.0
