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
    aliases_path: str | Path | None = None,
) -> LoadResult:
    """Load one benchmark from a file, a `save_to_disk` folder, a `datasets.Dataset` or row dicts.

    A path may name a shipped sample (`pkg://samples/...`, see `resolve_data_path`). `shuffle`
    reorders rows before `offset`/`limit` so a capped run sees a seeded random subset;
    `offset`/`limit` count good examples, and reading stops once `limit` is reached.
    2WikiMultihopQA's answer aliases and demonyms are read from `aliases_path`, else from the
    `id_aliases.json` beside the data (`twowiki.aliases_file`); other benchmarks have none.
    """
    parse = _parser_with_aliases(dataset, source, aliases_path)
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


def _parser_with_aliases(dataset: str, source: Any, aliases_path: str | Path | None) -> Parser:
    parse = parser(dataset)
    if str(dataset).lower() != twowiki.NAME:
        if aliases_path is not None:
            raise ValueError(f"aliases_path: only {twowiki.NAME} reads an alias file ({dataset})")
        return parse
    found = twowiki.aliases_file(source, aliases_path)
    return parse if found is None else twowiki.with_aliases(twowiki.read_id_aliases(found))


def parse_row(dataset: str, row: Any) -> Example:
    """One raw row (official or hub layout) as an `Example`; `MalformedRow` if it is unusable."""
    return parse_with(parser(dataset), row)
