"""ROLLOUT: sampling the student on questions into rows (and, for EVAL, scoring them at once).

A question whose prompt does not fit the student's context (`student.max_model_len` less the
stage's `max_tokens`) is skipped and counted: a warning in run.log names how many of how many and
their ids, and the stage goes on with the rest (the rows and every metric are over the questions
sampled). Only when no prompt fits does the stage fail (`NoPromptFits`, a config error: nothing is
written, the stage stays unmarked). Prompts are never cut: the front holds the instructions.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mbt_online.config import Config, ConfigError, SamplingConfig
from mbt_online.contracts import Completion, Generator
from mbt_online.generation.requests import PromptsTooLong
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
    kwargs = {
        "n": sampling.samples,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "max_tokens": sampling.max_tokens,
        "seed": seed,
        **({"logprobs": True} if token_ids else {}),
    }
    kept, outs = _generate_fitting(generator, messages, [ex.id for ex in examples], kwargs)
    examples, messages = [examples[i] for i in kept], [messages[i] for i in kept]
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


log = logging.getLogger("mbt_online")


class NoPromptFits(PromptsTooLong, ConfigError):
    """Every prompt of a stage is longer than the student's context leaves room for: a config
    error to fix (`student.max_model_len`, the data), not a stage to retry."""


def _generate_fitting(
    generator: Generator, messages: list[list[dict]], ids: list[str], kwargs: dict[str, Any]
) -> tuple[list[int], list[list[Completion]]]:
    """(the indices sampled, their completions): the prompts that do not fit are dropped and
    the rest asked again (each try drops at least one; a data-parallel worker names only its
    own slice's, so a few tries may be needed)."""
    kept = list(range(len(messages)))
    skipped: list[int] = []
    while True:
        try:
            outs = generator.generate([messages[i] for i in kept], **kwargs)
            break
        except PromptsTooLong as e:
            bad = {kept[i] for i in e.indices if 0 <= i < len(kept)}
            if not bad:
                raise
            skipped += sorted(bad)
            kept = [i for i in kept if i not in bad]
            if not kept:
                raise NoPromptFits(
                    f"no prompt fits the student's context: all {len(messages)} question(s) "
                    f"skipped (the last refused: {e})",
                    e.indices,
                ) from None
            reason = str(e)
    if skipped:
        shown = ", ".join(ids[i] for i in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        log.warning(
            "skipped %d of %d question(s) whose prompt does not fit the student's context (%s): %s",
            len(skipped),
            len(messages),
            reason.split(" (#")[0],
            shown,
        )
    return kept, outs


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
