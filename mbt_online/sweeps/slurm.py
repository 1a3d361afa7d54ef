"""SLURM: a sweep as job arrays, one per distinct resource set, and a `submit.sh` for them all.

Task i of an array runs its member through `mbt-online sweep-member`, the same Python path as a
local sweep: a finished member is skipped, an unfinished one resumed, and one whose stored config
differs from the sweep's is refused. Resubmitting after a failure therefore only reruns what is
missing.

Preemption: each array asks for `--requeue` and SLURM's warning signal (`--signal=B:USR1@<secs>`)
before its time limit. The batch shell runs the member in the background and forwards the warning
(or a SIGTERM) to it as SIGUSR1; the run stops at its next safe point and exits with
`PREEMPTED_EXIT`, and the script requeues its own task, which resumes the member.

Multi-node members (`nodes > 1`): the batch script (the orchestrator) runs on the allocation's first
node only; TRAIN goes across all nodes through the runtime overrides the script adds
(`runtime.launcher=srun`, `num_machines`, `num_processes` = GPUs per node) with a rendezvous port
derived from the task's job id, so two tasks sharing a node never pick the same port. The student
is sampled on every node too: `engine.backend=vllm-serve` starts one `vllm serve` per node
(`mbt_online.generation.served`) on a port from its own range, derived from the job id as well.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbt_online.config import Config, ConfigError
from mbt_online.preemption import PREEMPTED_EXIT
from mbt_online.rundir.atomic import write_json_atomic
from mbt_online.sweeps.slurm_spec import DEFAULT_SIGNAL_SECONDS, check_value, resource_options
from mbt_online.sweeps.spec import Member, Sweep, member_config, override_item

SUBMIT_SCRIPT = "submit.sh"
ARRAYS_FILE = "slurm/arrays.json"  # which member each array task runs
JOBS_FILE = "slurm/jobs.json"  # what `--submit` submitted (sweep status reads it)
MEMBER_CMD = "mbt-online sweep-member"
PORT_BASE, PORT_SPAN = 29500, 20000


@dataclass
class JobArray:
    """Members that ask for the same resources: one array script."""

    index: int
    options: dict[str, str]
    members: list[Member]
    configs: list[Config]

    @property
    def script(self) -> str:
        return f"sweep-{self.index}.sbatch"

    @property
    def nodes(self) -> int:
        return int(self.options.get("nodes", "1"))

    @property
    def gpus(self) -> int:
        return int(self.options.get("gpus-per-node", "0"))


def group_arrays(members: list[Member], configs: list[Config], where: str) -> list[JobArray]:
    """Members grouped by their `#SBATCH` options, in order of first appearance."""
    arrays: dict[str, JobArray] = {}
    for m, cfg in zip(members, configs, strict=True):
        opts = resource_options(m.slurm, f"{where}: member {m.name}: slurm")
        key = json.dumps(opts, sort_keys=True)
        if key not in arrays:
            arrays[key] = JobArray(len(arrays), opts, [], [])
        arrays[key].members.append(m)
        arrays[key].configs.append(cfg)
    return list(arrays.values())


def runtime_overrides(array: JobArray, cfg: Config) -> list[str]:
    """What a multi-node member adds to its config: TRAIN under srun on every node, and a
    student sampled by one `vllm serve` per node (`engine.backend=vllm-serve`), unless the member
    chose the transformers backend or a LoRA handoff (the servers serve no adapter): those sample
    on the first node only."""
    if array.nodes <= 1:
        return []
    served = cfg.engine.backend == "vllm" and cfg.engine.handoff != "lora"
    serve = [override_item("engine.backend", "vllm-serve")] if served else []
    return [
        override_item("runtime.mode", "staged"),
        override_item("runtime.launcher", "srun"),
        override_item("runtime.num_machines", array.nodes),
        override_item("runtime.num_processes", max(array.gpus, 1)),
        *serve,
    ]


def needs_port(array: JobArray) -> bool:
    """Accelerate rendezvous happens with several GPUs or nodes: give each task its own port."""
    return array.nodes > 1 or array.gpus > 0


def write_slurm(
    sweep_dir: Path, sweep: Sweep, members: list[Member], configs: list[Config]
) -> Path:
    """One array script per resource set, `submit.sh` for all of them and `slurm/arrays.json`;
    returns submit.sh. Paths are absolute and each script cds to the directory it was written
    from, so relative data paths resolve exactly as in a local sweep."""
    arrays = group_arrays(members, configs, str(sweep.path))
    for array in arrays:  # the runtime overrides must validate too, before anything is written
        for m, cfg in zip(array.members, array.configs, strict=True):
            extra = runtime_overrides(array, cfg) + (
                [override_item("runtime.main_process_port", PORT_BASE)] if needs_port(array) else []
            )
            if extra:
                member_config(sweep, Member(m.name, [*m.overrides, *extra]), sweep_dir)
    (sweep_dir / "slurm").mkdir(exist_ok=True)
    for old in sweep_dir.glob("sweep-*.sbatch"):
        old.unlink()  # a re-emitted sweep may have fewer resource sets
    for array in arrays:
        path = sweep_dir / array.script
        path.write_text(array_script(sweep_dir, sweep, array))
        path.chmod(0o755)
    write_json_atomic(
        sweep_dir / ARRAYS_FILE,
        [{"script": a.script, "members": [m.name for m in a.members]} for a in arrays],
        sort_keys=False,
    )
    submit = sweep_dir / SUBMIT_SCRIPT
    submit.write_text(submit_script(sweep_dir, sweep, arrays))
    submit.chmod(0o755)
    return submit


def array_script(sweep_dir: Path, sweep: Sweep, array: JobArray) -> str:
    opts = sweep.slurm
    n = len(array.members)
    limit = f"%{int(opts['max_parallel'])}" if opts.get("max_parallel") else ""
    secs = int(opts.get("signal_seconds", DEFAULT_SIGNAL_SECONDS))
    sbatch = {
        "job-name": f"mbt-{sweep.name}",
        "array": f"0-{n - 1}{limit}",
        "output": str(sweep_dir / "slurm" / "%x-%A_%a.out"),
        "open-mode": "append",  # a requeued task adds to its log instead of truncating it
        "requeue": "",
        "signal": f"B:USR1@{secs}",
        **array.options,
    }
    where = f"{sweep.path}: slurm"
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH --{k}" + (f"={_sbatch_value(v)}" if v else "") for k, v in sbatch.items()]
    lines += [
        f"# mbt-online sweep {sweep.name}, job array {array.index}: {n} members from {sweep.path}",
        "set -euo pipefail",
        f"cd {shlex.quote(os.getcwd())}",
        *[check_value(s, f"{where}.setup") for s in opts.get("setup") or []],
        *_exports(opts.get("env") or {}, where),
        f"SWEEP_DIR={shlex.quote(str(sweep_dir))}",
        f"BASE={shlex.quote(str(sweep.base))}",
        "# threads per task: the CPUs SLURM gave the task (`cpus_per_task`), unless env sets them",
        'export OMP_NUM_THREADS="${OMP_NUM_THREADS_SWEEP:-${SLURM_CPUS_PER_TASK:-1}}"',
        'case "${SLURM_ARRAY_TASK_ID:?run this script with sbatch}" in',
    ]
    runs_dir = override_item("run.runs_dir", str(sweep_dir))
    for i, (m, cfg) in enumerate(zip(array.members, array.configs, strict=True)):
        extra = runtime_overrides(array, cfg)
        args = " ".join(shlex.quote(o) for o in [*m.overrides, runs_dir, *extra])
        wandb = shlex.quote(cfg.tracking.wandb_mode)
        lines.append(
            f"  {i}) NAME={shlex.quote(m.name)}; export WANDB_MODE={wandb}; ARGS=({args}) ;;"
        )
    lines += [
        '  *) echo "no sweep member for task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;',
        "esac",
    ]
    if needs_port(array):
        lines += [
            "# the rendezvous port of this task: its job id is unique among running tasks, so two",
            "# tasks on one node never share a port (and a requeued task keeps its own)",
            f"PORT=$(( {PORT_BASE} + ${{SLURM_JOB_ID:?}} % {PORT_SPAN} ))",
            'ARGS+=("runtime.main_process_port=$PORT")',
        ]
    lines += _run_and_requeue()
    return "\n".join(lines) + "\n"


def _sbatch_value(value: str) -> str:
    """sbatch splits an `#SBATCH` line on blanks: quote a value that has them."""
    if any(c.isspace() for c in value):
        if '"' in value:
            raise ConfigError(f"slurm.sbatch: {value!r} holds both blanks and a double quote")
        return f'"{value}"'
    return value


def _exports(env: dict[str, Any], where: str) -> list[str]:
    out = []
    for name, value in env.items():
        text = check_value(value, f"{where}.env.{name}")
        target = "OMP_NUM_THREADS_SWEEP" if name == "OMP_NUM_THREADS" else name
        out.append(f"export {target}={shlex.quote(text)}")
    return out


def _run_and_requeue() -> list[str]:
    """Run the member in the background so the shell can forward SLURM's signals to it, wait for
    its real exit status, and requeue this task when it stopped on request."""
    return [
        'RUN_DIR="$SWEEP_DIR/$NAME"',
        'echo "member $NAME: task ${SLURM_ARRAY_JOB_ID:-?}_$SLURM_ARRAY_TASK_ID on $(hostname)"',
        'CHILD=""; STOP=""',
        "forward() {",
        '  echo "member $NAME: $1 received: stopping at the next safe point" >&2',
        '  STOP=1; [ -z "$CHILD" ] || kill -USR1 "$CHILD" 2>/dev/null || true',
        "}",
        "trap 'forward USR1' USR1",
        "trap 'forward TERM' TERM",
        f'{MEMBER_CMD} "$RUN_DIR" --config "$BASE" "${{ARGS[@]}}" &',
        "CHILD=$!",
        '[ -z "$STOP" ] || kill -USR1 "$CHILD"  # a signal that came before the member started',
        "set +e",
        "while :; do",
        '  wait "$CHILD"; RC=$?',
        '  kill -0 "$CHILD" 2>/dev/null || break  # a trap interrupted `wait`: wait again',
        "done",
        "set -e",
        f'if [ "$RC" -eq {PREEMPTED_EXIT} ]; then',
        '  TASK="${SLURM_ARRAY_JOB_ID:?}_${SLURM_ARRAY_TASK_ID}"',
        '  echo "member $NAME stopped at a safe point: requeueing $TASK"',
        '  scontrol requeue "$TASK" && exit 0',
        f"  exit {PREEMPTED_EXIT}",
        "fi",
        'exit "$RC"',
    ]


def submit_script(sweep_dir: Path, sweep: Sweep, arrays: list[JobArray]) -> str:
    """Submits every array; prints `<job id> <script>` per array (what `--submit` reads)."""
    lines = [
        "#!/bin/bash",
        f"# submit every job array of sweep {sweep.name}: prints '<job id> <script>' per array",
        "set -euo pipefail",
    ]
    for a in arrays:
        script = shlex.quote(str(sweep_dir / a.script))
        # an assignment, so that a refused submission stops the script (set -e)
        lines.append(f"JOB=$(sbatch --parsable {script})")
        lines.append(f'echo "${{JOB%%;*}} {a.script}"')
    return "\n".join(lines) + "\n"


def submit(sweep_dir: Path) -> list[dict[str, Any]]:
    """Run submit.sh; record and return each array's job id with the members its tasks run."""
    submit_sh = sweep_dir / SUBMIT_SCRIPT
    res = subprocess.run(["bash", str(submit_sh)], capture_output=True, text=True)
    if res.returncode != 0:
        raise ConfigError(f"{submit_sh} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    arrays = {a["script"]: a["members"] for a in json.loads((sweep_dir / ARRAYS_FILE).read_text())}
    jobs = []
    for line in res.stdout.splitlines():
        job_id, _, script = line.strip().partition(" ")
        if script in arrays:
            jobs.append({"job_id": job_id, "script": script, "members": arrays[script]})
    jobs_file = sweep_dir / JOBS_FILE
    before = json.loads(jobs_file.read_text()) if jobs_file.exists() else []
    write_json_atomic(jobs_file, before + jobs, sort_keys=False)
    return jobs
