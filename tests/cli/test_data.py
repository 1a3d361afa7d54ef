"""`data inspect` on the shipped dev samples."""

from __future__ import annotations

import json

import pytest
import typer
from paths import SAMPLES
from typer.testing import CliRunner

from mbt_online.cli.common import app
from mbt_online.cli.data import inspect_summary


def test_the_hotpotqa_sample_summary():
    summary = inspect_summary("hotpotqa", SAMPLES["hotpotqa"])
    assert summary["dataset"] == "hotpotqa" and summary["path"] == str(SAMPLES["hotpotqa"])
    assert summary["loaded"] == summary["total"] >= 100
    assert summary["skipped"] == 0 and summary["skipped_reasons"] == {}
    tiers = summary["tiers"]
    assert list(tiers) == [t for t in ("easy", "medium", "hard") if t in tiers]  # in order
    assert sum(tiers.values()) == summary["loaded"]
    p = summary["prompt_words"]
    assert p["min"] <= p["median"] <= p["p95"] <= p["max"] and p["min"] <= p["mean"] <= p["max"]


def test_fewer_distractors_make_shorter_prompts():
    full = inspect_summary("hotpotqa", SAMPLES["hotpotqa"])["prompt_words"]
    gold_only = inspect_summary("hotpotqa", SAMPLES["hotpotqa"], distractors=0)["prompt_words"]
    assert gold_only["max"] < full["max"] and gold_only["mean"] < full["mean"] / 2


def test_a_package_path_names_the_same_file():
    rel = SAMPLES["musique"].relative_to(SAMPLES["musique"].parents[2]).as_posix()
    by_pkg = inspect_summary("musique", f"pkg://{rel}")
    assert by_pkg["loaded"] == inspect_summary("musique", SAMPLES["musique"])["loaded"]


def test_an_unknown_dataset_or_a_missing_file_exits_2(tmp_path):
    with pytest.raises(typer.Exit) as err:
        inspect_summary("squad", SAMPLES["hotpotqa"])
    assert err.value.exit_code == 2
    with pytest.raises(typer.Exit):
        inspect_summary("hotpotqa", tmp_path / "none.json")


def test_the_command_prints_the_summary():
    path = str(SAMPLES["2wikimultihopqa"])
    as_json = CliRunner().invoke(
        app, ["data", "inspect", "--dataset", "2wikimultihopqa", "--path", path, "--json"]
    )
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.output)
    table = CliRunner().invoke(
        app, ["data", "inspect", "--dataset", "2wikimultihopqa", "--path", path]
    )
    assert table.exit_code == 0
    words = " ".join(table.output.split())
    assert f"loaded {summary['loaded']} of {summary['total']} rows, skipped 0" in words
    assert "difficulty tiers" in words and "student prompt length (words)" in words
