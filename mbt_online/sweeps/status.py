"""`mbt-online sweep status`: where each member of a sweep stands, from its run directory and SLURM.

A member's state comes from what the run itself leaves (the loop's contract): no `state.json` is
not started, `finished: true` is finished, a held run lock (`rundir/lock.py`, released by the
kernel when its holder dies) is running, and an unfinished run nobody holds has stopped: failed,
unless SLURM still has its task queued or starting. Where `squeue` / `sacct` exist, each member's
task of the last submission (`slurm/jobs.json`) adds its job id and SLURM state.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from mbt_online.config import ConfigError
from mbt_online.rundir.lock import is_held
from mbt_online.rundir.metrics_file import read_metrics
from mbt_online.rundir.position import position
from mbt_online.rundir.state import STATE_FILE, RunState
from mbt_online.scoring.round_metrics import HEADLINE
from mbt_online.sweeps.slurm import JOBS_FILE
from mbt_online.sweeps.spec import MANIFEST

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING"}
ACTIVE = {"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING"}


def sweep_status(sweep_dir: Path) -> dict[str, Any]:
    """Every member of the sweep in manifest order, with its state, position and last eval."""
    manifest_path = sweep_dir / MANIFEST
    if not manifest_path.exists():
        raise ConfigError(f"{sweep_dir}: no {MANIFEST}; is it a sweep directory?")
    manifest = json.loads(manifest_path.read_text())
    tasks = _member_tasks(sweep_dir)
    slurm = _slurm_states({t.split("_")[0] for t in tasks.values()})
    members = [
        member_status(sweep_dir / m["name"], tasks.get(m["name"]), slurm)
        for m in manifest["members"]
    ]
    return {"sweep": manifest["name"], "dir": str(sweep_dir), "members": members}


def member_status(run_dir: Path, task: str | None, slurm: dict[str, str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": run_dir.name, "state": "not_started"}
    queue_state = (slurm or {}).get(task or "")
    out["slurm"] = None if task is None else {"job_id": task, "state": queue_state}
    if is_held(run_dir):
        out["state"] = "running"
    elif (run_dir / STATE_FILE).exists():
        state = RunState.load(run_dir)
        out["state"] = "finished" if state.finished else "failed"
    if out["state"] in ("not_started", "failed") and queue_state:
        if queue_state in QUEUED:
            out["state"] = "queued"
        elif queue_state in ACTIVE:
            out["state"] = "running"
        elif out["state"] == "not_started" and queue_state not in ("COMPLETED",):
            out["state"] = "failed"  # cancelled, timed out, node failure... before it began
    out.update(_position(run_dir))
    rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    last = rows[-1] if rows else None
    out["last_eval"] = (
        {"round": last["round"], **{k: last[k] for k, _ in HEADLINE if k in last}} if last else None
    )
    return out


def _position(run_dir: Path) -> dict[str, Any]:
    """The round and stage a member is at: the first not done, or the last done when finished."""
    pos = position(run_dir)
    return {"round": pos["round"], "stage": pos["stage"]}


def _member_tasks(sweep_dir: Path) -> dict[str, str]:
    """Member name -> its array task (`<job id>_<index>`) in the latest submission."""
    path = sweep_dir / JOBS_FILE
    if not path.exists():
        return {}
    tasks: dict[str, str] = {}
    for job in json.loads(path.read_text()):  # later submissions replace earlier ones
        for i, name in enumerate(job["members"]):
            tasks[name] = f"{job['job_id']}_{i}"
    return tasks


def _slurm_states(job_ids: set[str]) -> dict[str, str] | None:
    """Array task -> SLURM state, from sacct (finished tasks) then squeue (live ones)."""
    if not job_ids:
        return None
    ids = ",".join(sorted(job_ids))
    states: dict[str, str] = {}
    if shutil.which("sacct"):
        out = _run(["sacct", "-n", "-P", "-X", "-j", ids, "-o", "JobID,State"])
        for line in out.splitlines():
            task, _, state = line.partition("|")
            if "_" in task and "[" not in task:
                states[task] = state.split()[0] if state else state
    if shutil.which("squeue"):
        out = _run(["squeue", "-h", "-r", "-j", ids, "-o", "%i|%T"])
        for line in out.splitlines():
            task, _, state = line.partition("|")
            states[task.strip()] = state.strip()
    return states if (shutil.which("sacct") or shutil.which("squeue")) else None


def _run(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return res.stdout if res.returncode == 0 else ""


def format_status(status: dict[str, Any]) -> list[list[str]]:
    """Rows for the table: member, state, round/stage, last eval, SLURM task and state."""
    rows = []
    for m in status["members"]:
        where = f"{m['round']}/{m['stage']}" if m["round"] is not None else "-"
        ev = m["last_eval"]
        last = (
            f"r{ev['round']} "
            + " ".join(f"{k.split('/')[1]}={v:.3f}" for k, v in ev.items() if k != "round")
            if ev
            else "-"
        )
        job = m["slurm"] or {}
        rows.append(
            [m["name"], m["state"], where, last, job.get("job_id") or "-", job.get("state") or "-"]
        )
    return rows
