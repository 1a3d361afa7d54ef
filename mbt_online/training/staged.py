"""Staged TRAIN: the round's training as a child process started with `accelerate launch`.

In `runtime.mode: staged` the orchestrator (this process: the loop, the engine's client, the
teacher) never trains and never initialises CUDA; TRAIN is a separate program that owns the
devices while it runs and gives them all back when it exits. Its interface is files and an exit
status, nothing in memory:

    round-<r>/train/job.json     what to train (written here): the BUILD datasets on disk, start
                                 model, DPO reference, seed, run directory (its config.yaml)
    round-<r>/train/child.log    the child's output (also echoed to this process's stderr)
    round-<r>/train/result.json  what it trained (written by the child's rank 0, atomically):
                                 the model folder, the LoRA adapter, the train/* metrics

A child that exits non-zero stops the run with `TrainChildFailed` (its last log lines), before the
stage is marked done, so `--resume` launches it again. SLURM's warning (`preemption`: SIGUSR1)
reaches the child as `round-<r>/train/STOP`, a file every rank on every node sees whatever sits
between (accelerate's launcher does not pass a signal on to the training processes); the child
stops at its next safe point (a checkpoint) and the run ends `Preempted`. SIGINT and SIGTERM do
not wait for it: the child's process group is stopped within seconds (`run_teed`), its complete
checkpoints kept. The child itself (`training.child`) runs the same `trainer.TrlTrainer` as
in-process mode, so both modes train alike.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mbt_online.contracts import StageFailed, Trained, Trainer, TrainJob
from mbt_online.hardware import NVML_CHECK, free_port, resolved_mode, usable_cores
from mbt_online.rundir.atomic import write_json_atomic

if TYPE_CHECKING:
    from mbt_online.config import Config, RuntimeConfig

log = logging.getLogger("mbt_online")

JOB_FILE, RESULT_FILE, CHILD_LOG = "job.json", "result.json", "child.log"
STOP_FILE = "STOP"  # written when this process is asked to stop; the child polls it
POLL_S = 0.5
CHILD_MODULE = "mbt_online.training.child"
TAIL_LINES = 20
FREE_PORT = "<free port chosen at launch>"  # what --dry-run shows for main_process_port: 0
# srun: each node's task reads its own rank and the allocation's first node as the rendezvous
NODE_RANK = '"$SLURM_NODEID"'
FIRST_NODE = '"$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"'


# ---------------------------------------------------------------------------------------------
# which mode


def accelerate_config_path(ref: str | None) -> Path:
    """The accelerate config file: a path, or a shipped name (`accelerate/ddp`); null = the
    shipped single-process config (never accelerate's per-user default, which would make a run
    depend on whoever ran `accelerate config` on the machine)."""
    from mbt_online.config import ConfigError, resolve_config

    try:
        return resolve_config(ref or "accelerate/single_gpu")
    except ConfigError as e:
        raise ConfigError(f"runtime.accelerate_config: {e}") from None


def sharding_of(config_file: Path) -> Literal["none", "zero2", "zero3"]:
    """How an accelerate config shards training state, for the memory estimate: FSDP and ZeRO-3
    shard weights, gradients and optimizer; ZeRO-2 gradients and optimizer; DDP nothing."""
    import yaml

    raw = yaml.safe_load(config_file.read_text()) or {}
    kind = str(raw.get("distributed_type", "NO")).upper()
    if kind == "FSDP":
        return "zero3"
    if kind == "DEEPSPEED":
        stage = int((raw.get("deepspeed_config") or {}).get("zero_stage", 0))
        return "zero3" if stage >= 3 else "zero2" if stage == 2 else "none"
    return "none"


# ---------------------------------------------------------------------------------------------
# the command


@dataclass(frozen=True)
class World:
    """The processes of one TRAIN launch: `processes` per machine on `machines` machines.
    `port` None means "chosen at launch" (what --dry-run shows for main_process_port: 0)."""

    processes: int = 1
    machines: int = 1
    machine_rank: int = 0
    main_ip: str | None = None
    port: int | None = None
    launcher: Literal["local", "srun"] = "local"

    @property
    def size(self) -> int:
        return self.processes * self.machines

    @classmethod
    def from_runtime(cls, runtime: RuntimeConfig, *, pick_port: bool = True) -> World:
        """The configured world; port 0 becomes a free port now (`pick_port`) or stays open."""
        port: int | None = runtime.main_process_port
        if port == 0:
            port = free_port() if pick_port else None
        return cls(
            processes=runtime.num_processes,
            machines=runtime.num_machines,
            machine_rank=runtime.machine_rank,
            main_ip=runtime.main_process_ip,
            port=port,
            launcher=runtime.launcher,
        )


def accelerate_program() -> str:
    """This environment's `accelerate` script (beside the running Python), else PATH's."""
    here = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    return here or "accelerate"


def trainer_command(cfg: Config, job_file: str | Path, world: World) -> list[str]:
    """The argv that starts the TRAIN child for `job_file` on `world`.

    `--num_processes` is accelerate's total over all machines. Mixed precision follows
    `student.dtype` explicitly, so an accelerate config's own setting never changes the numbers.
    With launcher=srun one task per node runs `accelerate launch` under `sh -c`, taking the
    machine rank from that task's SLURM_NODEID (accelerate reads no rank from the environment)."""
    srun = world.launcher == "srun"
    port = FREE_PORT if world.port is None else str(world.port)
    args: list[str] = [
        accelerate_program(),
        "launch",
        "--config_file",
        str(accelerate_config_path(cfg.runtime.accelerate_config)),
        "--num_processes",
        str(world.size),
        "--num_machines",
        str(world.machines),
        "--machine_rank",
        NODE_RANK if srun else str(world.machine_rank),
    ]
    if world.main_ip or world.machines > 1:
        args += ["--main_process_ip", world.main_ip or (FIRST_NODE if srun else "")]
    args += ["--main_process_port", port]
    args += ["--mixed_precision", "bf16" if train_bf16(cfg) else "no"]
    args += ["--num_cpu_threads_per_process", str(_threads(cfg, world))]
    args += ["-m", CHILD_MODULE, str(job_file)]
    if not srun:
        return args
    shell = {NODE_RANK, FIRST_NODE}  # left for the task's shell to expand
    script = "exec " + " ".join(a if a in shell else shlex.quote(a) for a in args)
    nodes = str(world.machines)
    head = ["srun", "--nodes", nodes, "--ntasks-per-node", "1", "--kill-on-bad-exit=1"]
    return [*head, "sh", "-c", script]


def _threads(cfg: Config, world: World) -> int:
    """CPU threads per TRAIN process: train.threads, else OMP_NUM_THREADS, else the cores shared
    among this machine's processes (accelerate's own default is 1)."""
    if cfg.train.threads:
        return cfg.train.threads
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, usable_cores() // world.processes)


def display(argv: list[str]) -> str:
    """The command as one shell line (what --dry-run prints and run.log records)."""
    return shlex.join(argv)


# ---------------------------------------------------------------------------------------------
# the trainer the loop drives


def make_trainer(cfg: Config, run_dir: Path) -> Trainer:
    """The round's trainer: in this process (inproc), or an `accelerate launch` child (staged)."""
    if resolved_mode(cfg.runtime) == "staged":
        return StagedTrainer(cfg, run_dir)
    return inproc_trainer(cfg)


def inproc_trainer(cfg: Config) -> Trainer:
    """TRL in the calling process: the loop's trainer in inproc mode, and the child's body."""
    from mbt_online.training.grpo import grpo_sampling
    from mbt_online.training.trainer import TrlTrainer  # torch and TRL: only where training runs

    return TrlTrainer(
        cfg.train,
        bf16=train_bf16(cfg),
        chat_template=cfg.student.chat_template,
        grpo=grpo_sampling(cfg),
    )


def train_bf16(cfg: Config) -> bool:
    """bf16 autocast in TRAIN: `train.bf16`, or by default a bfloat16 student's."""
    if cfg.train.bf16 is not None:
        return cfg.train.bf16
    return cfg.student.dtype == "bfloat16"


class TrainChildFailed(StageFailed):
    """The TRAIN child failed (a non-zero exit, or no result file): the run stops with its last
    log lines, the stage stays unmarked and `--resume` launches it again."""

    def __init__(self, reason: str, run_dir: Path, tail: list[str] | None = None) -> None:
        lines = "".join(f"\n  | {line}" for line in tail or [])
        super().__init__("train", reason + lines)
        self.tail, self.run_dir = list(tail or []), run_dir

    def resume_hint(self) -> str:
        return (
            f"The stage is not marked done; fix the cause, then run `mbt-online train --resume "
            f"{self.run_dir}` to launch TRAIN again."
        )


class StagedTrainer:
    """`contracts.Trainer` over a child process: job file in, result file out."""

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)

    def train(self, job: TrainJob) -> Trained:
        out = Path(job.out_dir).absolute()
        out.mkdir(parents=True, exist_ok=True)
        for stale in (RESULT_FILE, STOP_FILE):  # a killed stage's files are not this one's
            (out / stale).unlink(missing_ok=True)
        job_file = write_json_atomic(out / JOB_FILE, job_spec(job, self.run_dir))
        argv = trainer_command(self.cfg, job_file, World.from_runtime(self.cfg.runtime))
        log.info("stage train: launching %s", display(argv))
        code, tail = run_teed(argv, out / CHILD_LOG, child_env(self.cfg), stop_file=out / STOP_FILE)
        (out / STOP_FILE).unlink(missing_ok=True)
        if code != 0:
            _raise_if_preempted(out)
            reason = f"the TRAIN child exited with status {code}; the end of {out / CHILD_LOG}:"
            self._fail(reason, tail)
        if not (out / RESULT_FILE).is_file():
            self._fail(f"the TRAIN child exited 0 but wrote no {out / RESULT_FILE}", tail)
        return read_result(out / RESULT_FILE)

    def _fail(self, reason: str, tail: list[str]) -> None:
        err = TrainChildFailed(reason, self.run_dir, tail)
        log.error("%s\nthe stage is not marked done: %s", err, err.resume_hint())
        raise err


def job_spec(job: TrainJob, run_dir: Path) -> dict:
    """The job file's content. The rows are not copied: they are datasets already on disk, BUILD's
    beside the train folder (round-<r>/build/{sft,dpo}) and the GRPO stage's samples in its own
    folder (round-<r>/grpo/samples), checked against the job's row counts."""
    out = Path(job.out_dir).absolute()
    build = out.parent / "build"

    def data(name: str, rows: object, folder: Path | None = None) -> str | None:
        n = len(rows)  # type: ignore[arg-type]
        if not n:
            return None
        path = (folder or build) / name
        if not path.is_dir():
            raise FileNotFoundError(f"staged TRAIN reads BUILD's {path}, which does not exist")
        return str(path)

    return {
        "run_dir": str(Path(run_dir).absolute()),
        "out_dir": str(out),
        "start_model": _absolute(job.start_model),
        "reference": _absolute(job.reference) if job.reference else None,
        "seed": job.seed,
        "sft": data("sft", job.sft),
        "dpo": data("dpo", job.pairs),
        "grpo": data("samples", job.grpo, out),
        "sft_rows": len(job.sft),
        "dpo_rows": len(job.pairs),
        "grpo_rows": len(job.grpo),
    }


def _absolute(model: str) -> str:
    """A model folder as an absolute path (the child may start elsewhere: another node's cwd)."""
    path = Path(model).expanduser()
    return str(path.absolute()) if path.exists() else model


def child_env(cfg: Config) -> dict[str, str]:
    """This process's environment (CUDA_VISIBLE_DEVICES, HF_HOME, offline flags pass through),
    with the package importable from the child and the training threads set."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if cfg.train.threads:
        env["OMP_NUM_THREADS"] = str(cfg.train.threads)
    env.pop(NVML_CHECK, None)
    return env


def _raise_if_preempted(out: Path) -> None:
    """A child that ended early because this run was asked to stop: the run stops as preempted
    (exit 3, requeued), not as failed; the stage is unmarked and its checkpoints are kept."""
    from mbt_online import preemption

    name = preemption.requested()
    if name is not None:
        log.warning("TRAIN child stopped on %s; %s", name, out / CHILD_LOG)
        raise preemption.Preempted("the rest of TRAIN", name)


def _forward_stop(proc: subprocess.Popen, stop_file: Path, done: threading.Event) -> None:
    """Write `stop_file` once a stop is requested here, while the child runs."""
    from mbt_online import preemption

    while not done.wait(POLL_S):
        name = preemption.requested()
        if name is not None and proc.poll() is None:
            write_json_atomic(stop_file, {"signal": name})
            log.info("asked the TRAIN child to stop (%s)", stop_file)
            return


def run_teed(
    argv: list[str], log_file: Path, env: dict[str, str], stop_file: Path | None = None
) -> tuple[int, list[str]]:
    """Run `argv`, its output going line by line to `log_file` and to stderr; the exit status and
    the last TAIL_LINES lines. A stop requested meanwhile is written to `stop_file`.

    The child runs in its own session (accelerate's launcher passes no signal on to its ranks),
    with a death signal should this process be killed outright: an interrupt or error here stops
    its whole process group (the launcher and every rank), within seconds while a SIGINT or
    SIGTERM is acted on (`preemption`), and nothing of the group outlives the stage."""
    from mbt_online import preemption

    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES * 4)
    with open(log_file, "a", encoding="utf-8") as sink:
        sink.write(f"$ {display(argv)}\n")
        sink.flush()
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
            preexec_fn=preemption.die_with_parent,
        )
        done = threading.Event()
        if stop_file is not None:
            threading.Thread(
                target=_forward_stop, args=(proc, stop_file, done), daemon=True
            ).start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sink.write(line)
                sink.flush()
                sys.stderr.write(line)
                tail.append(line.rstrip("\n"))
            code = proc.wait()
        finally:
            done.set()
            preemption.stop_group(proc)  # the rest of the group too, once the launcher is gone
    return code, _child_tail(list(tail))


# Python's lines between chained tracebacks: left dangling once accelerate's own traceback is cut.
_CHAIN_LINES = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)


def _child_tail(lines: list[str]) -> list[str]:
    """The last TAIL_LINES lines, without accelerate's own traceback for the failed launch (a
    CalledProcessError that only repeats the command) when it ends the output: the child's error
    is what a user needs to read. accelerate >= 1.16 chains that traceback to the child's stderr,
    so the chaining sentence and blank lines before it go too, leaving the child's error last."""
    if lines and "CalledProcessError" in lines[-1]:
        starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
        if starts and starts[-1] > 0:
            lines = lines[: starts[-1]]
            while lines and (not lines[-1].strip() or lines[-1].strip() in _CHAIN_LINES):
                lines.pop()
    return lines[-TAIL_LINES:]


# ---------------------------------------------------------------------------------------------
# the result file


def write_result(out_dir: Path, trained: Trained) -> Path:
    """The child's answer (rank 0, atomically): what `read_result` turns back into a `Trained`."""
    return write_json_atomic(
        Path(out_dir) / RESULT_FILE,
        {
            "model": trained.model,
            "adapter": list(trained.adapter) if trained.adapter else None,
            "metrics": trained.metrics,
        },
    )


def read_result(path: Path) -> Trained:
    raw = json.loads(path.read_text())
    adapter = tuple(raw["adapter"]) if raw.get("adapter") else None
    return Trained(model=raw["model"], adapter=adapter, metrics=raw["metrics"])  # type: ignore[arg-type]
