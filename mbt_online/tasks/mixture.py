"""A run's questions: every source of a split (benchmark files, hub sets, generated worlds) loaded
through its task and concatenated, and the window of training questions each round sees."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from mbt_online.config import Config, ConfigError
from mbt_online.tasks.base import Example

log = logging.getLogger("mbt_online")


def check_data_paths(cfg: Config) -> None:
    for name, s in cfg.data.splits():
        if s.dataset != "world" and not Path(s.path).is_file():
            raise ConfigError(f"data.{name}.path: file not found: {s.path}")


def load_data(cfg: Config) -> tuple[list[Example], list[Example]]:
    return load_split(cfg, "train"), load_split(cfg, "eval")


def load_split(cfg: Config, which: str) -> list[Example]:
    """All of a split's sources, concatenated; malformed rows are skipped and counted in the log."""
    examples: list[Example] = []
    for name, s in cfg.data.splits(which):
        if s.dataset == "world":
            from mbt_online.tasks.world import world_split

            part = world_split(s, cfg.world, which)
        else:
            from mbt_online.tasks.base import load_examples

            res = load_examples(
                s.dataset,
                s.path,
                limit=s.limit,
                offset=s.offset,
                distractors=s.distractors,
                shuffle=s.shuffle,
                seed=cfg.run.seed,
            )
            if res.skipped:
                log.warning(
                    "data.%s: skipped %d malformed rows: %s",
                    name,
                    sum(res.skipped.values()),
                    dict(res.skipped),
                )
            part = res.examples
        log.info("data.%s: %d questions (%s)", name, len(part), s.dataset)
        examples += part
    if not examples:
        raise ConfigError(f"data.{which}: no usable examples")
    return examples


def round_questions(examples: list[Example], round_: int, per_round: int | None) -> list[Example]:
    """A rotating window over the training questions, so later rounds see new ones when the pool
    is larger than a round. A pool of several benchmarks is dealt round-robin first: a window
    over the concatenated files would train round 1 on one benchmark alone."""
    if not per_round or per_round >= len(examples):
        return examples
    pool = _interleave(examples)
    start = ((round_ - 1) * per_round) % len(pool)
    return (pool + pool)[start : start + per_round]


def _interleave(examples: list[Example]) -> list[Example]:
    """Examples dealt one per source in turn, each source keeping its own order."""
    queues: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        queues[ex.source].append(ex)
    depth = max(len(q) for q in queues.values())
    return [q[i] for i in range(depth) for q in queues.values() if i < len(q)]
