"""The spread helpers: Wilson interval, bootstrap of a mean, paired bootstrap, and the eval
intervals built from them (`scoring.spread`)."""

from __future__ import annotations

import json
import random

import pytest
from rows import _row

from mbt_online.config import load_config
from mbt_online.scoring.round_metrics import summarize
from mbt_online.scoring.spread import eval_intervals
from mbt_online.scoring.stats import (
    bootstrap_mean_ci,
    paired_bootstrap,
    std,
    wilson_interval,
)


def test_wilson_200_trials_at_half():
    low, high = wilson_interval(100, 200)
    assert low == pytest.approx(0.4314, abs=5e-4) and high == pytest.approx(0.5686, abs=5e-4)


def test_wilson_stays_inside_zero_one_and_keeps_a_width_at_the_edges():
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.15 < high < 0.17  # 0/20 is not "certainly 0"
    low, high = wilson_interval(20, 20)
    assert 0.83 < low < 0.85 and high == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # a wider interval for fewer trials, and a narrower one for a smaller z
    assert wilson_interval(10, 20)[1] > wilson_interval(100, 200)[1]
    assert wilson_interval(100, 200, z=1.0)[1] < wilson_interval(100, 200)[1]


def test_std_over_seeds():
    assert std([0.5]) == 0.0
    assert std([1.0, 2.0, 3.0]) == pytest.approx(1.0)


def test_bootstrap_mean_ci_covers_the_mean_and_shrinks_with_n():
    rng = random.Random(0)
    small = [rng.gauss(10, 2) for _ in range(25)]
    big = [rng.gauss(10, 2) for _ in range(400)]
    lo_s, hi_s = bootstrap_mean_ci(small, n_boot=2000, seed=0)
    lo_b, hi_b = bootstrap_mean_ci(big, n_boot=2000, seed=0)
    assert lo_s < sum(small) / 25 < hi_s
    # about 2 * 1.96 * sigma / sqrt(n): 1.57 for 25 values, 0.39 for 400
    assert 1.1 < hi_s - lo_s < 2.1 and 0.3 < hi_b - lo_b < 0.5
    assert bootstrap_mean_ci(small, seed=0) == bootstrap_mean_ci(small, seed=0)  # seeded
    assert bootstrap_mean_ci([3.0]) == (3.0, 3.0)


def test_paired_bootstrap_finds_a_clear_difference_and_not_a_null_one():
    # 200 questions, shuffled: A right on 120, B on 80 of the same (B's a subset of A's)
    order = list(range(200))
    random.Random(1).shuffle(order)
    a = [float(i < 120) for i in order]
    b = [float(i < 80) for i in order]
    clear = paired_bootstrap([x - y for x, y in zip(a, b, strict=True)], seed=0)
    assert clear.difference == pytest.approx(0.2)
    # se = sqrt(0.2 * 0.8 / 200) = 0.028: about [0.145, 0.255]
    assert clear.excludes_zero
    assert clear.ci_low == pytest.approx(0.145, abs=0.015)
    assert clear.ci_high == pytest.approx(0.255, abs=0.015)
    assert clear.n == 200
    # zero-mean differences: +1 and -1 equally often
    null = paired_bootstrap([1.0, -1.0] * 100, seed=0)
    assert null.difference == 0.0 and not null.excludes_zero
    assert null.ci_low < 0 < null.ci_high
    with pytest.raises(ValueError, match="no shared questions"):
        paired_bootstrap([])


def test_eval_intervals_bootstrap_over_questions_for_rates_and_means():
    cfg = load_config(None, [])
    rng = random.Random(2)
    # 50 questions x 4 trials: each question's trials share its difficulty (clustered)
    rows = []
    for q in range(50):
        p, length = rng.random(), rng.randint(20, 90)
        rows += [_row(f"q{q}", rng.random() < p, length + rng.randint(0, 5)) for _ in range(4)]
    m = summarize(rows, cfg, [], "eval")
    keys = ["eval/accuracy", "eval/mean_tokens", "eval/aes", "eval/2hop/accuracy"]
    cis = eval_intervals(rows, keys, cfg, base=None)
    k = sum(json.loads(r["diagnostics"])["correct"] for r in rows)
    lo, hi = cis["eval/accuracy"]
    assert lo < k / 200 < hi
    # 50 question means of 4 clustered trials: wider than Wilson over 200 independent trials
    w_lo, w_hi = wilson_interval(k, 200)
    assert hi - lo > 1.2 * (w_hi - w_lo)
    assert cis["eval/2hop/accuracy"] == cis["eval/accuracy"]  # every row is 2hop
    lo, hi = cis["eval/mean_tokens"]
    assert lo < m["eval/mean_tokens"] < hi
    # over questions, not traces: 50 question means of ~U(20, 95) give a half-width near
    # 1.96 * 20 / sqrt(50) = 5.5; treating 200 clustered traces as independent would give ~3
    assert 8 < hi - lo < 14
    assert cis["eval/aes"] == (0.0, 0.0)  # round 0 is its own baseline on every resample
    with_base = eval_intervals(rows, ["eval/aes"], cfg, base=(0.2, 100.0))
    assert with_base["eval/aes"][0] > 0  # a higher accuracy, shorter than the baseline
