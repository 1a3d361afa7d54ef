"""Build (or reuse) the embedded student and measure its round-0 behaviour on held-out worlds.

The embedded default only demonstrates MBT if the untrained student shows the failures MBT fixes
while still being right often enough to sharpen. This prints what the issue's targets read:
accuracy (cover of the extracted answer), degeneration rate (stopped by the cap), answer-inclusive
rate (gold reached in the reasoning, final answer wrong) and mean tokens, on eval-side questions
generated with real vLLM at the config's eval sampling.

    .venv/bin/python scripts/check_world_student.py [--config configs/quickstart.yaml] [-n 100]
        [overrides like bootstrap.p_loop=0.3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import Counter

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML config (default: quickstart)")
    parser.add_argument("-n", type=int, default=100, help="held-out questions to generate on")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. bootstrap.layers=4")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from mbt_online.config import load_config
    from mbt_online.sim.bootstrap import ensure_student

    cfg = load_config(args.config, args.overrides)
    start = time.perf_counter()
    path = ensure_student(cfg)
    built_s = time.perf_counter() - start
    stats = json.loads((path / "bootstrap.json").read_text())
    print(f"student: {path} (ensure_student {built_s:.1f} s; build took {stats['seconds']} s)")
    print(f"bootstrap: {json.dumps({k: stats[k] for k in stats if k != 'config'})}")
    report(cfg, str(path), args.n)


def report(cfg, path: str, n: int) -> None:
    from mbt_online.generation.backends import make_generator
    from mbt_online.prompts import student_messages
    from mbt_online.scoring.metrics import aggregate, diagnose
    from mbt_online.tasks.world import world_split

    split = cfg.data.eval.model_copy(update={"limit": n})
    examples = world_split(split, cfg.world, "eval")
    s = cfg.eval.sampling
    engine = make_generator(cfg, path, lora=False, seed=s.seed)
    start = time.perf_counter()
    outs = engine.generate(
        [student_messages(ex) for ex in examples],
        n=1,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        max_tokens=s.max_tokens,
        seed=s.seed,
        progress=False,
    )
    gen_s = time.perf_counter() - start
    engine.close()
    comps = [o[0] for o in outs]
    diags = [
        diagnose(
            c.text, c.finish_reason, c.completion_tokens, ex.answers, cfg.reward.default_budget
        )
        for c, ex in zip(comps, examples, strict=True)
    ]
    agg = aggregate(diags, [ex.tier for ex in examples])
    print(
        f"generation: {len(examples)} questions in {gen_s:.1f} s (T={s.temperature}, "
        f"max_tokens={s.max_tokens})"
    )
    for key in (
        "accuracy",
        "degeneration_rate",
        "answer_inclusive_rate",
        "mean_tokens",
        "format_rate",
        "easy/accuracy",
        "medium/accuracy",
        "hard/accuracy",
    ):
        print(f"  {key:24s} {agg.get(key, float('nan')):.3f}")
    derived = [
        all(h.evidence in c.text for h in ex.hops) for c, ex in zip(comps, examples, strict=True)
    ]
    print(f"  {'chain_derived':24s} {sum(derived) / len(derived):.3f}  (every hop's fact stated)")
    print(f"  behaviours: {dict(_behaviours(comps))}")
    for c, ex in list(zip(comps, examples, strict=True))[:3]:
        print(
            f"--- {ex.question} (gold {ex.answer}; {c.finish_reason}, "
            f"{c.completion_tokens} tokens)\n{c.text[:800]}"
        )


def _behaviours(comps) -> Counter:
    """Which of the reasoner's habits each completion shows, read from its cue phrases."""
    out: Counter = Counter()
    for c in comps:
        if c.finish_reason == "length":
            out["capped"] += 1
        elif "Wait, maybe" in c.text:
            out["switch"] += 1
        elif "double-check" in c.text:
            out["overthink"] += 1
        else:
            out["other"] += 1
    return out


if __name__ == "__main__":
    main()
