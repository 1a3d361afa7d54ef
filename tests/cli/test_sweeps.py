"""`sweep` (its FILE-or-subcommand routing), `sweep status` and `report`: what each refuses, and
that `sweep FILE` is `sweep run FILE`."""

from __future__ import annotations

import yaml
from paths import PAPER_SWEEP
from typer.testing import CliRunner

from mbt_online.cli.common import app
from mbt_online.cli.sweeps import sweep_app


def invoke(*args: str):
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def test_sweep_file_runs_the_run_command():
    code, listed = invoke("sweep", str(PAPER_SWEEP), "--dry-run")
    assert code == 0, listed
    assert invoke("sweep", "run", str(PAPER_SWEEP), "--dry-run") == (0, listed)
    members = yaml.safe_load(listed)
    names = [m["name"] for m in members]
    assert len(names) >= 3 and len(set(names)) == len(names)
    assert all(f'run.name="{m["name"]}"' in m["overrides"] for m in members)


def test_overrides_reach_every_member():
    code, listed = invoke("sweep", str(PAPER_SWEEP), "--dry-run", "eval.limit=7")
    assert code == 0, listed
    assert all("eval.limit=7" in m["overrides"] for m in yaml.safe_load(listed))


def test_the_subcommands_and_help_are_not_routed_to_run():
    assert {c.name for c in sweep_app.registered_commands} == {"run", "status"}
    code, out = invoke("sweep", "--help")
    assert code == 0 and "status" in out and "run" in out
    code, out = invoke("sweep", "status", "--help")
    assert code == 0 and "sweep.json" in out and "--json" in out


def test_sweep_refusals_exit_2(tmp_path):
    code, out = invoke("sweep", str(PAPER_SWEEP), "--emit", "pbs")
    assert code == 2 and "--emit must be slurm (got 'pbs')" in out
    code, out = invoke("sweep", str(tmp_path / "none.yaml"), "--dry-run")
    assert code == 2 and "config file not found" in out
    code, out = invoke("sweep", "status", str(tmp_path))
    assert code == 2 and "no sweep.json" in out


def test_report_refuses_paths_that_do_not_exist(tmp_path):
    code, out = invoke("report", str(tmp_path / "a"), str(tmp_path), str(tmp_path / "b"))
    assert code == 2
    assert f"not found: {tmp_path / 'a'}, {tmp_path / 'b'}" in " ".join(out.split())
    assert not (tmp_path / "report.html").exists()
