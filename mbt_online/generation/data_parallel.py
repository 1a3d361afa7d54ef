"""Data-parallel rollouts (`engine.data_parallel_size` > 1): one engine per child process.

Each child runs one generator of the configured backend (`backends.backend_generator`) on its own
devices (on GPU: `engine.tensor_parallel_size` of them, contiguous) and samples a contiguous slice
of the prompts. The slice's start goes along as `index_offset`, so every prompt and sample gets the
seed it has with one engine (`request_seed(seed, global index) + k`): the split changes which
process samples a prompt, not what it draws. Children are spawned (a fork would copy a CUDA or
vLLM state the parent may hold), start their engines at once, and take handoffs in step.
Releasing the devices for TRAIN reaches every worker too (a sleep sent to one engine leaves the
other shards' memory held: verl #6456): "stop" ends the worker processes, which frees all they
held; "sleep" puts every worker's engine to sleep, and the next handoff wakes each one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import TYPE_CHECKING, Any

from mbt_online import hardware
from mbt_online.contracts import Completion, HandoffMode, ReleaseMode
from mbt_online.hardware import usable_cores

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from mbt_online.config import Config


def slices(total: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous [start, end) ranges covering 0..total, sizes differing by at most one."""
    bounds = [total * r // parts for r in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def worker_devices(rank: int, per_worker: int, visible: list[str]) -> str | None:
    """The CUDA devices of worker `rank` (None: no GPU, nothing to set)."""
    if not visible:
        return None
    chosen = visible[rank * per_worker : (rank + 1) * per_worker]
    if len(chosen) < per_worker:
        raise ValueError(
            f"engine.data_parallel_size x tensor_parallel_size needs "
            f"{(rank + 1) * per_worker} GPUs; {len(visible)} visible"
        )
    return ",".join(chosen)


def _serve(
    conn: Connection, cfg: Config, model_path: str, kwargs: dict, devices: str | None, threads: int
) -> None:
    """A worker: build the engine, then answer ("generate" | "handoff" | "close", args) messages
    with ("ok", result) or ("error", exception)."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    else:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # share the CPU, don't fight for it
    from mbt_online.generation.backends import backend_generator

    try:
        gen = backend_generator(cfg, model_path, **kwargs)
    except Exception as err:  # reported to the parent, which raises it
        conn.send(("error", _picklable(err)))
        return
    conn.send(("ok", None))
    while True:
        op, args = conn.recv()
        if op == "close":
            gen.close()
            conn.send(("ok", None))
            return
        try:
            result = getattr(gen, op)(*args[0], **args[1])
            conn.send(("ok", result))
        except Exception as err:
            conn.send(("error", _picklable(err)))


def _picklable(err: Exception) -> Exception:
    import pickle

    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")


class DataParallelGenerator:
    """`engine.data_parallel_size` engines behind the one `Generator` interface."""

    def __init__(
        self, cfg: Config, model_path: str, *, lora: bool | None = None, seed: int | None = None
    ) -> None:
        self.size = cfg.engine.data_parallel_size
        per_worker = getattr(cfg.engine, "tensor_parallel_size", 1)
        visible = hardware.visible_devices()
        threads = max(1, usable_cores() // self.size)
        ctx = mp.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for rank in range(self.size):
            parent, child = ctx.Pipe()
            devices = worker_devices(rank, per_worker, visible)
            kwargs = dict(lora=lora, seed=seed)
            proc = ctx.Process(
                target=_serve,
                args=(child, cfg, str(model_path), kwargs, devices, threads),
                daemon=True,
            )
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)
        try:
            self._gather(range(self.size))
        except BaseException:
            self.close()
            raise

    def generate(self, messages: list[list[dict]], **kwargs: Any) -> list[list[Completion]]:
        """n completions per chat, in order: worker r samples slice r, seeded by global index."""
        base = kwargs.pop("index_offset", 0)
        busy = []
        for rank, (start, end) in enumerate(slices(len(messages), self.size)):
            if end > start:
                call = ((messages[start:end],), {**kwargs, "index_offset": base + start})
                self._conns[rank].send(("generate", call))
                busy.append(rank)
        return [c for part in self._gather(busy) for c in part]

    def handoff(self, mode: HandoffMode, model_dir: str, adapter_dir: str | None = None) -> None:
        """Every worker takes the new weights before the next generation."""
        for conn in self._conns:
            conn.send(("handoff", ((mode, model_dir, adapter_dir), {})))
        self._gather(range(self.size))

    def release(self, mode: ReleaseMode) -> None:
        """Every worker gives its devices back: "stop" ends the processes, "sleep" sleeps each
        engine (the next handoff or generation wakes it)."""
        if mode == "stop":
            self.close()
            return
        for conn in self._conns:
            conn.send(("release", ((mode,), {})))
        self._gather(range(self.size))

    def close(self) -> None:
        """Stop the workers; safe to call twice."""
        for rank, (conn, proc) in enumerate(zip(self._conns, self._procs, strict=True)):
            if proc.is_alive():
                try:
                    conn.send(("close", ((), {})))
                    self._gather([rank])
                except (OSError, EOFError, RuntimeError):
                    pass
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        self._conns, self._procs = [], []

    def _gather(self, ranks: Any) -> list[Any]:
        """Every named worker's answer, in rank order; the first error is raised after all
        answered (so no worker is left with an unread reply)."""
        results, errors = [], []
        for rank in ranks:
            try:
                status, value = self._conns[rank].recv()
            except EOFError:
                status, value = "error", RuntimeError(f"engine worker {rank} died")
            (errors if status == "error" else results).append(value)
        if errors:
            raise errors[0]
        return results
