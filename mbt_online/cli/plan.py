"""What `mbt-online train --dry-run` adds below the resolved config: how each stage would run (the
generator's settings, the exact TRAIN command for the configured world) and the student's
training memory per device, as YAML comments, without creating or loading anything.

The TRAIN command is `staged.trainer_command`, the one a staged run executes, shown for round 1's
job file; a rendezvous port of 0 is chosen per launch, so it shows as a placeholder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mbt_online.training.memory import GB, Sharding, estimate, shape_of

# GRPO's rows are prompt + completion; the prompt's length is the data's, unknown to a dry run
ASSUMED_PROMPT = 2048

if TYPE_CHECKING:
    from mbt_online.config import Config
    from mbt_online.training.staged import World


def plan_text(cfg: Config, run_dir: Path | None = None) -> str:
    """Comment lines: the generator, the TRAIN runtime and command, batches, memory."""
    from mbt_online.hardware import resolved_mode
    from mbt_online.training.staged import World

    world = World.from_runtime(cfg.runtime, pick_port=False)
    staged = resolved_mode(cfg.runtime) == "staged"
    lines = generator_lines(cfg, staged) + train_lines(cfg, world, staged, run_dir)
    lines += batch_lines(cfg, world.size if staged else 1)
    lines += memory_lines(cfg, world.size if staged else 1, _sharding(cfg) if staged else "none")
    return "".join(f"# {line}\n" for line in lines)


def generator_lines(cfg: Config, staged: bool) -> list[str]:
    e = cfg.engine
    settings = {
        "engine.backend": getattr(e, "backend", "vllm"),
        "engine.handoff": e.handoff,
        "engine.tensor_parallel_size": getattr(e, "tensor_parallel_size", 1),
        "engine.data_parallel_size": getattr(e, "data_parallel_size", 1),
        "engine.between_stages": _between_stages(cfg),
        "engine.gpu_memory_utilization": _memory_share(cfg, staged),
    }
    where = "in this process" if getattr(e, "data_parallel_size", 1) == 1 else "engine processes"
    if settings["engine.backend"] == "vllm-serve":
        srun = cfg.runtime.launcher == "srun"
        where = f"`vllm serve` on {cfg.runtime.num_machines} nodes" if srun else "`vllm serve`"
    text = ", ".join(f"{k}={_show(v)}" for k, v in settings.items())
    return [f"generator: {text} ({where}; the orchestrator, mode {_mode(cfg, staged)})"]


def _between_stages(cfg: Config) -> str:
    """The resolved value: `auto` depends on the machine, and a dry run often runs on a login
    node without the GPU the job will get, so both readings are shown."""
    from mbt_online.config import ConfigError
    from mbt_online.generation.backends import between_stages

    mode = cfg.engine.between_stages
    try:
        here = between_stages(cfg)
    except ConfigError as e:
        return f"{mode} (refused on this machine: {e})"
    if mode != "auto":
        return mode
    on_gpu = "sleep" if cfg.engine.backend == "vllm" else "stop"
    return f"auto -> {here} on this machine, {on_gpu} on a CUDA machine"


def _memory_share(cfg: Config, staged: bool) -> str:
    from mbt_online.generation.backends import INPROC_MEMORY_SHARE, STAGED_MEMORY_SHARE

    share = cfg.engine.gpu_memory_utilization
    if share is not None:
        return str(share)
    return f"null -> {STAGED_MEMORY_SHARE if staged else INPROC_MEMORY_SHARE}"


def _mode(cfg: Config, staged: bool) -> str:
    mode = "staged" if staged else "inproc"
    return f"auto -> {mode} on this machine" if cfg.runtime.mode == "auto" else mode


def _show(value: object) -> str:
    return "null" if value is None else str(value)


def train_lines(cfg: Config, world: World, staged: bool, run_dir: Path | None) -> list[str]:
    """In-process TRAIN, or the child's launch command for round 1."""
    from mbt_online.training.staged import display, trainer_command

    if not staged:
        grpo = ", then GRPO on samples drawn again" if cfg.train.grpo.enabled else ""
        return [
            f"TRAIN runs in-process{grpo}: one process beside the generator (runtime.mode="
            f"{_mode(cfg, staged)}; runtime.mode=staged launches it as a child)"
        ]
    job = (run_dir or cfg.run_dir()) / "round-1" / "train" / "job.json"
    r = cfg.runtime
    return [
        f"TRAIN runs staged: a child process per round, {r.num_processes} process(es) x "
        f"{r.num_machines} machine(s) = world {world.size}, launcher={r.launcher}; round 1's "
        "command:",
        display(trainer_command(cfg, job, world)),
        *_grpo_command(cfg, world, run_dir),
    ]


def _grpo_command(cfg: Config, world: World, run_dir: Path | None) -> list[str]:
    """GRPO's own launch after TRAIN's, on the samples drawn again from TRAIN's model."""
    from mbt_online.training.staged import display, trainer_command

    if not cfg.train.grpo.enabled:
        return []
    job = (run_dir or cfg.run_dir()) / "round-1" / "grpo" / "job.json"
    return [
        "GRPO runs after TRAIN (the engine takes TRAIN's model and rolls out again first); "
        "round 1's command:",
        display(trainer_command(cfg, job, world)),
    ]


def batch_lines(cfg: Config, world: int) -> list[str]:
    """Each step's global batch: per-device batch x accumulation x processes."""
    from mbt_online.config.learning import grad_accum_for

    t, lines = cfg.train, []
    for name in ("sft", "dpo"):
        step = getattr(t, name)
        if step.enabled:
            accum = grad_accum_for(step, world, f"train.{name}")
            lines.append(
                f"{name} global batch: batch_size {step.batch_size} x grad_accum {accum} x "
                f"{world} process{'es' if world > 1 else ''} = {step.batch_size * accum * world}"
            )
    g, k = t.grpo, cfg.rollout.samples
    if g.enabled:
        per_device = g.per_device_train_batch_size or 4 * k
        total = per_device * g.gradient_accumulation_steps * world
        lines.append(
            f"grpo global batch: {per_device} completions x grad_accum "
            f"{g.gradient_accumulation_steps} x {world} process{'es' if world > 1 else ''} = "
            f"{total} ({total // k} questions x rollout.samples {k})"
        )
    return lines


def _sharding(cfg: Config) -> Sharding:
    from mbt_online.training.staged import accelerate_config_path, sharding_of

    return sharding_of(accelerate_config_path(cfg.runtime.accelerate_config))


def memory_lines(cfg: Config, world: int = 1, sharding: Sharding = "none") -> list[str]:
    """The student's training memory per device at train.sft.max_length tokens, or why none."""
    model = cfg.student.model
    if model == "bootstrap":
        return ["memory: the bootstrap student is tiny (no estimate needed)"]
    shape = shape_of(model)
    if shape is None:
        return [f"memory: unknown size for {model} (no config.json there, not a known name)"]
    t = cfg.train
    tokens = t.sft.batch_size * t.sft.max_length
    e = estimate(
        shape,
        method=t.method,
        tokens=tokens,
        lora_rank=t.lora.r,
        world_size=world,
        sharding=sharding,
    )
    procs = f"{world} process{'es' if world > 1 else ''}, sharding {sharding}"
    lines = [
        f"memory per device (train.method={t.method}, {shape.params() / 1e9:.2f}B parameters, "
        f"{procs}, {tokens:,} tokens per micro batch): weights {e.weights / GB:.1f} GB, grads "
        f"{e.grads / GB:.1f} GB, AdamW {e.optimizer / GB:.1f} GB, activations "
        f"{e.activations / GB:.1f} GB, total {e.total / GB:.1f} GB (training/memory.py)"
    ]
    if t.grpo.enabled:
        # a GRPO micro batch: its completions, each its prompt plus up to rollout.max_tokens
        per_device = t.grpo.per_device_train_batch_size or 4 * cfg.rollout.samples
        row = min(cfg.student.max_model_len, cfg.rollout.max_tokens + ASSUMED_PROMPT)
        g_tokens = per_device * row
        kw = dict(method=t.method, lora_rank=t.lora.r, world_size=world, sharding=sharding)
        g = estimate(shape, tokens=g_tokens, **kw)
        ref = " + a reference copy for the KL term" if t.grpo.beta > 0 else ""
        lines.append(
            f"grpo memory per device ({per_device} completions x up to {row:,} tokens, a prompt of "
            f"{ASSUMED_PROMPT:,} assumed = "
            f"{g_tokens:,} tokens per micro batch): activations {g.activations / GB:.1f} GB, "
            f"total {g.total / GB:.1f} GB{ref}"
        )
    return lines
