"""The backend choice: which sampler serves the student (`engine.backend`, data parallelism),
with which arguments, and what it does while TRAIN runs. The one place that picks, so the loop,
EVAL outside the loop and the benchmarks all get the same generator for one config; each backend
is imported only when chosen, so neither backend's libraries load for the other."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from mbt_online import hardware

if TYPE_CHECKING:
    from mbt_online.config import Config
    from mbt_online.contracts import Generator

# vLLM's memory share when TRAIN shares the device with the live engine, and when it does not
INPROC_MEMORY_SHARE, STAGED_MEMORY_SHARE = 0.45, 0.85


def make_generator(
    cfg: Config, model_path: str, *, lora: bool | None = None, seed: int | None = None
) -> Generator:
    """The generator `engine.backend` asks for, on `model_path`: the one place that picks.

    `vllm` is `Engine`; `transformers` is `transformers_engine.TransformersEngine` (no vLLM
    needed), imported only when chosen so neither backend's libraries load for the other. Both
    take the same arguments (`engine_kwargs`) and serve the `contracts.Generator` interface. With
    `engine.data_parallel_size` > 1, that many of them run in child processes
    (`data_parallel.DataParallelGenerator`). `vllm-serve` is `served.ServedGenerator`: `vllm
    serve` processes (one per node under runtime.launcher=srun) over HTTP.
    """
    check_devices(cfg)
    if cfg.engine.backend == "vllm-serve":
        from mbt_online.generation.served import ServedGenerator

        return ServedGenerator.from_config(cfg, model_path, lora=lora, seed=seed)
    if cfg.engine.data_parallel_size > 1:
        from mbt_online.generation.data_parallel import DataParallelGenerator

        return DataParallelGenerator(cfg, model_path, lora=lora, seed=seed)
    return backend_generator(cfg, model_path, lora=lora, seed=seed)


def backend_generator(
    cfg: Config, model_path: str, *, lora: bool | None = None, seed: int | None = None
) -> Generator:
    """One generator of the configured backend in this process (a data-parallel worker's)."""
    if cfg.engine.backend == "transformers":
        from mbt_online.generation.transformers_engine import TransformersEngine

        return TransformersEngine.from_config(cfg, model_path, lora=lora, seed=seed)
    from mbt_online.generation.vllm_engine import Engine

    return Engine.from_config(cfg, model_path, lora=lora, seed=seed)


def between_stages(cfg: Config) -> Literal["keep", "stop", "sleep"]:
    """What the student's engine does while TRAIN runs (`engine.between_stages`, auto resolved).

    auto keeps the engine where TRAIN runs in-process on a CPU (nothing to give back: RAM is
    shared and a restart costs seconds), sleeps a vLLM engine on GPU (weights parked in host
    memory, back in seconds) and stops it otherwise. vLLM's sleep mode exists only on CUDA-like
    platforms (`Platform.is_sleep_mode_available`), so an explicit `sleep` on a CPU is refused
    here, at engine start, rather than after the round's rollouts."""
    mode, gpu = cfg.engine.between_stages, hardware.cuda_present()
    if mode == "auto":
        if not gpu and hardware.runtime_mode(cfg) == "inproc":
            return "keep"
        return "sleep" if gpu and cfg.engine.backend == "vllm" else "stop"
    if mode == "sleep" and cfg.engine.backend == "vllm" and not gpu:
        from mbt_online.config import ConfigError

        raise ConfigError(
            "engine.between_stages=sleep needs vLLM's sleep mode, which runs only on a GPU; "
            "this machine has none: use engine.between_stages=stop (or keep)"
        )
    return mode


def check_devices(cfg: Config) -> None:
    """tensor_parallel_size x data_parallel_size GPUs must be visible before any engine starts
    (vLLM would otherwise fail inside a worker, or wait for a device it cannot get)."""
    tp, dp = cfg.engine.tensor_parallel_size, cfg.engine.data_parallel_size
    if tp == 1:
        return  # one device per engine: the data-parallel workers check their own slices
    from mbt_online.config import ConfigError

    if not hardware.cuda_present():
        raise ConfigError(
            f"engine.tensor_parallel_size={tp} needs {tp} GPUs per engine; this machine has "
            "none: set engine.tensor_parallel_size=1"
        )
    visible = len(hardware.visible_devices())
    if tp * dp > visible:
        raise ConfigError(
            f"engine.tensor_parallel_size={tp} x engine.data_parallel_size={dp} needs {tp * dp} "
            f"GPUs; {visible} visible"
        )


def engine_kwargs(
    cfg: Config, *, lora: bool | None = None, seed: int | None = None
) -> dict[str, Any]:
    """`Engine` arguments from a run config, the one place they are read: the student's dtype and
    context window, the engine section's memory settings. `lora` (default: the config's handoff
    is "lora") reserves adapter slots; `seed` (default: `run.seed`) is the engine's own.

    Only the student's engine (`lora` left to the config) can be put to sleep before TRAIN, so
    only it starts with vLLM's sleep mode; a teacher's or a check script's (`lora=False`) never
    sleeps. The memory share defaults higher in staged mode, where TRAIN never shares the device
    with a live engine."""
    share = cfg.engine.gpu_memory_utilization
    if share is None:
        share = (
            STAGED_MEMORY_SHARE if hardware.runtime_mode(cfg) == "staged" else INPROC_MEMORY_SHARE
        )
    return dict(
        dtype=cfg.student.dtype,
        max_model_len=cfg.student.max_model_len,
        seed=cfg.run.seed if seed is None else seed,
        enable_lora=cfg.engine.handoff == "lora" if lora is None else lora,
        max_lora_rank=cfg.train.lora.r,
        kvcache_gib=cfg.engine.kvcache_gib,
        enforce_eager=cfg.engine.enforce_eager,
        chunked_prefill=cfg.engine.chunked_prefill,
        max_num_seqs=cfg.engine.max_num_seqs,
        prefix_caching=cfg.engine.prefix_caching,
        gpu_memory_utilization=share,
        chat_template=cfg.student.chat_template,
        tensor_parallel_size=cfg.engine.tensor_parallel_size,
        sleep_mode=lora is None and between_stages(cfg) == "sleep",
        sample_logprobs=cfg.train.grpo.enabled,
    )
