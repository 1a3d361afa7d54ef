"""Library versions in a run's integrity record: a new run records torch, transformers, trl, peft,
vllm, datasets, accelerate and wandb; a resume on another version of one (a changed version faked
in the stored record) is refused naming the library and both versions, exit 2 from the command
line; `--allow-changed` accepts it and records the change."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import Fakes, quick_datasets, run, tiny_config

from mbt_online import loop, versions
from mbt_online.config import ConfigError
from mbt_online.rundir import integrity
from mbt_online.rundir.state import RunState

__all__ = ["quick_datasets"]  # the module-scoped fixture of test_loop_flow, autouse here too


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    cfg = tiny_config(tmp_path_factory.mktemp("finished"))
    return run(cfg, Fakes(cfg))


def copy_run(src: Path, dest_parent: Path) -> Path:
    out = dest_parent / src.name
    shutil.copytree(src, out)
    return out


def stored(run_dir: Path) -> dict:
    return json.loads((run_dir / "state.json").read_text())


def store_library_version(run_dir: Path, library: str, version: str | None) -> None:
    state = stored(run_dir)
    state["integrity"]["library_versions"][library] = version
    (run_dir / "state.json").write_text(json.dumps(state))


def resume(run_dir: Path, tmp_path: Path, **kwargs) -> None:
    loop.train(None, run_dir, resume=True, drivers=Fakes(tiny_config(tmp_path)).drivers, **kwargs)


def test_a_new_run_records_the_library_versions(finished):
    record = stored(finished)["integrity"]
    assert record["library_versions"] == versions.library_versions()
    assert set(record["library_versions"]) == set(versions.LIBRARIES)
    assert record["library_versions"]["trl"] == versions.installed("trl") is not None
    assert record["accepted_changes"] == []


def test_another_library_version_is_refused_naming_it_and_both_versions(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    store_library_version(run_dir, "trl", "1.15.0")
    now = versions.installed("trl")
    with pytest.raises(
        ConfigError, match=rf"the run started with trl 1\.15\.0, this is trl {now}.*--allow-changed"
    ):
        resume(run_dir, tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "mbt_online", "train", "--resume", str(run_dir)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2, out.stderr
    assert f"trl 1.15.0, this is trl {now}" in out.stderr and "--allow-changed" in out.stderr


def test_a_library_installed_since_or_gone_is_a_change(finished, tmp_path, monkeypatch):
    run_dir = copy_run(finished, tmp_path)
    store_library_version(run_dir, "vllm", None)
    with pytest.raises(ConfigError, match=r"the run started with vllm \(not installed\)"):
        resume(run_dir, tmp_path)
    now = versions.library_versions()
    monkeypatch.setattr(integrity, "library_versions", lambda: {**now, "peft": None})
    store_library_version(run_dir, "vllm", now["vllm"])
    with pytest.raises(ConfigError, match=r"this is peft \(not installed\)"):
        resume(run_dir, tmp_path)


def test_allow_changed_accepts_and_records_the_change(finished, tmp_path, caplog):
    run_dir = copy_run(finished, tmp_path)
    store_library_version(run_dir, "accelerate", "1.15.0")
    resume(run_dir, tmp_path, allow_changed=True)
    record = stored(run_dir)["integrity"]
    assert record["library_versions"] == versions.library_versions(), "renewed"
    [change] = record["accepted_changes"]
    now = versions.installed("accelerate")
    assert change.endswith(f"the run started with accelerate 1.15.0, this is accelerate {now}")
    assert "resuming over a deliberate change" in caplog.text
    resume(run_dir, tmp_path)  # the renewed record holds
    assert RunState.load(run_dir).integrity["accepted_changes"] == [change], "kept"


def test_a_run_recorded_before_library_versions_resumes(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    state = stored(run_dir)
    del state["integrity"]["library_versions"], state["integrity"]["accepted_changes"]
    (run_dir / "state.json").write_text(json.dumps(state))
    resume(run_dir, tmp_path)
    assert integrity.library_changes(None) == []
