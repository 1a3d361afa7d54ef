"""The sort-free top-k + top-p masker against vLLM's own, on the logits and through the engine."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm")

from mbt_online.generation import vllm_cpu_sampler  # noqa: E402
from mbt_online.generation.vllm_cpu_sampler import shipped_masker, top_k_top_p  # noqa: E402


def both(logits, k, p):
    """(vLLM's result, ours) on copies of the same inputs."""
    ref = shipped_masker()(logits.clone(), k.clone(), p.clone(), allow_cpu_sync=True)
    ours = top_k_top_p(logits.clone(), k.clone(), p.clone(), allow_cpu_sync=True)
    return ref, ours


@pytest.mark.parametrize("vocab", [300, 1457, 8192])
def test_same_masked_logits_as_vllm(vocab):
    gen = torch.Generator().manual_seed(vocab)
    for trial in range(12):
        logits = torch.randn(33, vocab, generator=gen) * (1 + trial % 4)
        k = torch.randint(1, 60, (33,), generator=gen)
        p = torch.rand(33, generator=gen) * 0.9 + 0.1
        p[::3] = 1.0  # rows with top-k only beside top-p rows
        ref, ours = both(logits, k, p)
        assert torch.equal(ref, ours)
        kept = torch.isfinite(ours).sum(dim=1)
        assert bool(((kept >= 1) & (kept <= k)).all())  # the masks were not trivial
        assert bool((kept[1::3] < k[1::3]).any())  # top-p cut below k somewhere


def test_bfloat16_ties_keep_vllms_tokens_and_the_tied_ones():
    """bf16 logits tie often. The top-k keeps its ties as vLLM does; at the top-p edge vLLM's
    unstable sort keeps an arbitrary one of equal logits, this path all of them: the kept set
    holds vLLM's and adds only logits equal to the smallest kept one."""
    gen = torch.Generator().manual_seed(5)
    logits = (torch.randn(64, 4096, generator=gen) * 3).to(torch.bfloat16).float()
    k, p = torch.full((64,), 20), torch.rand(64, generator=gen) * 0.8 + 0.15
    ref, ours = both(logits, k, p)
    theirs, kept = torch.isfinite(ref), torch.isfinite(ours)
    assert bool((kept | ~theirs).all())  # every token vLLM keeps is kept
    edge = ours.masked_fill(~kept, float("inf")).min(dim=1, keepdim=True).values
    extra = kept & ~theirs
    assert bool((logits[extra] == edge.expand_as(logits)[extra]).all())
    assert torch.equal(ours[kept], logits[kept])  # kept logits are untouched
    assert 0 < int(extra.sum()) < int(kept.sum()) // 4  # ties happen, as the exception


def test_rows_it_cannot_take_fall_back_to_vllm(monkeypatch):
    calls = []
    vllm_masker = shipped_masker()

    def spy(*args, **kwargs):
        calls.append(1)
        return vllm_masker(*args, **kwargs)

    monkeypatch.setattr(vllm_cpu_sampler, "shipped_masker", lambda: spy)
    logits = torch.randn(8, 500, generator=torch.Generator().manual_seed(0))
    k, p = torch.full((8,), 20), torch.full((8,), 0.9)
    ref = vllm_masker(logits.clone(), k.clone(), p.clone(), allow_cpu_sync=True)
    assert torch.equal(top_k_top_p(logits.clone(), k, p, True), ref) and calls == []
    wide = torch.randn(8, 4000, generator=torch.Generator().manual_seed(1)).clamp(max=0)
    cases = [
        (logits, torch.tensor([20] * 7 + [500]), p),  # one row without a top-k (k = vocab)
        (wide, k, p),  # ~2,000 logits tie at the 20th: more than MAX_FAST_K survive the top-k
        (logits, None, p),
        (logits, k, None),
    ]
    for logits_, k_, p_ in cases:
        calls.clear()
        ref = vllm_masker(
            logits_.clone(),
            None if k_ is None else k_.clone(),
            None if p_ is None else p_.clone(),
            allow_cpu_sync=True,
        )
        assert torch.equal(top_k_top_p(logits_.clone(), k_, p_, True), ref)
        assert calls == [1]


def test_install_is_idempotent_and_restores_vllms():
    from vllm.v1.sample.ops import topk_topp_sampler

    vllm_masker = shipped_masker()
    was_installed = vllm_cpu_sampler.installed()  # by an engine of this test process
    try:
        assert vllm_cpu_sampler.install() and vllm_cpu_sampler.install()
        assert topk_topp_sampler.apply_top_k_top_p_pytorch is top_k_top_p
        assert shipped_masker() is vllm_masker
        # vLLM's CPU sampler reaches it through its own dispatcher
        logits = torch.randn(4, 300, generator=torch.Generator().manual_seed(1))
        k, p = torch.full((4,), 5), torch.full((4,), 0.5)
        ref = vllm_masker(logits.clone(), k.clone(), p.clone(), allow_cpu_sync=True)
        assert torch.equal(topk_topp_sampler.apply_top_k_top_p(logits.clone(), k, p), ref)
        vllm_cpu_sampler.restore()
        assert topk_topp_sampler.apply_top_k_top_p_pytorch is vllm_masker
        assert not vllm_cpu_sampler.installed()
    finally:
        if was_installed:
            vllm_cpu_sampler.install()
