"""SLURM: a sweep as one job-array script, task i training member i.

Each task resumes its member if it was cut and skips it if it finished (the same contract as a
local sweep, read from the run's state file), so resubmitting the array after a failure only
reruns what is missing.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from mbt_online.config import ConfigError
from mbt_online.rundir.state import STATE_FILE
from mbt_online.tools.sweep import Member, Sweep, as_list, override_item

SLURM_SCRIPT = "sweep.sbatch"
TRAIN_CMD = "mbt-online train"


def write_slurm(sweep_dir: Path, sweep: Sweep, members: list[Member]) -> Path:
    """A job-array script: task i trains member i, resumes it if it was cut, skips it if done.

    Paths are absolute and the script cds to the directory it was written from, so relative data
    paths in the base config resolve exactly as they would in a local sweep.
    """
    opts = sweep.slurm
    unknown = set(opts) - {"sbatch", "max_parallel", "setup"}
    if unknown:
        raise ConfigError(
            f"{sweep.path}: slurm: unknown keys {sorted(unknown)}; "
            "allowed: sbatch, max_parallel, setup"
        )
    array = f"0-{len(members) - 1}" + (
        f"%{int(opts['max_parallel'])}" if opts.get("max_parallel") else ""
    )
    sbatch = {
        "job-name": f"mbt-{sweep.name}",
        "array": array,
        "output": str(sweep_dir / "slurm" / "%x-%A_%a.out"),
    }
    sbatch.update({str(k): str(v) for k, v in (opts.get("sbatch") or {}).items()})
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH --{k}={v}" for k, v in sbatch.items()]
    lines += [
        f"# mbt-online sweep {sweep.name}: {len(members)} members from {sweep.path}",
        "set -euo pipefail",
        f"cd {shlex.quote(os.getcwd())}",
        *[str(s) for s in as_list(opts.get("setup"), "slurm.setup")],
        f"SWEEP_DIR={shlex.quote(str(sweep_dir))}",
        f"BASE={shlex.quote(str(sweep.base))}",
        'case "${SLURM_ARRAY_TASK_ID:?run this script with sbatch}" in',
    ]
    runs_dir = override_item("run.runs_dir", str(sweep_dir))
    for i, m in enumerate(members):
        args = " ".join(shlex.quote(o) for o in [*m.overrides, runs_dir])
        lines.append(f"  {i}) NAME={shlex.quote(m.name)}; ARGS=({args}) ;;")
    lines += [
        '  *) echo "no sweep member for task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;',
        "esac",
        'RUN_DIR="$SWEEP_DIR/$NAME"',
        f'STATE="$RUN_DIR/{STATE_FILE}"',
        'if [ -f "$STATE" ]; then',
        '  if grep -Eq \'"finished"[[:space:]]*:[[:space:]]*true\' "$STATE"; then',
        '    echo "member $NAME already finished: skipping"; exit 0',
        "  fi",
        f'  exec {TRAIN_CMD} --resume "$RUN_DIR"',
        "fi",
        f'exec {TRAIN_CMD} --config "$BASE" "${{ARGS[@]}}"',
    ]
    (sweep_dir / "slurm").mkdir(exist_ok=True)
    script = sweep_dir / SLURM_SCRIPT
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return script
