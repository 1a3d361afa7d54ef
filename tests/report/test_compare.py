"""Seeds in sweeps and `compare`: replicate names, `merge_seeds`, and the paired test on the
held-out questions two runs (or two members' replicates) share."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from fakes import Fakes, quick_datasets, run
from paths import CONFIGS_DIR
from rows import _row
from typer.testing import CliRunner

from mbt_online.cli import app
from mbt_online.config import ConfigError, dump_config, load_config
from mbt_online.report.compare import group_of, merge_seeds, paired_compare, seed_of
from mbt_online.rundir import read_metrics, save_rows, stage_dir, write_round_metrics
from mbt_online.sweeps.spec import expand, member_config

__all__ = ["quick_datasets"]
QUICKSTART = CONFIGS_DIR / "quickstart.yaml"


def test_group_and_seed_of_a_replicate_name():
    assert group_of("mbt-r-s2") == "mbt-r" and seed_of("mbt-r-s2") == 2
    assert group_of("mbt-r") == "mbt-r" and seed_of("mbt-r") is None
    assert group_of("lr-s1e-5") == "lr-s1e-5"  # not a seed suffix
    assert group_of("dpo_no-sft-s10") == "dpo_no-sft"


def test_merge_seeds_means_and_t_intervals_per_round():
    runs = [
        [{"round": 0, "eval/accuracy": 0.5, "eval/accuracy_ci_low": 0.4, "finished": True}],
        [{"round": 0, "eval/accuracy": 0.6}, {"round": 1, "eval/accuracy": 0.8}],
        [{"round": 0, "eval/accuracy": 0.7}, {"round": 1, "eval/accuracy": 0.9}],
    ]
    r0, r1 = merge_seeds(runs)
    assert r0["round"] == 0 and r0["eval/accuracy"] == pytest.approx(0.6)
    assert r0["eval/accuracy_std"] == pytest.approx(0.1) and r0["eval/accuracy_n"] == 3
    half = 4.303 * 0.1 / math.sqrt(3)  # t(0.975, 2 df)
    assert r0["eval/accuracy_ci_low"] == pytest.approx(0.6 - half)
    assert r0["eval/accuracy_ci_high"] == pytest.approx(0.6 + half)
    assert "finished" not in r0  # not a number to average
    assert r1["eval/accuracy_n"] == 2 and r1["eval/accuracy"] == pytest.approx(0.85)
    assert r1["eval/accuracy_ci_high"] - r1["eval/accuracy_ci_low"] == pytest.approx(
        2 * 12.706 * math.sqrt(0.005) / math.sqrt(2)
    )
    single = merge_seeds([[{"round": 0, "eval/accuracy": 0.5}]])[0]
    assert single["eval/accuracy_n"] == 1 and "eval/accuracy_ci_low" not in single


def _sweep(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\nbase: {QUICKSTART}\n{body}")
    return path


def test_sweep_seeds_repeat_every_member(tmp_path):
    path = _sweep(
        tmp_path,
        "seeds: [0, 3]\nmembers:\n  - name: mbt-r\n  - name: self\n"
        "    overrides: {teacher.mode: none}\n",
    )
    members = expand(path)
    assert [m.name for m in members] == ["mbt-r-s0", "mbt-r-s3", "self-s0", "self-s3"]
    from mbt_online.sweeps.spec import load_sweep

    cfg = member_config(load_sweep(path), members[3], tmp_path)
    assert cfg.run.name == "self-s3" and cfg.run.seed == 3 and cfg.rollout.seed == 3
    assert cfg.teacher.mode == "none"
    assert cfg.eval.sampling.seed == load_config(QUICKSTART).eval.sampling.seed  # one protocol
    assert [group_of(m.name) for m in members] == ["mbt-r", "mbt-r", "self", "self"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("seeds: [1, 1]\n", "seeds repeat"),
        ("seeds: []\n", "list of integers"),
        ("seeds: [a]\n", "list of integers"),
        ("seeds: [0]\noverrides: [run.seed=4]\n", "sets run.seed"),
    ],
)
def test_sweep_seeds_are_checked(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        expand(_sweep(tmp_path, body))


# ---------------------------------------------------------------------------------------------
# the paired test on hand-made runs: known answers on known questions


def make_run(root: Path, name: str, correct: list[bool], qids: list[str] | None = None) -> Path:
    """A finished round-0-and-1 run whose round-1 eval got `correct[i]` on question i."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    dump_config(load_config(None, [f"run.name={name}"]), run_dir / "config.yaml")
    qids = qids or [f"q{i}" for i in range(len(correct))]
    for r in (0, 1):
        rows = [
            _row(q, ok if r else False, 40 if ok else 60)
            for q, ok in zip(qids, correct, strict=True)
        ]
        save_rows(rows, stage_dir(run_dir, r, "eval"))
        acc = sum(ok for ok in correct) / len(correct) if r else 0.0
        write_round_metrics(run_dir, {"round": r, "eval/accuracy": acc})
    return run_dir


def test_a_clear_difference_excludes_zero_and_a_null_one_does_not(tmp_path):
    n = 100
    a = make_run(tmp_path, "a", [i % 5 < 3 for i in range(n)])  # 60 right
    b = make_run(tmp_path, "b", [i % 5 < 1 for i in range(n)])  # 20 right, a subset of A's
    out = paired_compare(a, b)
    assert out["round"] == 1 and out["pairs"] == 1 and out["n"] == n
    assert out["difference"] == pytest.approx(0.4) and out["excludes_zero"]
    # se = sqrt(0.4 * 0.6 / 100) = 0.049: about [0.30, 0.50]
    assert out["ci_low"] == pytest.approx(0.30, abs=0.02)
    assert out["ci_high"] == pytest.approx(0.50, abs=0.02)
    assert out["a"]["mean"] == pytest.approx(0.6) and out["a"]["interval_over"] == "questions"
    # a bootstrap over the 100 questions: 0.6 +- 1.96 * sqrt(0.24 / 100) = 0.6 +- 0.096
    assert out["a"]["ci_low"] == pytest.approx(0.504, abs=0.02)
    assert out["a"]["ci_high"] == pytest.approx(0.696, abs=0.02)
    # the same number of right answers on other questions: no difference
    c = make_run(tmp_path, "c", [i % 5 in (1, 2, 4) for i in range(n)])
    same = paired_compare(a, c)
    assert same["difference"] == 0.0 and not same["excludes_zero"]
    tokens = paired_compare(a, b, metric="mean_tokens")
    assert tokens["difference"] == pytest.approx(-8.0)  # 40 tokens right, 60 wrong
    with pytest.raises(ConfigError, match="metric"):
        paired_compare(a, b, metric="nope")


def test_a_rate_is_bootstrapped_over_questions_not_trials(tmp_path):
    """Four samples of each of 25 questions, each question right or wrong on all four: 100
    trials but 25 draws, so the interval is twice as wide as the pooled trials' would be."""
    qids = [f"q{i // 4}" for i in range(100)]
    a = make_run(tmp_path, "a", [i < 60 for i in range(100)], qids)
    side = paired_compare(a, a)["a"]
    assert (side["interval_over"], side["n"], side["mean"]) == ("questions", 25, 0.6)
    # 0.6 +- 1.96 * sqrt(0.24 / 25) = 0.6 +- 0.19 (the 100 trials would claim +- 0.096)
    assert side["ci_low"] == pytest.approx(0.41, abs=0.03)
    assert side["ci_high"] == pytest.approx(0.79, abs=0.03)
    # every question wrong: the interval keeps a width over the 25 questions (Wilson)
    none = paired_compare(make_run(tmp_path, "z", [False] * 100, qids), a)["a"]
    assert (none["mean"], none["ci_low"]) == (0.0, 0.0)
    assert none["ci_high"] == pytest.approx(3.8416 / (25 + 3.8416))


def test_runs_on_different_questions_are_refused(tmp_path):
    a = make_run(tmp_path, "a", [True] * 10)
    other = make_run(tmp_path, "b", [True] * 10, [f"x{i}" for i in range(10)])
    with pytest.raises(ConfigError, match="different held-out questions .0 shared of 10 / 10"):
        paired_compare(a, other)


def test_groups_pair_their_replicates_by_seed(tmp_path):
    sweep = tmp_path / "sweep"
    for s in (0, 1, 2):
        make_run(sweep, f"mbt-r-s{s}", [i % 10 < 5 + s for i in range(50)])
        make_run(sweep, f"self-s{s}", [i % 10 < 3 for i in range(50)])
    make_run(sweep, "self-s9", [False] * 50)  # no partner: left out
    out = paired_compare("mbt-r", "self", sweep_dir=sweep)
    assert out["pairs"] == 3 and out["n"] == 50
    assert out["difference"] == pytest.approx(0.3)  # (0.2 + 0.3 + 0.4) / 3
    assert out["excludes_zero"]
    assert out["a"]["interval_over"] == "seeds" and out["a"]["n"] == 3
    assert out["a"]["mean"] == pytest.approx(0.6)
    half = 4.303 * 0.1 / math.sqrt(3)
    assert out["a"]["ci_high"] == pytest.approx(0.6 + half)
    assert out["b"]["n"] == 4  # self-s9 is one of its seeds
    # a path to the member works as well as a member name in --sweep-dir
    assert paired_compare(sweep / "mbt-r", sweep / "self")["difference"] == out["difference"]
    with pytest.raises(ConfigError, match="neither a run directory nor a sweep member"):
        paired_compare("nobody", "self", sweep_dir=sweep)


def test_the_compare_command(tmp_path):
    a = make_run(tmp_path, "a", [i % 5 < 3 for i in range(100)])
    b = make_run(tmp_path, "b", [i % 5 < 1 for i in range(100)])
    shown = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert shown.exit_code == 0, shown.output
    assert "difference A - B: +0.400" in shown.output and "excludes zero" in shown.output
    assert "a: 0.600 [" in shown.output and "n=100 (questions)" in shown.output
    as_json = CliRunner().invoke(app, ["compare", str(a), str(b), "--json", "--round", "0"])
    out = json.loads(as_json.output)
    assert out["round"] == 0 and out["difference"] == 0.0 and not out["excludes_zero"]
    refused = CliRunner().invoke(app, ["compare", str(a), str(tmp_path / "none")])
    assert refused.exit_code == 2 and "neither a run directory" in " ".join(refused.output.split())


def test_three_seeds_of_two_members_flow_to_a_paired_difference(tmp_path):
    """The sweep's seed replicates of MBT-R and self-distillation (teacher.mode none), run on
    the fake drivers, compared by member name: the paired difference is the mean over seeds and
    questions of the per-question differences the eval rows hold."""
    from mbt_online.rundir import load_rows
    from mbt_online.sweeps.spec import load_sweep

    body = (
        "seeds: [0, 1, 2]\noverrides: {loop.rounds: 1, data.train.limit: 4, data.eval.limit: 6,"
        " world.questions: 12, rollout.samples: 2, tracking.wandb_mode: disabled,"
        " eval.sampling.seeds: [5, 6]}\nmembers:\n  - name: mbt-r\n  - name: self\n"
        # the fake generator serves a model by its path inside the run: a different eval seed
        # stands in for the different student self-distillation would train
        "    overrides: {teacher.mode: none, eval.sampling.seeds: [7, 8]}\n"
    )
    sweep = _sweep(tmp_path, body)
    out_dir = tmp_path / "runs"
    for member in expand(sweep):
        cfg = member_config(load_sweep(sweep), member, out_dir)
        run(cfg, Fakes(cfg))
    for s in (0, 1, 2):
        line = read_metrics(out_dir / f"mbt-r-s{s}")[1]
        assert line["eval/seeds"] == 2 and "eval/accuracy_ci_low" in line
    result = paired_compare("mbt-r", "self", sweep_dir=out_dir)
    diffs = []
    for s in (0, 1, 2):
        rows_a = load_rows(stage_dir(out_dir / f"mbt-r-s{s}", 1, "eval"))
        rows_b = load_rows(stage_dir(out_dir / f"self-s{s}", 1, "eval"))
        diffs.append(
            sum(r["correct"] for r in rows_a) / 12 - sum(r["correct"] for r in rows_b) / 12
        )
    assert result["pairs"] == 3 and result["n"] == 6
    assert result["difference"] == pytest.approx(sum(diffs) / 3)
    assert result["ci_low"] <= result["difference"] <= result["ci_high"]
    shown = CliRunner().invoke(app, ["compare", "mbt-r", "self", "--sweep-dir", str(out_dir)])
    assert shown.exit_code == 0 and "difference A - B:" in shown.output


def test_the_shipped_seed_sweep_expands_to_three_replicates_per_member(tmp_path):
    from mbt_online.config import resolve_config
    from mbt_online.sweeps.spec import load_sweep

    path = resolve_config("sweeps/quickstart-seeds")
    members = expand(path)
    assert [m.name for m in members] == [
        *(f"self-distill-s{s}" for s in (0, 1, 2)),
        *(f"mbt-r-s{s}" for s in (0, 1, 2)),
    ]
    cfgs = [member_config(load_sweep(path), m, tmp_path) for m in members]
    assert [c.run.seed for c in cfgs] == [0, 1, 2, 0, 1, 2]
    assert {c.eval.sampling.seed for c in cfgs} == {1234}
    assert all(c.eval.sampling.seeds == [1234, 1, 2] for c in cfgs)
    assert [c.teacher.mode for c in cfgs[::3]] == ["none", "mbt-r"]


def test_seed_keys_make_each_replicate_a_new_student_and_the_endpoint_is_kept(tmp_path):
    from mbt_online.sweeps.spec import load_sweep

    path = _sweep(
        tmp_path,
        "seeds: [1, 2]\nseed_keys: [run.seed, rollout.seed, bootstrap.seed, eval.sampling.seed]\n"
        "endpoint: {metric: eval/accuracy, treatment: mbt-r, control: self}\n"
        "members:\n  - name: mbt-r\n  - name: self\n    overrides: {teacher.mode: none}\n",
    )
    sweep = load_sweep(path)
    assert sweep.endpoint == {"metric": "eval/accuracy", "treatment": "mbt-r", "control": "self"}
    cfgs = [member_config(sweep, m, tmp_path) for m in expand(path)]
    assert [(c.run.seed, c.bootstrap.seed, c.eval.sampling.seed) for c in cfgs] == [
        (1, 1, 1),
        (2, 2, 2),
        (1, 1, 1),
        (2, 2, 2),
    ]
    with pytest.raises(ConfigError, match="seed_keys"):
        expand(_sweep(tmp_path, "seeds: [1]\nseed_keys: [bootstrap.seed]\n"))
    with pytest.raises(ConfigError, match="endpoint"):
        expand(_sweep(tmp_path, "endpoint: [accuracy]\n"))


def test_a_tier_is_compared_on_its_own_questions(tmp_path):
    def tiered(name: str, correct: list[bool]) -> Path:
        run_dir = tmp_path / name
        run_dir.mkdir()
        dump_config(load_config(None, [f"run.name={name}"]), run_dir / "config.yaml")
        for r in (0, 1):
            rows = [
                _row(f"q{i}", ok and r == 1, 40, tier="shifted" if i % 2 else "hard")
                for i, ok in enumerate(correct)
            ]
            save_rows(rows, stage_dir(run_dir, r, "eval"))
            write_round_metrics(run_dir, {"round": r})
        return run_dir

    n = 60
    # A is right on every odd (shifted) question, B on none; on the hard ones both on all
    a = tiered("a", [True] * n)
    b = tiered("b", [i % 2 == 0 for i in range(n)])
    assert paired_compare(a, b, metric="shifted/accuracy")["difference"] == pytest.approx(1.0)
    assert paired_compare(a, b, metric="hard/accuracy")["difference"] == 0.0
    assert paired_compare(a, b)["difference"] == pytest.approx(0.5)
    assert paired_compare(a, b, metric="shifted/accuracy")["n"] == n // 2
    with pytest.raises(ConfigError, match="tier 'easy'"):
        paired_compare(a, b, metric="easy/accuracy")
