"""Reward components, their weighted total and the tier budget lookup, by hand."""

from __future__ import annotations

import pytest

from mbt_online.config import RewardConfig, RewardWeights
from mbt_online.scoring.metrics import diagnose
from mbt_online.scoring.rewards import reward_components, score, total_reward
from mbt_online.tasks.base import Example

DUNE = (
    "The question asks where the author of Dune was born. "
    "Document 2 says Frank Herbert wrote Dune. "
    "Document 4 says Frank Herbert was born in Tacoma. "
    "Wait, let me think again. "
    "Frank Herbert was born in Tacoma."
)


def _example(tier: str = "2hop") -> Example:
    return Example(
        id="q1",
        question="Where was the author of Dune born?",
        documents=[
            ("Dune", "Dune is a novel by Frank Herbert."),
            ("Frank Herbert", "Born in Tacoma."),
        ],
        answer="Tacoma",
        aliases=["Tacoma, Washington"],
        tier=tier,
    )


def test_components_of_an_answer_inclusive_trace():
    text = f"<think>{DUNE}</think><answer>Seattle</answer>"
    d = diagnose(text, "stop", 150, ["Tacoma"], budget=100)
    c = reward_components(d)
    assert c == pytest.approx(
        {
            "correct": 0.0,
            "format": 1.0,
            "degenerate": 0.0,
            "answer_inclusive": 1.0,
            "redundancy": 0.4,
            "over_budget": 0.5,
            "phases": 3 / 5,  # understanding, execution, self_correction
        }
    )


def test_components_cap_over_budget_and_flag_degeneration():
    d = diagnose("<think>" + "loop again " * 100, "length", 1000, ["Tacoma"], budget=100)
    c = reward_components(d)
    assert d.over_budget == pytest.approx(9.0)
    assert c["over_budget"] == 1.0
    assert c["degenerate"] == 1.0 and c["format"] == 0.0 and c["correct"] == 0.0
    assert c["answer_inclusive"] == 0.0


def test_total_reward_by_hand():
    components = {
        "correct": 1.0,
        "format": 1.0,
        "degenerate": 0.0,
        "answer_inclusive": 0.0,
        "redundancy": 0.4,
        "over_budget": 0.5,
        "phases": 0.6,
    }
    # defaults: 1*1 + 0.2*1 - 1*0 - 0.5*0 - 0.3*0.4 - 0.3*0.5 + 0.2*0.6 = 1.05
    assert total_reward(components, RewardWeights()) == pytest.approx(1.05)
    w = RewardWeights(correct=2.0, format=0.0, redundancy=-1.0, over_budget=0.0, phases=1.0)
    # 2*1 + 0 - 1*0.4 + 0 + 1*0.6 = 2.2
    assert total_reward(components, w) == pytest.approx(2.2)
    assert total_reward({}, RewardWeights()) == 0.0


def test_total_reward_rejects_unweighted_components():
    with pytest.raises(KeyError, match="lenght"):
        total_reward({"correct": 1.0, "lenght": 1.0}, RewardWeights())


def test_score_uses_tier_budget_and_aliases():
    cfg = RewardConfig(budgets={"2hop": 100, "4hop": 400}, default_budget=50)
    text = (
        "<think>Document 2 says he was born in Tacoma, Washington.</think>"
        "<answer>Tacoma, Washington</answer>"
    )
    d, comps, total = score(text, "stop", 150, _example("2hop"), cfg)
    assert d.budget == 100 and d.over_budget == pytest.approx(0.5)
    assert d.correct == 1.0 and d.em == 1.0  # alias matches exactly
    assert comps["phases"] == pytest.approx(1 / 5)  # execution only
    # 1 + 0.2 - 0.3*0 (one sentence, nothing after reach) - 0.3*0.5 + 0.2*0.2 = 1.09
    assert total == pytest.approx(1.09)
    assert total == pytest.approx(total_reward(comps, cfg.weights))

    d4, _, _ = score(text, "stop", 150, _example("4hop"), cfg)
    assert d4.budget == 400 and d4.over_budget == 0.0
    dn, _, _ = score(text, "stop", 150, _example(""), cfg)
    assert dn.budget == 50 and dn.over_budget == pytest.approx(2.0)


def test_score_uses_repetition_ngram():
    cfg2 = RewardConfig(repetition_ngram=2)
    cfg4 = RewardConfig(repetition_ngram=4)
    text = "a b a b c d"
    # bigrams: ab ba ab bc cd -> 1 of 5 repeats; 4-grams: abab babc abcd -> none
    assert score(text, "stop", 6, _example(), cfg2)[0].repetition == pytest.approx(1 / 5)
    assert score(text, "stop", 6, _example(), cfg4)[0].repetition == 0.0


def test_penalties_order_traces_as_intended():
    """Correct and concise beats answer-inclusive beats collapsed, under default weights."""
    cfg = RewardConfig(default_budget=100)
    ex = _example("")
    good = score(
        "<think>Document 2 says Tacoma.</think><answer>Tacoma</answer>", "stop", 40, ex, cfg
    )
    incl = score(f"<think>{DUNE}</think><answer>Seattle</answer>", "stop", 90, ex, cfg)
    loop = score("<think>" + "hmm wait " * 200, "length", 400, ex, cfg)
    assert good[2] > incl[2] > loop[2]
