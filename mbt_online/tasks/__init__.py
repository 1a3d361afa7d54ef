"""The tasks a run learns from: three multi-hop benchmarks read from files, and the generated
synthetic world (`tasks.world`). `mixture` combines a config's sources into a run's questions.

The names live in `tasks.names` (the config schema and the command line read them from there);
this module maps each benchmark to its parser. It stays light to import: no `datasets`, no
`pyarrow` and no config until a loader needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mbt_online.tasks import hotpotqa, musique, twowiki
from mbt_online.tasks.base import (
    Example,
    Hop,
    LoadResult,
    MalformedRow,
    Parser,
    keep_distractors,
    load_rows,
    parse_with,
    read_source,
    resolve_data_path,
)
from mbt_online.tasks.names import BENCHMARKS, DATASETS

__all__ = [
    "BENCHMARKS",
    "DATASETS",
    "PARSERS",
    "Example",
    "Hop",
    "LoadResult",
    "MalformedRow",
    "keep_distractors",
    "load_examples",
    "parse_row",
    "parser",
    "resolve_data_path",
]

# Benchmark name -> its parser; the keys are `BENCHMARKS` (a test holds them equal).
PARSERS: dict[str, Parser] = {m.NAME: m.parse for m in (hotpotqa, musique, twowiki)}


def parser(dataset: str) -> Parser:
    """The benchmark's row parser; a `ValueError` naming the choices for any other name."""
    name = str(dataset).lower()
    if name not in PARSERS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(BENCHMARKS)}")
    return PARSERS[name]


def load_examples(
    dataset: str,
    source: str | Path | Any,
    *,
    limit: int | None = None,
    offset: int = 0,
    distractors: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> LoadResult:
    """Load one benchmark from a file, a `save_to_disk` folder, a `datasets.Dataset` or row dicts.

    A path may name a shipped sample (`pkg://samples/...`, see `resolve_data_path`). `shuffle`
    reorders rows before `offset`/`limit` so a capped run sees a seeded random subset;
    `offset`/`limit` count good examples, and reading stops once `limit` is reached.
    """
    parse = parser(dataset)
    rows = read_source(str(dataset).lower(), source)
    return load_rows(
        parse,
        rows,
        limit=limit,
        offset=offset,
        distractors=distractors,
        shuffle=shuffle,
        seed=seed,
    )


def parse_row(dataset: str, row: Any) -> Example:
    """One raw row (official or hub layout) as an `Example`; `MalformedRow` if it is unusable."""
    return parse_with(parser(dataset), row)
