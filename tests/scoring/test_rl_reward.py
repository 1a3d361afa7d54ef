"""The reward GRPO optimises: its guards against what RL finds, on scored rows."""

from __future__ import annotations

import json

import pytest

from mbt_online.config import Config, load_config
from mbt_online.scoring.rl_reward import (
    RL_COMPONENTS,
    correct_margin,
    grpo_samples,
    overlong,
    rl_components,
    rl_reward,
    rl_weights,
)
from mbt_online.scoring.rows import scored_row
from mbt_online.tasks.base import Example

EX = Example(id="q1", question="Where?", documents=[("Paris", "It is Paris.")], answer="Paris")
CAP = 100


def row(text: str, tokens: int, sample: int = 0, finish: str = "stop", ex: Example = EX) -> dict:
    raw = {
        "example_id": ex.id,
        "sample": sample,
        "completion": text,
        "finish_reason": finish,
        "tokens": tokens,
        "prompt_tokens": 5,
        "prompt_ids": [1, 2],
        "completion_ids": [3] * tokens,
        "logprobs": [-0.5] * tokens,
        "prompt": json.dumps([{"role": "user", "content": ex.question}]),
    }
    return scored_row(ex, raw, Config())


def reward_of(r: dict, cfg: Config | None = None) -> float:
    cfg = cfg or Config()
    guard = cfg.train.grpo.reward
    return rl_reward(rl_components(r, CAP, guard), rl_weights(cfg.reward.weights, guard))


RAMBLE = "<think>The document says Paris. " + "I read the documents again. " * 30 + "</think>"
LONG_CORRECT = RAMBLE + "<answer>Paris</answer>"
SHORT_WRONG = "<think>London.</think><answer>London</answer>"


def test_a_short_wrong_answer_never_beats_a_long_correct_one():
    long_correct, short_wrong = row(LONG_CORRECT, 95), row(SHORT_WRONG, 6)
    comps = rl_components(long_correct, CAP, Config().train.grpo.reward)
    assert comps["redundancy"] > 0 and comps["overlong"] == pytest.approx(0.75)
    assert reward_of(long_correct) > reward_of(short_wrong)
    # the waste penalties are gated by correctness: a wrong answer pays none of them
    wrong = rl_components(short_wrong, CAP, Config().train.grpo.reward)
    assert wrong["correct"] == wrong["redundancy"] == wrong["over_budget"] == 0.0


def test_a_list_of_candidates_does_not_count_as_correct():
    listed = row("<think>Paris or London.</think><answer>Paris or London or Rome</answer>", 12)
    assert listed["correct"] == 1.0  # the scorer's cover match pays the list...
    assert rl_components(listed, CAP, Config().train.grpo.reward)["correct"] == 0.0  # ...RL's not
    exact = row("<think>Paris.</think><answer>Paris</answer>", 8)
    assert rl_components(exact, CAP, Config().train.grpo.reward)["correct"] == 1.0


def test_the_overlong_ramp_starts_before_the_cap_and_is_full_at_it():
    assert [overlong(t, 100, 0.8) for t in (0, 80, 90, 100, 120)] == [0, 0, 0.5, 1, 1]
    assert overlong(50, 100, 0.0) == 0.5


def test_phase_cue_words_pay_nothing_unless_asked():
    text = "<think>Goal: find it. Plan: read. Check: verified.</think><answer>Paris</answer>"
    phased = row(text, 20)
    assert json.loads(phased["components"])["phases"] > 0
    assert rl_components(phased, CAP, Config().train.grpo.reward)["phases"] == 0.0
    cfg = load_config(None, ["train.grpo.reward.phase_bonus=true"])
    assert rl_components(phased, CAP, cfg.train.grpo.reward)["phases"] > 0


def test_the_correct_margin_flags_weights_that_let_brevity_win():
    default = rl_weights(Config().reward.weights, Config().train.grpo.reward)
    assert correct_margin(default) == pytest.approx(1.0 - 0.3 - 0.3 - 0.2)
    cfg = load_config(None, ["reward.weights.redundancy=-0.9", "reward.weights.over_budget=-0.5"])
    assert correct_margin(rl_weights(cfg.reward.weights, cfg.train.grpo.reward)) < 0


def test_all_equal_groups_are_dropped_and_counted():
    q2 = Example(id="q2", question="Who?", documents=[("A", "A is B.")], answer="B")
    varied = [row(LONG_CORRECT, 95, 0), row(SHORT_WRONG, 6, 1)]
    same = [row(SHORT_WRONG, 6, k, ex=q2) for k in range(2)]
    rows, stats = grpo_samples(
        varied + same, CAP, Config().reward.weights, Config().train.grpo.reward
    )
    assert stats == {
        "train/grpo_groups": 2.0,
        "train/grpo_dropped_groups": 1.0,
        "train/grpo_samples": 2.0,
    }
    assert [(r["example_id"], r["sample"]) for r in rows] == [("q1", 0), ("q1", 1)]
    assert rows[0]["completion_ids"] == [3] * 95 and rows[0]["logprobs"] == [-0.5] * 95
    assert rows[0]["rl_reward"] == pytest.approx(reward_of(varied[0]))
    assert {f"rl_{k}" for k in RL_COMPONENTS} <= set(rows[0])
