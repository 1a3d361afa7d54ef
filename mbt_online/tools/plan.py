"""What `mbt-online train --dry-run` adds below the resolved config: which runtime would run each
stage and the student's training memory, as YAML comments, without creating or loading anything.

Honest about what exists: generation runs in the engine the config names, and TRAIN runs in the
same process (one process, whatever the hardware overlay assumes), since staged TRAIN children and
multi-GPU launches are not built yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mbt_online.tools.memory import GB, estimate, shape_of

if TYPE_CHECKING:
    from mbt_online.config import Config


def plan_text(cfg: Config) -> str:
    """Comment lines: the runtime, the global batch today, and the memory estimate."""
    lines = runtime_lines(cfg) + memory_lines(cfg)
    return "".join(f"# {line}\n" for line in lines)


def runtime_lines(cfg: Config) -> list[str]:
    e, t = cfg.engine, cfg.train
    backend = getattr(e, "backend", "vllm")
    lines = [
        f"generator: engine.backend={backend}, engine.handoff={e.handoff} (in this process)",
        "TRAIN runs in-process: one process (no separate training command, no multi-GPU "
        "launch yet)",
    ]
    for name in ("sft", "dpo"):
        step = getattr(t, name)
        if step.enabled:
            lines.append(
                f"{name} global batch today: batch_size {step.batch_size} x grad_accum "
                f"{step.grad_accum} x 1 process = {step.batch_size * step.grad_accum}"
            )
    return lines


def memory_lines(cfg: Config) -> list[str]:
    """The student's training memory at train.sft.max_length tokens, or why there is none."""
    model = cfg.student.model
    if model == "bootstrap":
        return ["memory: the bootstrap student is tiny (no estimate needed)"]
    shape = shape_of(model)
    if shape is None:
        return [f"memory: unknown size for {model} (no config.json there, not a known name)"]
    t = cfg.train
    tokens = t.sft.batch_size * t.sft.max_length
    e = estimate(shape, method=t.method, tokens=tokens, lora_rank=t.lora.r)
    return [
        f"memory (train.method={t.method}, {shape.params() / 1e9:.2f}B parameters, one process, "
        f"{tokens:,} tokens per micro batch): weights {e.weights / GB:.1f} GB, grads "
        f"{e.grads / GB:.1f} GB, AdamW {e.optimizer / GB:.1f} GB, activations "
        f"{e.activations / GB:.1f} GB, total {e.total / GB:.1f} GB (tools/memory.py)"
    ]
