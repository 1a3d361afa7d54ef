"""`eval.sampling.seeds`: the loop's EVAL and the `eval` command over several seeds, on the fake
drivers (tests/fakes.py): rows per seed, means over seeds, spread keys, single-seed unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeGenerator, Fakes, quick_datasets, run, tiny_config
from typer.testing import CliRunner

from mbt_online.config import Config
from mbt_online.evaluation import evaluate as evaluation
from mbt_online.rundir import load_rows, read_metrics, stage_dir
from mbt_online.scoring.round_metrics import summarize
from mbt_online.seeds import stage_seed

__all__ = ["quick_datasets"]
SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[Path, Fakes]:
    cfg = tiny_config(tmp_path_factory.mktemp("seeded"), **{"eval.sampling.seeds": "[0,1,2]"})
    fakes = Fakes(cfg)
    return run(cfg, fakes), fakes


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[Path, Fakes]:
    cfg = tiny_config(tmp_path_factory.mktemp("single"))
    fakes = Fakes(cfg)
    return run(cfg, fakes), fakes


def test_eval_draws_each_seed_and_rows_say_their_seed(seeded):
    run_dir, fakes = seeded
    evals = [c for c in fakes.of("generate") if c[3] == 3]  # the 3 eval questions
    assert len(evals) == 3 * 3  # one generate call per seed and round
    for r in (0, 1, 2):
        assert [c[2] for c in evals[3 * r : 3 * r + 3]] == [stage_seed(s, r, "eval") for s in SEEDS]
        rows = load_rows(stage_dir(run_dir, r, "eval"))
        assert [row["seed"] for row in rows] == [s for s in SEEDS for _ in range(3)]


def test_each_metric_is_the_mean_over_seeds_with_its_spread(seeded):
    run_dir, _ = seeded
    from mbt_online.config import load_config

    cfg = load_config(run_dir / "config.yaml")
    metrics = read_metrics(run_dir)
    for r, line in enumerate(metrics):
        rows = load_rows(stage_dir(run_dir, r, "eval"))
        per_seed = [
            summarize([x for x in rows if x["seed"] == s], cfg, metrics[:r], "eval") for s in SEEDS
        ]
        accs = [m["eval/accuracy"] for m in per_seed]
        assert line["eval/accuracy"] == pytest.approx(sum(accs) / 3)
        mu = sum(accs) / 3
        assert line["eval/accuracy_std"] == pytest.approx(
            (sum((a - mu) ** 2 for a in accs) / 2) ** 0.5
        )
        assert line["eval/seeds"] == 3 and line["eval/n"] == 9
        for key in ("accuracy", "mean_tokens", "degeneration_rate", "aes", "f1"):
            low, high = line[f"eval/{key}_ci_low"], line[f"eval/{key}_ci_high"]
            assert low <= line[f"eval/{key}"] + 1e-9 and line[f"eval/{key}"] <= high + 1e-9, key
        # 3 questions (9 trials): the interval over the questions is wide, never a point
        assert line["eval/accuracy_ci_high"] - line["eval/accuracy_ci_low"] > 0.3
        assert "eval/n_std" not in line


def test_one_seed_alone_or_among_others_draws_the_same(seeded, single):
    """The default seed (1234) in a list gives the rows a single-seed run gives."""
    run_dir, _ = single
    rows = load_rows(stage_dir(run_dir, 1, "eval"))
    assert {r["seed"] for r in rows} == {1234}
    line = read_metrics(run_dir)[1]
    assert not any(k.endswith(("_std", "_ci_low", "_ci_high")) for k in line)
    assert "eval/seeds" not in line
    seeded_dir, fakes = seeded

    def make_generator(cfg: Config, model_dir: str) -> FakeGenerator:
        return FakeGenerator(model_dir, fakes.answers, [])

    # the eval command on the single-seed run's round 1, with 1234 among other seeds
    out = evaluation.evaluate_round(run_dir, 1, seeds=[7, 1234], make_generator=make_generator)
    alone = evaluation.evaluate_round(run_dir, 1, make_generator=make_generator)
    assert {k: alone[k] for k in line if k.startswith("eval/")} == {
        k: v for k, v in line.items() if k.startswith("eval/")
    }
    assert out["eval/seeds"] == 2 and "eval/cover_ci_low" in out
    seven = evaluation.evaluate_round(run_dir, 1, seed=7, make_generator=make_generator)
    assert out["eval/accuracy"] == pytest.approx(
        (seven["eval/accuracy"] + alone["eval/accuracy"]) / 2
    )


def test_the_eval_command_replays_the_loops_seeded_evaluation(seeded):
    run_dir, fakes = seeded

    def make_generator(cfg: Config, model_dir: str) -> FakeGenerator:
        return FakeGenerator(model_dir, fakes.answers, [])

    out = evaluation.evaluate_round(run_dir, 2, make_generator=make_generator)
    logged = read_metrics(run_dir)[2]
    assert {k: out[k] for k in logged if k.startswith("eval/")} == {
        k: v for k, v in logged.items() if k.startswith("eval/")
    }


def test_the_round_table_shows_mean_plus_minus_half_interval(seeded, single, monkeypatch):
    import io

    from rich.console import Console

    from mbt_online.cli import common

    buf = io.StringIO()
    monkeypatch.setattr(common, "console", Console(file=buf, width=250))
    common.print_round_table(seeded[0])
    seeded_text = buf.getvalue()
    line = read_metrics(seeded[0])[1]
    half = (line["eval/accuracy_ci_high"] - line["eval/accuracy_ci_low"]) / 2
    assert f"{line['eval/accuracy']:.3f} ± {half:.3f}" in seeded_text
    assert seeded_text.count("±") == 3 * 5  # 3 rounds x the 5 headline metrics
    buf.truncate(0)
    common.print_round_table(single[0])
    plain = read_metrics(single[0])[1]
    assert "±" not in buf.getvalue() and f"{plain['eval/accuracy']:.3f}" in buf.getvalue()


def test_the_eval_command_takes_a_seed_list(seeded):
    from mbt_online.cli import app

    bad = CliRunner().invoke(app, ["eval", "--run", str(seeded[0]), "--seeds", "0,x"])
    assert bad.exit_code == 2 and "--seeds: expected a comma list" in bad.output
    twice = CliRunner().invoke(app, ["eval", "--run", str(seeded[0]), "--seeds", "1,1"])
    assert twice.exit_code == 2 and "seeds repeat" in twice.output


def test_eval_seeds_config_is_checked(tmp_path):
    from mbt_online.config import ConfigError

    for bad in ("[]", "[1,1]"):
        with pytest.raises(ConfigError, match="distinct seeds"):
            tiny_config(tmp_path, **{"eval.sampling.seeds": bad})
    with pytest.raises(ConfigError):
        tiny_config(tmp_path, **{"rollout.seeds": "[1,2]"})  # evaluation only


@pytest.mark.parametrize("where", ["eval", "eval-mark"])
def test_a_seeded_eval_killed_and_resumed_logs_the_same_metrics(
    where, seeded, tmp_path, monkeypatch
):
    """The intervals are seeded too: a resumed round logs exactly the uninterrupted run's line."""
    from fakes import Killed, artifacts
    from kills import KILLS

    reference = artifacts(seeded[0])
    cfg = tiny_config(tmp_path, **{"eval.sampling.seeds": "[0,1,2]"})
    fakes = Fakes(cfg)
    with monkeypatch.context() as mp:
        KILLS[where](mp, fakes)
        with pytest.raises(Killed):
            run(cfg, fakes)
    run_dir = run(cfg, Fakes(cfg), resume=True)
    assert artifacts(run_dir) == reference


def test_one_seed_on_the_command_line_overrides_a_runs_seed_list(seeded):
    run_dir, fakes = seeded

    def make_generator(cfg: Config, model_dir: str) -> FakeGenerator:
        return FakeGenerator(model_dir, fakes.answers, [])

    one = evaluation.evaluate_round(run_dir, 1, seed=0, make_generator=make_generator)
    assert "eval/seeds" not in one and "eval/accuracy_std" not in one
    rows = load_rows(stage_dir(run_dir, 1, "eval"))
    from mbt_online.config import load_config

    cfg = load_config(run_dir / "config.yaml")
    alone = summarize([r for r in rows if r["seed"] == 0], cfg, read_metrics(run_dir)[:1], "eval")
    assert one["eval/accuracy"] == alone["eval/accuracy"]  # seed 0's draw, as in the loop
    from mbt_online.config import ConfigError

    with pytest.raises(ConfigError, match="seeds: give one seed or a list"):
        evaluation.evaluate_round(run_dir, 1, seed=0, seeds=[1], make_generator=make_generator)
