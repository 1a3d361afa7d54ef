"""What every command shares: `--version`, and the exit codes a script or a batch system reads (2
a usage or config error, 1 a failed stage or an outage, 3 preempted), as the help epilog and
docs/development.md state them."""

from __future__ import annotations

import re
from importlib import metadata

import pytest
from paths import REPO
from typer.testing import CliRunner

import mbt_online.cli as cli_main
from mbt_online import preemption
from mbt_online.cli import run as run_cmd
from mbt_online.cli.common import EXIT_CODES, FAILED_EXIT, USAGE_EXIT, app
from mbt_online.config import ConfigError, dump_config, load_config
from mbt_online.contracts import StageFailed
from mbt_online.evaluation import judges
from mbt_online.sweeps import local
from mbt_online.training.staged import TrainChildFailed


def invoke(*args: str):
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, " ".join(res.output.split())


def test_version_prints_the_installed_version():
    code, out = invoke("--version")
    assert code == 0
    assert out == f"mbt-online {metadata.version('mbt-online')}"
    assert re.fullmatch(r"mbt-online \d+\.\d+\.\d+\S*", out)
    # eager: it answers before a command is parsed, and alongside one
    assert invoke("--version", "train", "--no-such-flag") == (0, out)


def test_the_codes_are_distinct_and_match_preemption():
    assert (FAILED_EXIT, USAGE_EXIT, preemption.PREEMPTED_EXIT) == (1, 2, 3)


def raising(error: BaseException):
    def fake(*args, **kwargs):
        raise error

    return fake


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (StageFailed("teach", "4 of 4 requests failed"), 1, "when the endpoint is back"),
        (
            TrainChildFailed("the TRAIN child exited with status 1", REPO, ["boom"]),
            1,
            "to launch TRAIN again",
        ),
        (ConfigError("loop.rounds: must be >= 1"), 2, "loop.rounds: must be >= 1"),
        (preemption.Preempted("round 2", "SIGUSR1"), 3, "preempted: stopped on SIGUSR1"),
    ],
    ids=["outage", "train-child", "config", "preempted"],
)
def test_train_exit_codes(monkeypatch, error, code, message):
    monkeypatch.setattr(run_cmd, "_train", raising(error))
    got, out = invoke("train")
    assert got == code, out
    assert message in out


def test_a_usage_error_exits_2_and_does_nothing(monkeypatch):
    called = []
    monkeypatch.setattr(run_cmd, "_train", lambda *a, **k: called.append(a))
    assert invoke("train", "--rounds", "2")[0] == USAGE_EXIT  # --rounds without --resume
    assert invoke("train", "--no-such-flag")[0] == USAGE_EXIT  # the parser's own usage error
    assert called == []


def test_judge_outage_exits_1(tmp_path, monkeypatch):
    dump_config(load_config(None, []), tmp_path / "config.yaml")
    monkeypatch.setattr(judges, "judge_round", raising(StageFailed("judge", "3 of 3 failed")))
    code, out = invoke("judge", "--run", str(tmp_path), "--round", "1")
    assert code == FAILED_EXIT
    assert "judge: 3 of 3 failed" in out and "Nothing was written" in out
    missing = invoke("judge", "--run", str(tmp_path / "none"), "--round", "1")
    assert missing[0] == USAGE_EXIT and "is not a run directory" in missing[1]


def test_sweep_member_outage_exits_1(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "run_member", raising(StageFailed("teach", "breaker open")))
    code, out = invoke("sweep-member", str(tmp_path / "m"))
    assert code == FAILED_EXIT and "teach: breaker open" in out
    monkeypatch.setattr(local, "run_member", raising(preemption.Preempted("EVAL", "SIGTERM")))
    assert invoke("sweep-member", str(tmp_path / "m"))[0] == preemption.PREEMPTED_EXIT


@pytest.mark.parametrize(
    ("error", "code"),
    [(StageFailed("eval", "out"), FAILED_EXIT), (ConfigError("bad"), USAGE_EXIT)],
)
def test_the_entry_point_backstops_an_uncaught_error(monkeypatch, capsys, error, code):
    monkeypatch.setattr(cli_main, "app", raising(error))
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == code
    assert f"error: {error}" in capsys.readouterr().err


def test_help_and_docs_state_the_codes():
    code, out = invoke("--help")
    assert code == 0
    assert " ".join(EXIT_CODES.split()) in out
    assert "Exit codes: 0 done; 1 a stage failed or an endpoint was out" in out
    train_help = invoke("train", "--help")[1]
    assert "2 a usage or config error" in train_help and "3 preempted" in train_help
    # docs/development.md's table holds the same codes, one row each
    doc = (REPO / "docs" / "development.md").read_text()
    section = doc.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `?(\d)`? \|", section, re.MULTILINE)
    assert rows == ["0", "1", "2", "3"]
