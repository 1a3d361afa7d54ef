"""`compare`'s printing and error path, with the paired test itself stubbed (its numbers are
tested in tests/report/test_compare.py)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from mbt_online.cli.common import app
from mbt_online.cli.compare import compare
from mbt_online.config import ConfigError

RESULT = {
    "round": 2,
    "pairs": 1,
    "a": {
        "name": "a",
        "mean": 0.6,
        "ci_low": 0.5,
        "ci_high": 0.7,
        "n": 100,
        "interval_over": "questions",
    },
    "b": {
        "name": "b",
        "mean": 0.2,
        "ci_low": 0.12,
        "ci_high": 0.28,
        "n": 100,
        "interval_over": "questions",
    },
    "difference": 0.4,
    "ci_low": 0.3,
    "ci_high": 0.5,
    "n": 100,
    "excludes_zero": True,
}


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    calls: list[tuple] = []

    def paired_compare(a, b, round_, metric, sweep_dir):
        calls.append((a, b, round_, metric, sweep_dir))
        if b == "missing":
            raise ConfigError("missing: neither a run directory nor a sweep member")
        return {**RESULT, "excludes_zero": a != "same"}

    monkeypatch.setattr("mbt_online.report.compare.paired_compare", paired_compare)
    return calls


def test_the_verdict_in_plain_lines(asked, capsys):
    compare("a", "b", None, "accuracy", None, False)
    assert asked == [("a", "b", None, "accuracy", None)]
    assert capsys.readouterr().out.splitlines() == [
        "accuracy at round 2 (1 run pair(s)):",
        "  a: 0.600 [0.500, 0.700]  n=100 (questions)",
        "  b: 0.200 [0.120, 0.280]  n=100 (questions)",
        "  difference A - B: +0.400 [+0.300, +0.500] over 100 paired questions, excludes zero",
    ]


def test_an_interval_over_zero_is_not_distinguishable(asked, capsys):
    compare("same", "b", None, "f1", None, False)
    out = capsys.readouterr().out
    assert out.startswith("f1 at round 2") and out.rstrip().endswith(
        "includes zero: not distinguishable"
    )


def test_json_is_the_result_as_is(asked, capsys):
    compare("a", "b", 1, "accuracy", None, True)
    assert json.loads(capsys.readouterr().out) == RESULT
    assert asked[-1][2] == 1


def test_a_config_error_exits_2(asked):
    with pytest.raises(typer.Exit) as err:
        compare("a", "missing", None, "accuracy", None, False)
    assert err.value.exit_code == 2


def test_the_command_passes_its_options_through(asked):
    res = CliRunner().invoke(
        app, ["compare", "x", "y", "--round", "3", "--metric", "em", "--sweep-dir", "/s", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert asked == [("x", "y", 3, "em", asked[0][4])] and str(asked[0][4]) == "/s"


def test_help_names_the_options():
    res = CliRunner().invoke(app, ["compare", "--help"])
    assert res.exit_code == 0
    for option in ("--round", "--metric", "--sweep-dir", "--json"):
        assert option in res.output
