"""Rollout benchmark: the student engine (vLLM) against `engine.backend=transformers`, side by side.

One process, the same cores, model, prompts, sample count and length cap for both, in this order:

1. the vLLM engine starts (its thread binding then holds for the whole process, HF included), and
   the fp32 / bf16 matmul rate of those threads is measured: the yardstick of every fraction;
2. fixed work, so both sides do exactly the same passes: PREFILL = the B prompts once with one new
   token; DECODE = the B prompts x K samples run to exactly M new tokens (vLLM `ignore_eos`,
   HF `min_new_tokens`), minus the same run with one new token. Rates are tokens/s and model
   GFLOP/s (2 x matmul weights per token plus the attention products; see `bench_common.Shape`);
3. prefill sharing: the B prompts with vLLM `n=K` and as K separate requests, one new token each,
   against the B prompts once (1.0 = shared prefill, K = none), and vLLM's prefix-cache hits;
4. the rollout as the loop runs it: both backends' public `generate` (same n, temperature, cap,
   seed), wall seconds and completion tokens/s; the lengths may differ (different samplers);
5. the loop's cut sampling (top-k 20, top-p 0.95: the evaluation's and rollouts' defaults): the
   fixed decode run with vLLM's own top-k/top-p masker, which sorts every row over the vocabulary
   each step, and with `vllm_cpu_sampler`'s sort-free one, back to back on the same engine (the
   same seeds must draw the same tokens). On the CPU only; the GPU has vLLM's own kernels.

The HF baseline gets its best case: all rows in one `generate` call with torch's own sampler.
Prints one JSON line. Usage: `.venv/bin/python scripts/bench_rollout.py [--ci] [--model M]`.
"""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_common as bc  # noqa: E402  (sets the vLLM / HF environment before they load)

TARGETS = {"decode_vs_bf16_peak": 0.35, "prefill_vs_bf16_peak": 0.60, "engine_vs_generate": 2.0}


@dataclass(frozen=True)
class Settings:
    prompts: int  # B
    samples: int  # K
    max_tokens: int  # M
    repeats: int  # timed repetitions of each fixed-work run (best taken)


FULL = Settings(prompts=16, samples=4, max_tokens=128, repeats=1)
CI = Settings(prompts=4, samples=2, max_tokens=8, repeats=1)


# ---------------------------------------------------------------- vLLM side


def vllm_runner(engine: Any):
    """A timed call of the engine's `vllm.LLM` with the prefix cache emptied first, so every run
    computes its prefill instead of reading the previous run's."""
    llm = engine._llm  # the benchmark needs `ignore_eos`, which `Engine.generate` does not expose

    def run(prompts: list[list[int]], n: int, max_tokens: int, copies: int = 1, **cut: Any):
        from vllm import SamplingParams

        params = SamplingParams(
            n=n, temperature=1.0, max_tokens=max_tokens, ignore_eos=True, seed=0, **cut
        )
        reqs = [{"prompt_token_ids": ids} for ids in prompts for _ in range(copies)]
        llm.reset_prefix_cache()
        return bc.timed(lambda: llm.generate(reqs, params, use_tqdm=False))

    return run


def best(run, repeats: int, *args: Any) -> tuple[float, Any]:
    results = [run(*args) for _ in range(repeats)]
    return min(results, key=lambda r: r[0])


def fixed_work(run, prompts: list[list[int]], s: Settings) -> dict[str, float]:
    """Prefill and decode seconds of the same passes (see the module doc), after a warm-up."""
    run(prompts[:2], s.samples, 2)  # first calls pay one-off set-up (kernels, allocations)
    prefill_s, _ = best(run, s.repeats, prompts, 1, 1)
    first_s, _ = best(run, s.repeats, prompts, s.samples, 1)
    full_s, _ = run(prompts, s.samples, s.max_tokens)  # the long run: once
    return {"prefill_s": prefill_s, "first_token_s": first_s, "full_s": full_s}


def sharing(run, prompts: list[list[int]], s: Settings, times: dict[str, float]) -> dict[str, Any]:
    """Prefill of K samples per prompt, with `n=K` (`fixed_work`'s first-token run) and as K
    separate requests, against the B prompts once (its prefill run): 1.0 = fully shared."""
    sep_s, outs = best(run, s.repeats, prompts, 1, 1, s.samples)
    cached = sum(o.num_cached_tokens or 0 for o in outs)
    total = sum(len(p) for p in prompts) * s.samples
    return {
        "k_prefill_cost_n": round(times["first_token_s"] / times["prefill_s"], 3),
        "k_prefill_cost_separate": round(sep_s / times["prefill_s"], 3),
        "k_separate_cached_fraction": round(cached / total, 4),
    }


CUT = {"top_k": 20, "top_p": 0.95}  # the schema's rollout and evaluation defaults


def cut_sampling(run, prompts: list[list[int]], s: Settings, times: dict[str, float]):
    """Step 5: the fixed decode under the loop's cut sampling, vLLM's masker then the sort-free
    one; `cut_vs_uncut` is what the cut still costs against plain sampling (`fixed_work`)."""
    from mbt_online.generation import vllm_cpu_sampler

    if not vllm_cpu_sampler.installed():  # a GPU engine: vLLM's own kernels, nothing to compare
        return {"cut_sampling": "vLLM's own (not the CPU path)"}
    vllm_cpu_sampler.restore()
    try:
        shipped_s, shipped = run(prompts, s.samples, s.max_tokens, **CUT)
    finally:
        vllm_cpu_sampler.install()
    sort_free_s, sort_free = run(prompts, s.samples, s.max_tokens, **CUT)

    def tokens(outs: Any) -> list[list[int]]:
        return [list(o.token_ids) for req in outs for o in req.outputs]

    same = [a == b for a, b in zip(tokens(shipped), tokens(sort_free), strict=True)]
    return {
        "cut_decode_vllm_masker_s": shipped_s,
        "cut_decode_sort_free_s": sort_free_s,
        "cut_sampling_speedup": shipped_s / sort_free_s,
        "cut_vs_uncut": sort_free_s / times["full_s"],
        # float32 logits: every completion; bfloat16: a tie at the top-p edge forks a sample
        "cut_same_completions": sum(same) / len(same),
        "cut_samples_equal": all(same),
    }


# ---------------------------------------------------------------- transformers side


def hf_runner(hf: Any):
    """Timed `model.generate` over all rows at once (left padding), exactly M tokens when asked."""
    import torch
    from transformers import GenerationConfig

    pad = hf.tokenizer.pad_token_id
    pad = hf._eos_ids()[0] if pad is None else pad

    def run(prompts: list[list[int]], n: int, max_tokens: int) -> tuple[float, Any]:
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            min_new_tokens=max_tokens,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            num_return_sequences=n,
            eos_token_id=hf._eos_ids(),
            pad_token_id=pad,
        )
        with torch.inference_mode():
            return bc.timed(
                lambda: hf._model.generate(
                    input_ids=ids, attention_mask=mask, generation_config=config
                )
            )

    return run


# ---------------------------------------------------------------- the loop's rollout


def rollout(gen: Any, chats: list[list[dict]], s: Settings) -> dict[str, float]:
    """Both backends' public `generate` with plain sampling (T=1, no top-k or top-p; the cut is
    step 5's), after a short warm-up call: per-request seeded sampling has a first-call cost."""

    def call(batch: list[list[dict]], max_tokens: int) -> Any:
        return gen.generate(
            batch,
            n=s.samples,
            temperature=1.0,
            top_p=1.0,
            top_k=-1,
            max_tokens=max_tokens,
            seed=0,
            progress=False,
        )

    call(chats[:2], 2)
    seconds, out = bc.timed(lambda: call(chats, s.max_tokens))
    tokens = sum(c.completion_tokens for row in out for c in row)
    return {"s": seconds, "completion_tokens": tokens, "tokens_per_s": tokens / seconds}


# ---------------------------------------------------------------- arithmetic


def rates(times: dict[str, float], prompts: list[list[int]], s: Settings, shape: bc.Shape):
    """Tokens/s and GFLOP/s of the prefill and decode phases of `fixed_work`'s times."""
    prompt_tokens = sum(map(len, prompts))
    prefill_flops = sum(shape.prefill_flops(len(p)) for p in prompts)
    decode_tokens = len(prompts) * s.samples * (s.max_tokens - 1)
    decode_flops = s.samples * sum(
        shape.token_flops(len(p) + t) for p in prompts for t in range(1, s.max_tokens)
    )
    decode_s = max(times["full_s"] - times["first_token_s"], 1e-9)
    return {
        "prefill_tokens_per_s": prompt_tokens / times["prefill_s"],
        "prefill_gflops": prefill_flops / times["prefill_s"] / 1e9,
        "decode_tokens_per_s": decode_tokens / decode_s,
        "decode_gflops": decode_flops / decode_s / 1e9,
        "rollout_fixed_s": times["full_s"],
    }


def with_fractions(prefix: str, r: dict[str, float], peak: dict[str, float]) -> dict[str, float]:
    out = {f"{prefix}_{k}": v for k, v in r.items()}
    for phase in ("prefill", "decode"):
        for dt in ("fp32", "bf16"):
            out[f"{prefix}_{phase}_vs_{dt}_peak"] = bc.fraction(
                r[f"{phase}_gflops"], peak[f"peak_{dt}_gflops"]
            )
    return out


# ---------------------------------------------------------------- main


def main() -> int:
    ap = bc.base_parser(__doc__.splitlines()[0])
    ap.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: the model's run)")
    ap.add_argument("--prompts", type=int, default=None, help="B, prompts per batch")
    ap.add_argument("--samples", type=int, default=None, help="K, samples per prompt")
    ap.add_argument("--max-tokens", type=int, default=None, help="M, the length cap")
    args = ap.parse_args()
    base = CI if args.ci else FULL
    s = Settings(
        prompts=args.prompts or base.prompts,
        samples=args.samples or base.samples,
        max_tokens=args.max_tokens or base.max_tokens,
        repeats=base.repeats,
    )
    result: dict[str, Any] = {"bench": "rollout", **bc.machine()}
    with bc.scratch("bench-rollout-") as work:
        result.update(measure(args, s, work))
    bc.emit(bc.rounded(result), args.out)
    return 0


def measure(args: Any, s: Settings, work: Path) -> dict[str, Any]:
    from mbt_online.generation.transformers_engine import TransformersEngine
    from mbt_online.generation.vllm_engine import Engine

    label, path = bc.resolve_model(args.model, args.ci, work)
    dtype = bc.model_dtype(label, args.dtype)
    shape = bc.model_shape(path)
    chats = bc.chats(s.prompts)
    bc.log(f"bench_rollout: {label} ({dtype}) B={s.prompts} K={s.samples} M={s.max_tokens}")
    engine = Engine(
        path,
        dtype=dtype,
        max_model_len=bc.context_len(path),
        kvcache_gib=2,
        max_num_seqs=max(64, s.prompts * s.samples),
    )
    peak = bc.peaks(args.ci)  # after the engine binds its threads: the threads it computes with
    prompts = [engine.render(c) for c in chats]
    out: dict[str, Any] = {
        "model": label,
        "dtype": dtype,
        "matmul_params": shape.matmul_params,
        "prompts": s.prompts,
        "samples": s.samples,
        "batch": s.prompts * s.samples,
        "max_tokens": s.max_tokens,
        "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts),
        **peak,
    }
    run = vllm_runner(engine)
    times = fixed_work(run, prompts, s)
    out.update(with_fractions("vllm", rates(times, prompts, s, shape), peak))
    out.update(sharing(run, prompts, s, times))
    out["kv_block_size"] = engine._llm.llm_engine.vllm_config.cache_config.block_size
    vllm_roll = rollout(engine, chats, s)
    out.update(cut_sampling(run, prompts, s, times))
    engine.close()
    del engine, run
    gc.collect()

    hf = TransformersEngine(
        path, dtype=dtype, max_model_len=bc.context_len(path), batch_size=s.prompts
    )
    hf_run = hf_runner(hf)
    out.update(with_fractions("hf", rates(fixed_work(hf_run, prompts, s), prompts, s, shape), peak))
    hf_roll = rollout(hf, chats, s)
    hf.close()

    for name, roll in (("vllm", vllm_roll), ("hf", hf_roll)):
        out.update({f"{name}_rollout_{k}": v for k, v in roll.items()})
    out["engine_vs_generate"] = out["hf_rollout_fixed_s"] / out["vllm_rollout_fixed_s"]
    out["engine_vs_generate_prefill"] = (
        out["vllm_prefill_tokens_per_s"] / out["hf_prefill_tokens_per_s"]
    )
    out["engine_vs_generate_decode"] = (
        out["vllm_decode_tokens_per_s"] / out["hf_decode_tokens_per_s"]
    )
    out["engine_vs_transformers_rollout"] = vllm_roll["tokens_per_s"] / hf_roll["tokens_per_s"]
    out["targets"] = TARGETS
    out["targets_met"] = {
        "decode_vs_bf16_peak": out["vllm_decode_vs_bf16_peak"] >= TARGETS["decode_vs_bf16_peak"],
        "prefill_vs_bf16_peak": out["vllm_prefill_vs_bf16_peak"] >= TARGETS["prefill_vs_bf16_peak"],
        "engine_vs_generate": out["engine_vs_generate"] >= TARGETS["engine_vs_generate"],
    }
    return out


if __name__ == "__main__":
    sys.exit(main())
