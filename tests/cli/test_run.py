"""The command line as a user meets it: help text, data inspect, teach."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from paths import SAMPLES
from sweeps import PAPER_NAMES
from typer.testing import CliRunner

from mbt_online.cli.common import app
from mbt_online.cli.run import config_list
from mbt_online.config import shipped_configs


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mbt_online", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "cmd",
    [
        [],
        ["train"],
        ["eval"],
        ["data", "inspect"],
        ["teach"],
        ["judge"],
        ["models", "fetch"],
        ["sweep"],
        ["report"],
        ["config", "show"],
        ["config", "list"],
    ],
)
def test_every_command_has_help(cmd):
    out = cli(*cmd, "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout


@pytest.mark.parametrize("dataset", sorted(SAMPLES))
def test_data_inspect_json(dataset):
    out = cli("data", "inspect", "--dataset", dataset, "--path", str(SAMPLES[dataset]), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["loaded"] == summary["total"] and summary["loaded"] >= 100
    assert summary["skipped"] == 0 and summary["skipped_reasons"] == {}
    assert sum(summary["tiers"].values()) == summary["loaded"]
    assert summary["prompt_words"]["max"] >= summary["prompt_words"]["mean"] > 50


def test_data_inspect_counts_malformed_rows(tmp_path):
    rows = json.loads(SAMPLES["hotpotqa"].read_text())[:5]
    del rows[1]["question"]
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    path = tmp_path / "hotpot.jsonl"
    path.write_text("\n".join(lines))
    out = cli("data", "inspect", "--dataset", "hotpotqa", "--path", str(path), "--json")
    summary = json.loads(out.stdout)
    assert summary["loaded"] == 4 and summary["skipped"] == 2
    assert summary["skipped_reasons"] == {"missing_question": 1, "bad_json": 1}


def test_data_inspect_bad_arguments(tmp_path):
    out = cli("data", "inspect", "--dataset", "squad", "--path", str(SAMPLES["hotpotqa"]))
    assert out.returncode == 2 and "hotpotqa, musique, 2wikimultihopqa" in out.stderr
    out = cli("data", "inspect", "--dataset", "hotpotqa", "--path", str(tmp_path / "nope.json"))
    assert out.returncode == 2 and "file not found" in out.stderr


def test_eval_bad_distractors_named_before_any_work(tmp_path):
    hotpot = str(SAMPLES["hotpotqa"])
    out = cli(
        "eval",
        "--run",
        str(tmp_path),
        "--dataset",
        "hotpotqa",
        "--path",
        hotpot,
        "--distractors",
        "some",
    )
    assert (
        out.returncode == 2 and "--distractors: expected a count or 'all', got 'some'" in out.stderr
    )


def test_eval_save_never_overwrites_an_earlier_evaluation(tmp_path):
    (tmp_path / "eval-r3").mkdir()
    out = cli("eval", "--run", str(tmp_path), "--save", str(tmp_path / "eval-r3"))
    message = " ".join(out.stderr.split())  # the console wraps long lines
    assert out.returncode == 2 and "eval-r3 already exists; pick a new folder" in message


@pytest.mark.parametrize("dataset", sorted(SAMPLES))
def test_teach_mbt_s_verifies_most_of_each_sample(dataset, tmp_path):
    from datasets import load_from_disk

    out = cli(
        "teach",
        "--dataset",
        dataset,
        "--path",
        str(SAMPLES[dataset]),
        "--mode",
        "mbt-s",
        "--out",
        str(tmp_path / "t"),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["verified"] >= 0.95 * summary["total"]
    ds = load_from_disk(str(tmp_path / "t"))
    assert len(ds) == summary["total"]
    assert sum(ds["verified"]) == summary["verified"]


def test_teach_mbt_r_needs_drafts(tmp_path):
    out = cli(
        "teach",
        "--dataset",
        "hotpotqa",
        "--path",
        str(SAMPLES["hotpotqa"]),
        "--mode",
        "mbt-r",
        "--out",
        str(tmp_path / "t"),
    )
    assert out.returncode == 2 and "--drafts" in out.stderr


def test_models_fetch_unknown_name():
    out = cli("models", "fetch", "gpt-17")
    assert out.returncode == 2 and "smollm2-135m-instruct" in out.stderr


def test_judge_rejects_unknown_judge(tmp_path):
    out = cli("judge", "--run", str(tmp_path), "--round", "0", "--judges", "correctness,vibes")
    assert out.returncode == 2 and "unknown vibes" in out.stderr


def test_sweep_dry_run_lists_the_paper_rows():
    out = cli(
        "sweep", "mbt_online/configs/sweeps/paper-baselines.yaml", "--dry-run", "loop.rounds=1"
    )
    assert out.returncode == 0, out.stderr
    names = [
        line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("- name")
    ]
    assert names == PAPER_NAMES


# ---------------------------------------------------------------------------------------------
# config show / list, train --dry-run


def test_config_show_prints_the_quickstart():
    from mbt_online.config import Config, load_config

    out = cli("config", "show")
    assert out.returncode == 0, out.stderr
    shown = yaml.safe_load(out.stdout)
    assert shown == load_config().model_dump(mode="json")
    assert shown["run"]["name"] == "quickstart" != Config().run.name


def test_config_show_defaults_and_overrides():
    from mbt_online.config import Config

    out = cli("config", "show", "--defaults", "loop.rounds=1")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout) == Config(loop={"rounds": 1}).model_dump(mode="json")


def test_config_show_by_name_with_descriptions():
    out = cli("config", "show", "--config", "smollm2-smoke-cpu", "--explain")
    assert out.returncode == 0, out.stderr
    assert "# Run name, seed and directory." in out.stdout
    assert yaml.safe_load(out.stdout)["run"]["name"] == "smollm2-smoke"


def test_config_unknown_name_lists_the_shipped_ones():
    out = cli("config", "show", "--config", "smollm3")
    assert out.returncode == 2
    assert "quickstart" in out.stderr and "sweeps/paper-baselines" in out.stderr
    listed = cli("config", "list")
    assert listed.returncode == 0 and "smollm2-mhqa-cpu" in listed.stdout


def test_train_dry_run_shows_the_config_and_does_nothing(tmp_path):
    out = cli("train", "--dry-run", "--run-dir", str(tmp_path / "run"), "loop.rounds=1")
    assert out.returncode == 0, out.stderr
    shown = yaml.safe_load(out.stdout)
    assert shown["run"]["name"] == "quickstart" and shown["loop"]["rounds"] == 1
    assert f"# run directory: {tmp_path / 'run'}" in out.stdout
    assert not (tmp_path / "run").exists()


def test_train_help_points_to_the_config_reference():
    out = cli("train", "--help")
    assert "config show" in out.stdout and "configuration.md" in out.stdout
    assert "teacher (" in out.stdout  # the sections, from the schema's descriptions


def test_sweep_by_shipped_name():
    out = cli("sweep", "sweeps/paper-baselines", "--dry-run")
    assert out.returncode == 0, out.stderr
    names = [
        line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("- name")
    ]
    assert names == PAPER_NAMES


def test_config_list_names_every_shipped_config_once(capsys):
    config_list()
    out = capsys.readouterr().out
    starts = [line.split("  ", 1)[0] for line in out.splitlines()]
    assert [n for n in starts if n in shipped_configs()] == shipped_configs()
    assert "".join(out.rsplit("(in ", 1)[1].split()).endswith("/configs)")  # where they live


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--rounds", "2"], "--rounds extends a run with --resume"),
        (["train", "--allow-changed"], "--allow-changed accepts a changed run on --resume"),
        (["train", "--resume", ".", "loop.rounds=1"], "--resume takes the run's own config.yaml"),
        (["config", "show", "--defaults", "-c", "quickstart"], "--defaults shows the schema"),
    ],
)
def test_contradictory_flags_are_refused(args, message):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and message in " ".join(res.output.split())
