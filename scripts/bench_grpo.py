"""GRPO benchmark: a GRPO round on the project's engine against TRL's GRPOTrainer sampling itself.

One process, the same student, questions, K, completion cap, sampling (temperature, top-p, top-k)
and GRPO hyper-parameters (`train.grpo` through `training.args.grpo_args`, so both trainers get
the same `GRPOConfig`), the same torch threads (`train.threads`) and the same bf16 setting:

1. the project (as the loop's GRPO stage runs it): the round's vLLM engine samples K completions
   per question with their token ids and log-probs (`generation.rollout.generate_rows`, ROLLOUT),
   the samples are scored and turned into RL rows (`scoring.rows.score_rows`,
   `scoring.rl_reward.grpo_samples`, SCORE), and TRAIN runs `training.grpo.train_grpo` (TRL's
   GRPOTrainer fed the stored samples; trainer construction, fit and the model folder written);
2. TRL alone: `trl.GRPOTrainer` with `use_vllm=False` generating its own K samples per question
   with transformers' `generate`, rewarded per completion with the same RL reward (the scorer's
   row, `rl_components`, `rl_weights`: what `grpo_samples` computes), over a dataset of the same
   N questions (the same chat prompts); construction, `train()` and `save_model` timed.

`speedup = trl_seconds / project_seconds` (target 3x). `project_seconds` is ROLLOUT + SCORE + TRAIN;
the engine's start (and a two-token warm-up call) is timed apart (`project_engine_start_s`): in a
round the engine is already up (on a CPU it stays up through TRAIN), so it is not a cost of the
GRPO stage; `speedup_with_engine_start` counts it anyway.

Same number of optimizer steps: the loop drops groups whose K rewards are all equal (no advantage;
`project_dropped_groups` says how many it would drop here), TRL trains on every group. By default
the project's TRAIN gets every group too (the dropped ones rebuilt with the same RL reward), so
both trainers take `floor(N / questions per batch)` steps over N x K completions and the ratio
compares like with like; `--drop-equal-groups` trains as the loop does (fewer rows, maybe fewer
steps: `steps_match` then says so). The project's TRAIN is the process's first GRPO trainer and
pays TRL's first-use costs; the vLLM engine starts first and its thread binding holds for both.
With `train.grpo.importance_sampling_correction` (on by default) the project's trainer also runs
a forward pass for the old log-probs that TRL alone skips. The loop writes the RL rows to the run
folder and reads them back before TRAIN; here they go to `train_grpo` in memory.
Prints one JSON line.
Usage: `.venv/bin/python scripts/bench_grpo.py [--ci] [--model M] [--questions N] [--samples K]
[--max-tokens T] [--drop-equal-groups] [--out docs/benchmarks.jsonl]`.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_common as bc  # noqa: E402  (sets the vLLM / HF environment before they load)

TARGET_SPEEDUP = 3.0


@dataclass(frozen=True)
class Settings:
    questions: int  # N
    samples: int | None  # K; None = the quickstart's rollout.samples
    max_tokens: int | None  # None = the quickstart's rollout.max_tokens


FULL = Settings(questions=32, samples=None, max_tokens=None)
CI = Settings(questions=4, samples=2, max_tokens=16)


# ---------------------------------------------------------------- config and questions


def bench_config(s: Settings, dtype: str) -> Any:
    """The quickstart's config with GRPO on (the engine then reports log-probs), the benchmark's
    N, K and cap, and the served dtype of the model."""
    overrides = [
        "train.grpo.enabled=true",
        f"loop.questions_per_round={s.questions}",
        f"data.train.limit={s.questions}",
        f"student.dtype={dtype}",
    ]
    if s.samples is not None:
        overrides.append(f"rollout.samples={s.samples}")
    if s.max_tokens is not None:
        overrides.append(f"rollout.max_tokens={s.max_tokens}")
    return bc.quickstart_config(overrides)


def questions(cfg: Any, n: int) -> list[Any]:
    """The first `n` training questions of the config's data (the round's pool)."""
    from mbt_online.tasks import mixture

    pool = mixture.load_split(cfg, "train")
    if len(pool) < n:
        raise SystemExit(f"--questions {n}: the training data has only {len(pool)}")
    return pool[:n]


# ---------------------------------------------------------------- the project's round


def round_seed(base: int, stage: str) -> int:
    """Round 0's seed of a GRPO stage as the loop derives it; the base seed where this tree's
    `seeds` does not know the stage yet (the draws differ, the work does not)."""
    from mbt_online.seeds import stage_seed

    try:
        return stage_seed(base, 0, stage)
    except KeyError:
        return base


def all_group_rows(scored: list[dict], cfg: Any) -> tuple[list[dict], dict[str, float]]:
    """`grpo_samples`' rows with the groups it drops (all rewards equal) put back, built with the
    same RL reward: TRL trains on every group, so the project's TRAIN then does the same steps."""
    from mbt_online.scoring.rl_reward import grpo_samples, rl_components, rl_reward, rl_weights
    from mbt_online.scoring.rows import by_question

    g, max_tokens = cfg.train.grpo, cfg.rollout.max_tokens
    rows, stats = grpo_samples(scored, max_tokens, cfg.reward.weights, g.reward)
    kept = {r["example_id"] for r in rows}
    w = rl_weights(cfg.reward.weights, g.reward)
    for qid, group in by_question(scored).items():
        if qid in kept:
            continue
        for r in sorted(group, key=lambda r: r["sample"]):
            comps = rl_components(r, max_tokens, g.reward)
            rows.append(
                {
                    "example_id": qid,
                    "sample": r["sample"],
                    "prompt": r["prompt"],
                    "prompt_ids": list(r["prompt_ids"]),
                    "completion_ids": list(r["completion_ids"]),
                    "logprobs": list(r["logprobs"]),
                    "rl_reward": rl_reward(comps, w),
                    **{f"rl_{k}": v for k, v in comps.items()},
                }
            )
    return rows, stats


def project_round(
    cfg: Any, path: str, exs: list[Any], work: Path, drop_equal: bool
) -> dict[str, Any]:
    """ROLLOUT on the vLLM engine, SCORE, TRAIN (`train_grpo`), each timed."""
    from mbt_online.generation.backends import make_generator
    from mbt_online.generation.rollout import generate_rows
    from mbt_online.scoring.rl_reward import grpo_samples
    from mbt_online.scoring.rows import score_rows
    from mbt_online.training.grpo import grpo_sampling, train_grpo

    def start() -> Any:
        engine = make_generator(cfg, path)
        # a round's engine has served ROLLOUT (with log-probs: GRPO is on) and EVAL already, with
        # these sampling settings: their first-call costs are paid before the GRPO stage
        r = cfg.rollout
        engine.generate(
            [[{"role": "user", "content": "warm up"}]] * 2,
            n=r.samples,
            temperature=r.temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            max_tokens=2,
            seed=r.seed + 999_999,
            progress=False,
            logprobs=True,
        )
        return engine

    out: dict[str, Any] = {}
    start_s, engine = bc.timed(start)
    out["project_engine_start_s"] = start_s
    seed = round_seed(cfg.rollout.seed, "grpo_rollout")
    out["project_rollout_s"], raw = bc.timed(
        lambda: generate_rows(engine, exs, cfg, cfg.rollout, seed, token_ids=True)
    )
    prompt_ids = {tuple(r["prompt_ids"]) for r in raw}

    def score() -> tuple[list[dict], dict[str, float]]:
        scored = score_rows(raw, {ex.id: ex for ex in exs}, cfg)
        if drop_equal:
            g = cfg.train.grpo
            return grpo_samples(scored, cfg.rollout.max_tokens, cfg.reward.weights, g.reward)
        return all_group_rows(scored, cfg)

    out["project_score_s"], (rows, stats) = bc.timed(score)
    bc.log(
        f"bench_grpo: project sampled {len(raw)} completions, "
        f"{int(stats['train/grpo_dropped_groups'])} of {len(exs)} groups all-equal"
    )
    res_s, res = bc.timed(
        lambda: train_grpo(
            path,
            rows,
            work / "project",
            cfg.train,
            round_seed(cfg.run.seed, "grpo"),
            grpo_sampling(cfg),
            bf16=cfg.train.bf16,
            chat_template=cfg.student.chat_template,
        )
    )
    engine.close()  # after TRAIN: on a CPU the loop keeps it up through TRAIN (`between_stages`)
    gc.collect()
    out.update(
        {
            "project_train_s": res_s,
            "project_fit_s": res.metrics.get("train/grpo_seconds", 0.0),
            "project_seconds": out["project_rollout_s"] + out["project_score_s"] + res_s,
            "project_steps": int(res.metrics["train/grpo_steps"]),
            "project_generated_tokens": sum(int(r["tokens"]) for r in raw),
            "project_completions": len(raw),
            "project_train_rows": len(rows),
            "project_dropped_groups": int(stats["train/grpo_dropped_groups"]),
            "project_trained_groups": "drops" if drop_equal else "all",
            "project_train_loss": res.metrics.get("train/grpo_loss"),
            "project_reward": res.metrics.get("train/grpo_reward"),
        }
    )
    out["_prompt_ids"] = prompt_ids
    return out


# ---------------------------------------------------------------- TRL alone


def rl_reward_func(cfg: Any, exs: list[Any], eos: set[int]) -> Any:
    """A TRL reward function: each completion's RL reward, as `grpo_samples` computes it from the
    scored row (finish reason from the last token id: TRL keeps the EOS it stopped on, as vLLM)."""
    from mbt_online.scoring.rl_reward import rl_components, rl_reward, rl_weights
    from mbt_online.scoring.rows import scored_row

    by_id = {ex.id: ex for ex in exs}
    g, max_tokens = cfg.train.grpo, cfg.rollout.max_tokens
    weights = rl_weights(cfg.reward.weights, g.reward)

    def rl(prompts: list, completions: list, completion_ids: list, **kw: Any) -> list[float]:
        out = []
        for comp, ids, qid in zip(completions, completion_ids, kw["example_id"], strict=True):
            text = comp[-1]["content"] if isinstance(comp, list) else comp
            raw = {
                "example_id": qid,
                "sample": 0,
                "completion": text,
                "finish_reason": "stop" if ids and ids[-1] in eos else "length",
                "tokens": len(ids),
            }
            row = scored_row(by_id[qid], raw, cfg)
            out.append(rl_reward(rl_components(row, max_tokens, g.reward), weights))
        return out

    rl.__name__ = "rl_reward"
    return rl


def timed_generation(trainer: Any) -> dict[str, Any]:
    """Seconds, calls, tokens and prompts of TRL's own sampling (`_generate_single_turn`)."""
    spent: dict[str, Any] = {"s": 0.0, "calls": 0, "tokens": 0, "completions": 0, "prompts": set()}
    original = trainer._generate_single_turn

    def wrapper(prompt_ids: Any, *args: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            completion_ids, logprobs = original(prompt_ids, *args, **kw)
        finally:
            spent["s"] += time.perf_counter() - start
        spent["calls"] += 1
        spent["tokens"] += sum(len(c) for c in completion_ids)
        spent["completions"] += len(completion_ids)
        spent["prompts"].update(tuple(p) for p in prompt_ids)
        return completion_ids, logprobs

    trainer._generate_single_turn = wrapper
    return spent


def trl_round(cfg: Any, path: str, exs: list[Any], work: Path) -> dict[str, Any]:
    """TRL's GRPOTrainer sampling for itself with transformers, the project's GRPO settings."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOTrainer

    from mbt_online.prompts import student_messages
    from mbt_online.training.args import grpo_args, peft_config
    from mbt_online.training.steps import fused_head, load_policy, torch_threads

    t, r = cfg.train, cfg.rollout
    args = grpo_args(
        t,
        round_seed(cfg.run.seed, "grpo"),
        work / "trl",
        t.bf16,
        r.samples,
        r.max_tokens,
        r.temperature,
    )
    args.use_vllm = False  # transformers' generate: TRL sampling for itself
    args.top_p = r.top_p
    args.top_k = max(r.top_k, 0)  # the engine's -1 (off) is TRL's 0
    metacognitive = cfg.student.use_metacognitive_prompt
    dataset = Dataset.from_list(
        [
            {"prompt": student_messages(ex, metacognitive=metacognitive), "example_id": ex.id}
            for ex in exs
        ]
    )
    eos: set[int] = set()

    def build() -> Any:
        fused_head(t)  # the same LM head set-up as the project's trainer
        model, tokenizer = load_policy(path, cfg.student.chat_template, t.attn_implementation)
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[rl_reward_func(cfg, exs, eos)],
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config(t.lora) if t.method == "lora" else None,
        )
        eos.update(trainer.eos_token_ids)
        trainer.remove_callback(PrinterCallback)
        return trainer

    out: dict[str, Any] = {}
    with torch_threads(t.threads):
        setup_s, trainer = bc.timed(build)
        out["trl_setup_s"] = setup_s
        spent = timed_generation(trainer)
        out["trl_train_s"], res = bc.timed(trainer.train)
        out["trl_save_s"], _ = bc.timed(lambda: trainer.save_model(str(work / "trl-model")))
    out.update(
        {
            "trl_generate_s": spent["s"],
            "trl_generate_calls": spent["calls"],
            "trl_seconds": out["trl_setup_s"] + out["trl_train_s"] + out["trl_save_s"],
            "trl_steps": int(trainer.state.global_step),
            "trl_generated_tokens": spent["tokens"],
            "trl_completions": spent["completions"],
            "trl_train_rows": spent["completions"],
            "trl_train_loss": float(res.training_loss),
        }
    )
    out["_prompt_ids"] = spent["prompts"]
    gc.collect()
    return out


# ---------------------------------------------------------------- main


def main() -> int:
    ap = bc.base_parser(__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=None, help="N, questions (default 32; 4 --ci)")
    ap.add_argument("--samples", type=int, default=None, help="K (default: the quickstart's)")
    ap.add_argument("--max-tokens", type=int, default=None, help="completion cap (quickstart's)")
    ap.add_argument(
        "--drop-equal-groups",
        action="store_true",
        help="train the project's path as the loop does: all-equal groups dropped",
    )
    args = ap.parse_args()
    base = CI if args.ci else FULL
    s = Settings(
        questions=args.questions or base.questions,
        samples=args.samples or base.samples,
        max_tokens=args.max_tokens or base.max_tokens,
    )
    result: dict[str, Any] = {"bench": "grpo", **bc.machine()}
    with bc.scratch("bench-grpo-") as work:
        result.update(measure(args, s, work))
    result["load_1min_end"] = round(os.getloadavg()[0], 2)
    bc.emit(bc.rounded(result), args.out)
    return 0


def measure(args: Any, s: Settings, work: Path) -> dict[str, Any]:
    label, path = bc.resolve_model(args.model, args.ci, work)
    dtype = bc.model_dtype(label, None)
    cfg = bench_config(s, dtype)
    exs = questions(cfg, s.questions)
    g = cfg.train.grpo
    k = cfg.rollout.samples
    per_device = g.per_device_train_batch_size or 4 * k
    out: dict[str, Any] = {
        "model": label,
        "dtype": dtype,
        "questions": len(exs),
        "samples": k,
        "max_tokens": cfg.rollout.max_tokens,
        "temperature": cfg.rollout.temperature,
        "top_p": cfg.rollout.top_p,
        "top_k": cfg.rollout.top_k,
        "per_device_train_batch_size": per_device,
        "gradient_accumulation_steps": g.gradient_accumulation_steps,
        "num_train_epochs": g.num_train_epochs,
        "loss_type": g.loss_type,
        "beta": g.beta,
        "bf16": cfg.train.bf16,
        "threads": cfg.train.threads,
    }
    bc.log(f"bench_grpo: {label} ({dtype}) N={len(exs)} K={k} cap={cfg.rollout.max_tokens}")
    project = project_round(cfg, path, exs, work, args.drop_equal_groups)
    bc.log(f"bench_grpo: project {project['project_seconds']:.1f} s; TRL alone next")
    trl = trl_round(cfg, path, exs, work)
    # TRL tokenizes the same chats as the engine renders them: the same prompt tokens
    out["same_prompt_ids"] = trl.pop("_prompt_ids") <= project.pop("_prompt_ids")
    out.update(project)
    out.update(trl)
    out["steps_match"] = out["project_steps"] == out["trl_steps"]
    out["speedup"] = out["trl_seconds"] / out["project_seconds"]
    out["speedup_with_engine_start"] = out["trl_seconds"] / (
        out["project_seconds"] + out["project_engine_start_s"]
    )
    out["target_speedup"] = TARGET_SPEEDUP
    out["target_met"] = out["speedup"] >= TARGET_SPEEDUP
    return out


if __name__ == "__main__":
    sys.exit(main())
