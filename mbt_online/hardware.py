"""Machine facts every stage asks: is a CUDA device here (asked without initialising CUDA),
which devices and cores this process may use, a free port, and where TRAIN runs. One module so
the samplers and the staged launcher read the same answers, and tests patch one place."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mbt_online.config import Config, RuntimeConfig

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def cuda_present() -> bool:
    """Whether this machine has a CUDA device, asked without initialising CUDA here.

    torch's NVML-based check counts devices without `cuInit`, so the orchestrator stays free of a
    CUDA context (a staged run's devices belong to the engine and the TRAIN child)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    import torch

    saved = os.environ.get(NVML_CHECK)
    os.environ[NVML_CHECK] = "1"
    try:
        return torch.cuda.is_available()
    finally:
        if saved is None:
            os.environ.pop(NVML_CHECK, None)
        else:
            os.environ[NVML_CHECK] = saved


def resolved_mode(runtime: RuntimeConfig) -> Literal["inproc", "staged"]:
    """`runtime.mode` with auto resolved: staged where CUDA is present, inproc otherwise."""
    if runtime.mode != "auto":
        return runtime.mode
    return "staged" if cuda_present() else "inproc"


def free_port() -> int:
    """A TCP port free on this machine now (the OS's pick), for the rendezvous of one launch."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def usable_cores() -> int:
    """The cores this process may run on: its affinity mask (taskset, a SLURM allocation, a
    pinned test worker) where the OS has one, else every core."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def visible_devices() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d for d in listed.split(",") if d.strip()]
    import torch  # the NVML count: no CUDA context in the parent

    return [str(i) for i in range(torch.cuda.device_count())]


def runtime_mode(cfg: Config) -> Literal["inproc", "staged"]:
    """Where TRAIN runs: `runtime.mode` resolved (`resolved_mode`: auto = staged where CUDA
    is present). Read defensively: a config without a runtime section trains in-process."""
    runtime = getattr(cfg, "runtime", None)
    if runtime is None:
        return "inproc"
    return resolved_mode(runtime)
