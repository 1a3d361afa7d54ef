"""Sweep files the tests write: the paper-baselines member names and a sweep written from a dict."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import yaml

from mbt_online.config import dump_config

PAPER_NAMES = [
    "base",
    "metacog",
    "self-distill_no-dpo",
    "self-distill_dpo",
    "self-distill-paper_no-dpo",
    "self-distill-paper_dpo",
    "teacher-distill_no-dpo",
    "teacher-distill_dpo",
    "distill-r_no-dpo",
    "distill-r_dpo",
    "direct-r_no-dpo",
    "direct-r_dpo",
    "mbt-s_no-dpo",
    "mbt-s_dpo",
    "mbt-r_no-dpo",
    "mbt-r_dpo",
    "grpo",
    "self-distill-grpo",
    "teacher-distill-grpo",
    "mbt-s-grpo",
    "mbt-r-grpo",
]


def write_sweep(tmp_path: Path, body: dict, base: dict | None = None) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base or {"loop": {"rounds": 3}}))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", **body}, sort_keys=False))
    return path


class FakeLoop:
    """Stands in for mbt_online.loop: writes the run-dir contract and can die mid-run once."""

    def __init__(self, fail_member: str | None = None) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.fail_member = fail_member

    def train(self, cfg, run_dir: Path | None = None, resume: bool = False) -> Path:
        run_dir = Path(run_dir)
        self.calls.append((run_dir.name, resume))
        if not resume:
            run_dir.mkdir(parents=True)
            dump_config(cfg, run_dir / "config.yaml")
        state = json.loads((run_dir / "state.json").read_text()) if resume else {"completed": []}
        for r in range(cfg.loop.rounds + 1):
            if f"round-{r}/eval" in state["completed"]:
                continue
            state["completed"].append(f"round-{r}/eval")
            state["finished"] = False
            (run_dir / "state.json").write_text(json.dumps(state))
            if run_dir.name == self.fail_member:
                self.fail_member = None
                raise KeyboardInterrupt("killed")
        state["finished"] = True
        (run_dir / "state.json").write_text(json.dumps(state))
        return run_dir


@pytest.fixture
def fake_loop(monkeypatch):
    def install(fail_member: str | None = None) -> FakeLoop:
        fake = FakeLoop(fail_member)
        module = types.ModuleType("mbt_online.loop")
        module.train = fake.train
        monkeypatch.setitem(sys.modules, "mbt_online.loop", module)
        return fake

    return install
