"""vLLM's engine arguments with the platform's choices resolved, without vLLM."""

from __future__ import annotations

import pytest

from mbt_online.generation.vllm_args import kvcache_space, llm_kwargs


@pytest.mark.parametrize(
    ("gib", "space"),
    [(0.0, "1"), (0.25, "1"), (1.0, "1"), (1.01, "2"), (2.5, "3"), (4.0, "4"), (16, "16")],
)
def test_kvcache_space_is_whole_gib_rounded_up_and_at_least_one(gib: float, space: str):
    assert kvcache_space(gib) == space


def kwargs(**over) -> dict:
    base = dict(
        dtype="bfloat16",
        max_model_len=4096,
        seed=7,
        enforce_eager=None,
        chunked_prefill=None,
        max_num_seqs=None,
        prefix_caching=None,
        tensor_parallel_size=1,
        gpu_memory_utilization=0.85,
        gpu=False,
    )
    return llm_kwargs(**{**base, **over})


def test_cpu_defaults_are_eager_and_whole_prefills():
    assert kwargs(gpu=False) == {
        "dtype": "bfloat16",
        "max_model_len": 4096,
        "seed": 7,
        "enforce_eager": True,
        "enable_chunked_prefill": False,
        "max_num_batched_tokens": 8192,  # at least vLLM's usual batch, so no prompt is cut
    }


def test_gpu_defaults_leave_graphs_and_chunked_prefill_to_vllm():
    assert kwargs(gpu=True) == {
        "dtype": "bfloat16",
        "max_model_len": 4096,
        "seed": 7,
        "enforce_eager": False,
        "gpu_memory_utilization": 0.85,
    }


def test_whole_prefills_batch_at_least_the_context_window():
    out = kwargs(max_model_len=32768, gpu=False)
    assert out["max_num_batched_tokens"] == 32768
    assert (
        kwargs(max_model_len=32768, chunked_prefill=False, gpu=True)["max_num_batched_tokens"]
        == 32768
    )


@pytest.mark.parametrize("gpu", [False, True])
def test_explicit_choices_override_the_platform(gpu: bool):
    eager = kwargs(enforce_eager=not gpu, gpu=gpu)
    assert eager["enforce_eager"] is (not gpu)
    on = kwargs(chunked_prefill=True, gpu=gpu)
    assert on["enable_chunked_prefill"] is True and "max_num_batched_tokens" not in on
    off = kwargs(chunked_prefill=False, gpu=gpu)
    assert off["enable_chunked_prefill"] is False and off["max_num_batched_tokens"] == 8192


def test_optional_knobs_appear_only_when_set():
    out = kwargs(max_num_seqs=32, prefix_caching=False, tensor_parallel_size=4, gpu=True)
    assert out["max_num_seqs"] == 32
    assert out["enable_prefix_caching"] is False  # an explicit False is passed on
    assert out["tensor_parallel_size"] == 4
    plain = kwargs(gpu=True)
    absent = ("max_num_seqs", "enable_prefix_caching", "tensor_parallel_size")
    assert not any(k in plain for k in absent)
    assert "tensor_parallel_size" not in kwargs(tensor_parallel_size=1, gpu=True)


def test_memory_utilization_is_a_gpu_argument_only():
    assert "gpu_memory_utilization" not in kwargs(gpu_memory_utilization=0.5, gpu=False)
    assert kwargs(gpu_memory_utilization=0.5, gpu=True)["gpu_memory_utilization"] == 0.5
