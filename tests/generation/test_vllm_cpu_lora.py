"""The one-adapter LoRA kernels against vLLM's own CPU kernels, loaded untouched from its file."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mbt_online.generation import vllm_cpu_lora

lora_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")


def pristine_vllm_ops():
    """A fresh copy of vLLM's lora_ops module: `install()` may already have patched the real one."""
    spec = importlib.util.spec_from_file_location("pristine_lora_ops", lora_ops.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VLLM = pristine_vllm_ops()
TOKENS, IN, OUT, SLOTS = 7, 24, 40, 3


def weights(stacked: bool) -> torch.Tensor:
    w = torch.randn(SLOTS, OUT, IN, generator=torch.Generator().manual_seed(1))
    return w.unsqueeze(1) if stacked else w  # vLLM stacks each slice as [slots, 1, out, in]


INDICES = {
    "one adapter": torch.full((TOKENS,), 1),
    "no adapter (-1)": torch.full((TOKENS,), -1),
    "mixed": torch.tensor([0, 1, 1, 2, -1, 0, 2]),
}


@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("case", list(INDICES))
def test_each_kernel_matches_vllms_own(case, stacked):
    idx, w = INDICES[case], weights(stacked)
    x = torch.randn(TOKENS, IN, generator=torch.Generator().manual_seed(2))
    base = torch.randn(TOKENS, OUT + 8, generator=torch.Generator().manual_seed(3))
    calls = [
        ("bgmv_shrink", (x, w, idx, 0.5), {}),
        ("bgmv_expand", (x, w, idx), {"add_inputs": True}),
        ("bgmv_expand", (x, w, idx), {"add_inputs": False}),
        ("bgmv_expand_slice", (x, w, idx, 4, OUT), {"add_inputs": True}),
    ]
    for name, (inputs, wts, indices, *rest), kw in calls:
        ours, theirs = base.clone(), base.clone()
        getattr(vllm_cpu_lora, name)(inputs, wts, ours, indices, *rest, **kw)
        getattr(VLLM, name)(inputs, wts, theirs, indices, *rest, **kw)
        assert not torch.equal(ours, base), name  # the kernel wrote something
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5, msg=name)


def test_the_one_adapter_path_copies_no_matrix_per_token(monkeypatch):
    """The gather (weights[indices]: a copy per token) is what the fast path removes."""
    gathered = []
    real_index = torch.Tensor.__getitem__

    def spy(self, key):
        if isinstance(key, torch.Tensor) and key.dim() == 1:
            gathered.append(key.numel())
        return real_index(self, key)

    monkeypatch.setattr(torch.Tensor, "__getitem__", spy)
    out = torch.zeros(TOKENS, OUT)
    w, x = weights(True), torch.randn(TOKENS, IN)
    vllm_cpu_lora.bgmv_expand(x, w, out, INDICES["one adapter"], add_inputs=False)
    assert gathered == []
    vllm_cpu_lora.bgmv_expand(x, w, out, INDICES["mixed"], add_inputs=False)
    assert gathered == [TOKENS]


def test_install_replaces_the_kernels_prefill_and_decode_use():
    from vllm.lora.punica_wrapper import punica_cpu

    assert vllm_cpu_lora.install()
    for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice"):
        assert getattr(punica_cpu, name) is getattr(vllm_cpu_lora, name)
        assert getattr(lora_ops, name) is getattr(vllm_cpu_lora, name)  # sgmv_* call these
    assert vllm_cpu_lora.install()  # idempotent
