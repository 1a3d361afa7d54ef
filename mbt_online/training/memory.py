"""Training memory per GPU for a decoder-only student: weights, gradients, optimizer, activations.

An estimate to choose full fine-tuning or LoRA and a sharding before a GPU is rented, not a
measurement. It follows what `mbt_online.training.trainer` does today: fp32 master weights under
bf16 autocast (`master_bytes=4`; 2 for pure bf16 weights), AdamW with two fp32 moments per trained
parameter, gradient checkpointing per decoder layer (HF's default), and a loss computed on fp32
logits. Per token, activations are the fp32 residual stream at every layer boundary, one layer's
bf16 intermediates while it is recomputed, and the logits (bf16, their fp32 copy and its gradient):
at Qwen3's 151,936-token vocabulary the logits dominate long rows. Sharding (ZeRO-3 / FSDP) divides
weights, gradients and optimizer state by the world size; ZeRO-2 only gradients and optimizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

GB = 1e9  # decimal gigabytes, as GPU memory is quoted (80 GB)
Sharding = Literal["none", "zero2", "zero3"]


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a transformers `config.json` that size a Llama/Qwen-style decoder."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    @classmethod
    def from_config(cls, c: dict) -> ModelShape:
        heads = c["num_attention_heads"]
        return cls(
            hidden=c["hidden_size"],
            layers=c["num_hidden_layers"],
            intermediate=c["intermediate_size"],
            heads=heads,
            kv_heads=c.get("num_key_value_heads") or heads,
            head_dim=c.get("head_dim") or c["hidden_size"] // heads,
            vocab=c["vocab_size"],
            tied=bool(c.get("tie_word_embeddings", False)),
        )

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of one layer's linears: q, k, v, o, gate, up, down (LoRA's all-linear)."""
        h, q, kv, i = (
            self.hidden,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.intermediate,
        )
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def params(self) -> int:
        """Every parameter: linears, norms (two per layer, Qwen3's q/k norms, the final one),
        the embedding and an untied LM head."""
        per_layer = (
            sum(a * b for a, b in self.linear_shapes()) + 2 * self.hidden + 2 * self.head_dim
        )
        embed = self.vocab * self.hidden
        return self.layers * per_layer + embed * (1 if self.tied else 2) + self.hidden

    def lora_params(self, rank: int) -> int:
        """Adapter parameters with `rank` on every linear of every layer (target all-linear)."""
        return self.layers * sum(rank * (a + b) for a, b in self.linear_shapes())


# The students of the paper and this project's presets (their hub config.json values).
KNOWN_SHAPES: dict[str, ModelShape] = {
    "Qwen/Qwen3-0.6B": ModelShape(1024, 28, 3072, 16, 8, 128, 151936, True),
    "Qwen/Qwen3-1.7B": ModelShape(2048, 28, 6144, 16, 8, 128, 151936, True),
    "Qwen/Qwen3-4B": ModelShape(2560, 36, 9728, 32, 8, 128, 151936, True),
    "Qwen/Qwen3-8B": ModelShape(4096, 36, 12288, 32, 8, 128, 151936, False),
    "smollm2-135m-instruct": ModelShape(576, 30, 1536, 9, 3, 64, 49152, True),
}


def shape_of(model: str) -> ModelShape | None:
    """A student's shape: its folder's config.json, else a known name (case-insensitive)."""
    config = Path(model).expanduser() / "config.json"
    if config.is_file():
        try:
            return ModelShape.from_config(json.loads(config.read_text()))
        except (KeyError, TypeError, ValueError):
            return None
    by_lower = {name.lower(): shape for name, shape in KNOWN_SHAPES.items()}
    return by_lower.get(model.lower())


@dataclass(frozen=True)
class Estimate:
    """Bytes per GPU, by kind."""

    weights: float
    grads: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations


def activation_bytes(shape: ModelShape, tokens: int, checkpointing: bool = True) -> float:
    """Activations of one forward/backward over `tokens` tokens (micro batch x length)."""
    s = shape
    layer = 2 * (4 * s.hidden + 3 * (s.heads + s.kv_heads) * s.head_dim + 4 * s.intermediate)
    boundaries = 4 * s.hidden * s.layers  # the fp32 residual stream kept at each layer input
    inner = layer if checkpointing else layer * s.layers
    logits = (2 + 4 + 4) * s.vocab
    return float(tokens * (boundaries + inner + logits))


def estimate(
    shape: ModelShape,
    *,
    method: Literal["full", "lora"],
    tokens: int,
    world_size: int = 1,
    sharding: Sharding = "none",
    lora_rank: int = 64,
    master_bytes: int = 4,
    checkpointing: bool = True,
) -> Estimate:
    """Training memory per GPU; AdamW keeps two fp32 moments per trained parameter."""
    params = shape.params()
    trained = params if method == "full" else shape.lora_params(lora_rank)
    weights = params * master_bytes + (0 if method == "full" else trained * master_bytes)
    grads, optimizer = trained * master_bytes, trained * 8.0
    if sharding == "zero3":
        weights /= world_size
    if sharding in ("zero2", "zero3"):
        grads, optimizer = grads / world_size, optimizer / world_size
    return Estimate(weights, grads, optimizer, activation_bytes(shape, tokens, checkpointing))


def table(shape: ModelShape, tokens: int, lora_rank: int = 64) -> list[str]:
    """The memory table of a preset's header: full vs LoRA, one GPU and 8 GPUs under ZeRO-3."""
    rows = [
        f"{'per GPU, GB':<24}{'weights':>8}{'grads':>8}{'AdamW':>8}{'activ.':>8}{'total':>8}",
    ]
    for method in ("full", "lora"):
        for world, sharding in ((1, "none"), (8, "zero3")):
            e = estimate(
                shape,
                method=method,
                tokens=tokens,
                world_size=world,
                sharding=sharding,  # type: ignore[arg-type]
                lora_rank=lora_rank,
            )
            label = f"{method}, {'1 GPU' if world == 1 else '8 GPUs ZeRO-3'}"
            cells = (e.weights, e.grads, e.optimizer, e.activations, e.total)
            rows.append(f"{label:<24}" + "".join(f"{v / GB:>8.1f}" for v in cells))
    return rows
