"""ROLLOUT: sampling the student on questions into rows (and, for EVAL, scoring them at once)."""

from __future__ import annotations

import json
from typing import Any

from mbt_online.config import Config, SamplingConfig
from mbt_online.contracts import Completion, Generator
from mbt_online.prompts import student_messages
from mbt_online.scoring.rows import score_rows
from mbt_online.seeds import stage_seed
from mbt_online.tasks.base import Example


def generate_rows(
    generator: Generator,
    examples: list[Example],
    cfg: Config,
    sampling: SamplingConfig,
    seed: int,
    token_ids: bool = False,
) -> list[dict[str, Any]]:
    """K samples per question from the current student, as raw generations; with `token_ids`
    (GRPO's samples), each row also keeps its prompt and completion token ids and log-probs."""
    messages = [
        student_messages(ex, metacognitive=cfg.student.use_metacognitive_prompt) for ex in examples
    ]
    outs = generator.generate(
        messages,
        n=sampling.samples,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        max_tokens=sampling.max_tokens,
        seed=seed,
        **({"logprobs": True} if token_ids else {}),
    )
    return [
        {
            "example_id": ex.id,
            "sample": k,
            "completion": c.text,
            "finish_reason": c.finish_reason,
            "tokens": c.completion_tokens,
            "prompt_tokens": c.prompt_tokens,
            **(_sampled(c, messages[i]) if token_ids else {}),
        }
        for i, (ex, completions) in enumerate(zip(examples, outs, strict=True))
        for k, c in enumerate(completions)
    ]


def _sampled(c: Completion, chat: list[dict]) -> dict[str, Any]:
    """What GRPO trains on exactly: the chat (its rows' prompt), the token ids and log-probs."""
    if c.token_ids is None or c.logprobs is None or c.prompt_ids is None:
        raise RuntimeError("the generator returned no token ids / log-probs for a GRPO sample")
    return {
        "prompt_ids": c.prompt_ids,
        "completion_ids": c.token_ids,
        "logprobs": c.logprobs,
        "prompt": json.dumps(chat),
    }


def rollout_rows(
    generator: Generator,
    examples: list[Example],
    cfg: Config,
    sampling: SamplingConfig,
    seed: int,
) -> list[dict[str, Any]]:
    """Generate and score in one go (EVAL and the `eval` command)."""
    raw = generate_rows(generator, examples, cfg, sampling, seed)
    return score_rows(raw, {ex.id: ex for ex in examples}, cfg)


def evaluate_rows(
    generator: Generator, examples: list[Example], cfg: Config, round_: int
) -> list[dict[str, Any]]:
    """EVAL (the loop's and the `eval` command's): scored rows for each of `eval.sampling`'s
    seeds, each row saying its base seed in a `seed` column; a seed draws the same completions
    whether it is evaluated alone or among others."""
    sampling = cfg.eval.sampling
    return [
        {**row, "seed": base}
        for base in sampling.seed_list()
        for row in rollout_rows(
            generator, examples, cfg, sampling, stage_seed(base, round_, "eval")
        )
    ]
