"""Where a run stands: the round and stage of its first stage not done (the last done when it
finished), from its state.json and config.yaml. `sweep status` shows it, and the line of a run
stopped by a signal says it (`where_stopped`, through `rundir.lock` and `preemption`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mbt_online.config import ConfigError, read_yaml
from mbt_online.rundir.state import STATE_FILE, RunState, round_stages


def position(run_dir: Path) -> dict[str, Any]:
    """`round` and `stage` (None for a run not started) and whether the run `finished`."""
    if not (run_dir / STATE_FILE).exists():
        return {"round": None, "stage": None, "finished": False}
    state = RunState.load(run_dir)
    done = set(state.completed)
    try:
        raw = read_yaml(run_dir / "config.yaml")
        rounds = int(raw.get("loop", {}).get("rounds", 0))
        grpo = bool(raw.get("train", {}).get("grpo", {}).get("enabled", False))
    except (ConfigError, OSError, ValueError, AttributeError):
        rounds, grpo = 0, False
    stages = round_stages(grpo)
    order = [(0, "eval")] + [(r, s) for r in range(1, rounds + 1) for s in stages]
    pending = [(r, s) for r, s in order if f"round-{r}/{s}" not in done]
    finished = bool(state.finished)
    if pending and not finished:
        return {"round": pending[0][0], "stage": pending[0][1], "finished": False}
    last = [(r, s) for r, s in order if f"round-{r}/{s}" in done]
    r, s = last[-1] if last else (0, "eval")
    return {"round": r, "stage": s, "finished": finished}


def where_stopped(run_dir: Path) -> str:
    """`in round 1, stage teach (...)`: where a run stopped, for the line a stop prints."""
    if not (run_dir / STATE_FILE).exists():
        return "before the run started (nothing was written)"
    pos = position(run_dir)
    if pos["finished"]:
        return f"after {run_dir} finished"
    return f"in round {pos['round']}, stage {pos['stage']} (not committed; finished stages kept)"
