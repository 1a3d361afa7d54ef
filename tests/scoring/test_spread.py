"""The eval intervals answer one question, how far a number would move on another draw of
questions and samples, and do so at their stated level: simulated evaluations of heterogeneous
questions, each with its own success probability and token mean, sampled several times."""

from __future__ import annotations

import numpy as np
import pytest

from mbt_online.config import load_config
from mbt_online.scoring.spread import COL, metric_functions, sum_intervals
from mbt_online.scoring.stats import wilson_interval

QUESTIONS, SAMPLES, EVALUATIONS = 200, 4, 1000
ACC_A, ACC_B = 2.0, 3.0  # each question's success probability ~ Beta(2, 3)
TOK_MU, TOK_SIGMA = 5.0, 0.3  # each question's token mean ~ lognormal: skewed, as lengths are
POP_ACCURACY = ACC_A / (ACC_A + ACC_B)  # 0.4
POP_TOKENS = float(np.exp(TOK_MU + TOK_SIGMA**2 / 2))  # 155.5


def simulated_sums(rng: np.random.Generator) -> np.ndarray:
    """One evaluation as `question_sums` gives it: per question, its samples' count, successes
    and tokens (Poisson around the question's own mean)."""
    p = rng.beta(ACC_A, ACC_B, QUESTIONS)
    mean_tokens = rng.lognormal(TOK_MU, TOK_SIGMA, QUESTIONS)
    sums = np.zeros((QUESTIONS, len(COL)))
    sums[:, COL["count"]] = SAMPLES
    sums[:, COL["correct"]] = rng.binomial(SAMPLES, p)
    sums[:, COL["tokens"]] = rng.poisson(mean_tokens[:, None], (QUESTIONS, SAMPLES)).sum(axis=1)
    return sums


def test_95_percent_intervals_cover_the_population_value_95_percent_of_the_time():
    fns = metric_functions(load_config(None, []), None)
    rng = np.random.default_rng(0)
    hits = {"accuracy": 0, "mean_tokens": 0, "pooled_wilson": 0}
    for _ in range(EVALUATIONS):
        sums = simulated_sums(rng)
        ci = sum_intervals(sums, ["accuracy", "mean_tokens"], fns)
        hits["accuracy"] += ci["accuracy"][0] <= POP_ACCURACY <= ci["accuracy"][1]
        hits["mean_tokens"] += ci["mean_tokens"][0] <= POP_TOKENS <= ci["mean_tokens"][1]
        # what the rates had before: Wilson over every pooled trial, as if each were a new draw
        low, high = wilson_interval(sums[:, COL["correct"]].sum(), QUESTIONS * SAMPLES)
        hits["pooled_wilson"] += low <= POP_ACCURACY <= high
    coverage = {k: v / EVALUATIONS for k, v in hits.items()}
    assert 0.93 <= coverage["accuracy"] <= 0.97, coverage
    assert 0.93 <= coverage["mean_tokens"] <= 0.97, coverage
    # questions differ (Beta(2, 3): variance 0.04), so a question's trials are not new draws:
    # a question mean varies by 0.04 + 0.2 / 4 = 0.09, the pooled interval assumes 0.24 / 4 =
    # 0.06, and is sqrt(0.06 / 0.09) = 0.82 of the needed width (coverage ~89%)
    assert coverage["pooled_wilson"] < 0.91, coverage


def test_rates_are_bootstrapped_over_questions_like_the_means():
    """A rate's interval is the percentile bootstrap of its per-question sums, on the very
    resamples the means use: widening with the spread between questions, not the trials."""
    fns = metric_functions(load_config(None, []), None)
    sums = np.zeros((100, len(COL)))
    sums[:, COL["count"]] = 10
    # half the questions always right, half always wrong: 1000 trials, but 100 draws
    sums[:50, COL["correct"]] = 10
    clustered = sum_intervals(sums, ["accuracy"], fns)["accuracy"]
    # se over questions sqrt(0.25 / 100) = 0.05: about 0.5 +- 0.098
    assert clustered == pytest.approx((0.40, 0.60), abs=0.015)
    # the pooled trials' Wilson interval would claim a third of that width
    wilson = wilson_interval(500, 1000)
    assert wilson[1] - wilson[0] == pytest.approx(0.062, abs=0.001)
    assert wilson[1] - wilson[0] < (clustered[1] - clustered[0]) / 3


def test_a_rate_at_zero_or_one_keeps_a_width_over_its_questions():
    fns = metric_functions(load_config(None, []), None)
    sums = np.zeros((50, len(COL)))
    sums[:, COL["count"]] = 4
    sums[:, COL["truncated"]] = 4  # every trace cut off
    out = sum_intervals(sums, ["accuracy", "degeneration_rate"], fns)
    assert out["accuracy"] == wilson_interval(0, 50)  # 50 questions, not 200 trials
    assert out["accuracy"][1] == pytest.approx(0.0713, abs=1e-4)
    assert out["degeneration_rate"] == wilson_interval(50, 50)
    assert out["degeneration_rate"][0] == pytest.approx(0.9287, abs=1e-4)
    none = sum_intervals(np.zeros((0, len(COL))), ["accuracy", "mean_tokens"], fns)
    assert none == {"accuracy": (0.0, 1.0)}  # nothing drawn: a rate could be anything
