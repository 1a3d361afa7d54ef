"""A run's questions: every source of a split (benchmark files, hub sets, generated worlds) loaded
through its task and concatenated, and the window of training questions each round sees."""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict

from mbt_online.config import Config, ConfigError, DataSplit
from mbt_online.tasks import BENCHMARKS, load_examples
from mbt_online.tasks.base import Example, LoadResult, describe_missing, resolve_data_path
from mbt_online.tasks.world import world_split

log = logging.getLogger("mbt_online")


def check_data_paths(cfg: Config) -> None:
    """Fail before any work when a benchmark file is missing or a hub data set cannot be loaded
    (offline: is not cached), naming the config key."""
    for name, s in cfg.data.splits():
        if s.dataset not in BENCHMARKS:
            continue
        if s.aliases_path and not resolve_data_path(s.aliases_path).is_file():
            raise ConfigError(
                f"data.{name}.aliases_path: file not found: {describe_missing(s.aliases_path)}"
            )
        if s.hub:
            _check_hub(name, s)
        elif not resolve_data_path(s.path).is_file():
            raise ConfigError(f"data.{name}.path: file not found: {describe_missing(s.path)}")


def _check_hub(name: str, s: DataSplit) -> None:
    from mbt_online.models import hub

    try:
        hub.check_dataset(s.hub, s.hub_config, s.hub_split)
    except hub.HubError as e:
        raise ConfigError(f"data.{name}.hub: {e}") from None


def load_data(cfg: Config) -> tuple[list[Example], list[Example]]:
    return load_split(cfg, "train"), load_split(cfg, "eval")


def load_split(cfg: Config, which: str) -> list[Example]:
    """All of a split's sources, concatenated; malformed rows are skipped and counted in the log."""
    examples: list[Example] = []
    for name, s in cfg.data.splits(which):
        res = load_source(s, cfg, which)
        if s.tier is not None:
            res.examples = [dataclasses.replace(e, tier=s.tier) for e in res.examples]
        if res.skipped:
            log.warning(
                "data.%s: skipped %d malformed rows: %s",
                name,
                sum(res.skipped.values()),
                dict(res.skipped),
            )
        log.info("data.%s: %d questions (%s)", name, len(res.examples), s.dataset)
        examples += res.examples
    if not examples:
        raise ConfigError(f"data.{which}: no usable examples")
    return examples


def load_source(s: DataSplit, cfg: Config, which: str) -> LoadResult:
    """One source through its task: a benchmark file or hub data set through that benchmark's
    parser (shuffled with the run's seed), or the split's generated world (`which` picks its
    side of the names)."""
    if s.dataset in BENCHMARKS:
        return load_examples(
            s.dataset,
            _hub_split(s) if s.hub else s.path,
            limit=s.limit,
            offset=s.offset,
            distractors=s.distractors,
            shuffle=s.shuffle,
            seed=cfg.run.seed,
            aliases_path=s.aliases_path,
        )
    examples = world_split(s, cfg.world, which)
    return LoadResult(examples=examples, total=len(examples))


def _hub_split(s: DataSplit) -> object:
    """The hub data set's split (a `datasets.Dataset`), which the benchmark's parser reads in
    its hub layout like any other source."""
    from mbt_online.models import hub

    assert s.hub is not None
    try:
        return hub.load_dataset_split(s.hub, s.hub_config, s.hub_split)
    except hub.HubError as e:
        raise ConfigError(f"hub data set: {e}") from None


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
