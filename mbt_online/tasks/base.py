"""What every task shares: one `Example` shape, the readers of benchmark files, and the field
helpers the benchmark parsers build on.

Readers take the official files (JSON array or JSON lines, detected), Parquet and `save_to_disk`
folders alike; a parser turns one raw row into an `Example` or raises `MalformedRow`, which the
loader counts instead of crashing, so a run can report how much data it lost and why.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass
class Hop:
    """One gold reasoning step: a sub-question, its answer and the document that supports it."""

    question: str
    answer: str
    title: str
    evidence: str = ""  # the supporting sentence, when known


@dataclass
class Example:
    """One multi-hop question with its documents and gold annotations, whatever its source."""

    id: str
    question: str
    documents: list[tuple[str, str]]  # (title, text)
    answer: str
    aliases: list[str] = field(default_factory=list)
    supporting_titles: list[str] = field(default_factory=list)
    supporting_sentences: list[tuple[str, str]] = field(default_factory=list)  # (title, sentence)
    hops: list[Hop] = field(default_factory=list)
    tier: str = ""
    source: str = ""
    type: str = ""

    @property
    def answers(self) -> list[str]:
        """The gold answer followed by its aliases: every string that counts as correct."""
        return [self.answer, *[a for a in self.aliases if a and a != self.answer]]


class MalformedRow(ValueError):
    """A row that cannot become an `Example`; `reason` is a short stable key for skip counts."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class LoadResult:
    """What a load produced, plus why rows were dropped, so a run can report data loss."""

    examples: list[Example]
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count
    total: int = 0  # rows seen


Parser = Callable[[dict], Example]  # one benchmark's raw row -> Example, or MalformedRow


# ---- data paths: files on disk, or the samples that ship inside the package ----

PACKAGE_PREFIX = "pkg://"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the installed `mbt_online` folder
SAMPLES_DIR = PACKAGE_DIR / "samples"


def resolve_data_path(path: str | Path) -> Path:
    """The file a config's or the command line's data path names.

    `pkg://samples/hotpotqa/...` names a file shipped inside the package (the dev samples), so a
    shipped config runs from any working directory and from a wheel install; any other path is
    taken as written, relative to the working directory. Whether the file exists is the caller's
    check, which can name the config key or option it came from.
    """
    text = str(path)
    # `Path("pkg://x")` collapses the double slash: accept "pkg:/x" for options typed as Path
    if text.startswith(PACKAGE_PREFIX.rstrip("/")):
        return PACKAGE_DIR / text[len(PACKAGE_PREFIX.rstrip("/")) :].lstrip("/")
    return Path(path)


def shipped_samples() -> list[str]:
    """The `pkg://` paths of the benchmark samples that ship with the package."""
    found = SAMPLES_DIR.rglob("*.json*") if SAMPLES_DIR.is_dir() else []
    return sorted(PACKAGE_PREFIX + p.relative_to(PACKAGE_DIR).as_posix() for p in found)


def describe_missing(path: str | Path) -> str:
    """A data path that names no file, as an error shows it: a package path lists the samples
    that do ship, since a typo there cannot be checked with `ls`."""
    if resolve_data_path(path) == Path(path):
        return str(path)
    return f"{path} (no such file in the package; shipped: {', '.join(shipped_samples())})"


# ---- loading: rows of any source through one parser ----


def parse_with(parse: Parser, row: Any) -> Example:
    """One raw row as an `Example`; rows the reader could not decode or that are not records are
    malformed whatever the benchmark."""
    if isinstance(row, MalformedRow):  # a line the reader could not decode
        raise row
    if not isinstance(row, dict):
        raise MalformedRow("not_a_dict", type(row).__name__)
    return parse(row)


def load_rows(
    parse: Parser,
    rows: Iterable[Any],
    *,
    limit: int | None = None,
    offset: int = 0,
    distractors: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> LoadResult:
    """Parse rows, counting malformed ones. `shuffle` reorders rows before `offset`/`limit` so a
    capped run sees a seeded random subset; `offset`/`limit` count good examples, and reading
    stops once `limit` is reached."""
    if shuffle:
        rows = list(rows)
        random.Random(seed).shuffle(rows)
    result = LoadResult(examples=[])
    good = 0
    for row in rows:
        if limit is not None and len(result.examples) >= limit:
            break
        result.total += 1
        try:
            example = parse_with(parse, row)
        except MalformedRow as err:
            result.skipped[err.reason] += 1
            continue
        good += 1
        if good > offset:
            result.examples.append(
                example if distractors is None else keep_distractors(example, distractors)
            )
    return result


def keep_distractors(example: Example, n: int) -> Example:
    """Keep every gold document plus the first `n` others, in their original order.

    A document is gold when its title is supporting and (where the gold sentences of that title are
    known) it contains one of them: MuSiQue repeats titles across different paragraphs.
    """
    sentences: dict[str, list[str]] = {}
    for title, sentence in example.supporting_sentences:
        sentences.setdefault(title, []).append(sentence)
    gold_titles = set(example.supporting_titles)
    kept, extra = [], 0
    for title, text in example.documents:
        gold = title in gold_titles and (
            title not in sentences or any(s in text for s in sentences[title])
        )
        if gold or extra < n:
            kept.append((title, text))
            extra += not gold
    return replace(example, documents=kept)


# ---- reading sources ----


def read_source(dataset: str, source: Any) -> Iterable[Any]:
    """Raw rows of a file or `save_to_disk` folder (a path), a `datasets.Dataset` or row dicts.

    A file's existence is checked now, not on first read.
    """
    if isinstance(source, str | Path):
        path = resolve_data_path(source)
        if not path.exists():
            raise FileNotFoundError(f"{dataset} data not found: {describe_missing(source)}")
        return _read_dir(path) if path.is_dir() else _read_file(path)
    if isinstance(source, dict):  # a DatasetDict or a single row: both are ambiguous
        raise ValueError(f"{dataset} source is a mapping; pass one split or a list of rows")
    return source


def _read_dir(path: Path) -> Iterable[Any]:
    import datasets  # heavy import, only needed for save_to_disk folders

    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        raise ValueError(
            f"{path} holds several splits ({', '.join(data)}); pass one split's folder"
        )
    return data


def _read_file(path: Path) -> Iterator[Any]:
    """Parquet, a JSON array or JSON lines, told apart by content so any file name works."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1":
        import pyarrow.parquet as pq  # comes with `datasets`; streams without a cache copy

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
        return
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # a JSON-lines file whose first row is an array: read it line by line
        if isinstance(data, list):
            yield from data
            return
    for line in text.splitlines():
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield MalformedRow("bad_json")


# ---- field helpers shared by the benchmark parsers ----

# Key names for the same field across official files and hub copies, in order of preference.
ALIAS_KEYS = ("answer_aliases", "aliases")


def text_field(row: dict, key: str) -> str:
    """A required non-blank string (numbers are read as text); `missing_<key>` otherwise."""
    value = row.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise MalformedRow(f"missing_{key}")
    return value.strip()


def row_id(row: dict) -> str:
    """The official files say `_id` or `id`, hub copies `id`."""
    value = row.get("_id", row.get("id"))
    if value is None or str(value) == "":
        raise MalformedRow("missing_id")
    return str(value)


def aliases(row: dict, answer: str) -> list[str]:
    """Other strings that count as the answer, in order, without repeats or the answer itself."""
    values = next((row[k] for k in ALIAS_KEYS if row.get(k)), [])
    values = [values] if isinstance(values, str) else values
    out: list[str] = []
    for value in values:
        value = str(value).strip()
        if value and value != answer and value not in out:
            out.append(value)
    return out


def records(value: Any) -> list:
    """A list of records, whether stored as a list or as a dict of parallel lists (hub structs)."""
    if isinstance(value, dict):
        columns = list(value.values())
        if not all(isinstance(c, list | tuple) for c in columns):
            raise MalformedRow("bad_layout")
        try:
            return [dict(zip(value, items, strict=True)) for items in zip(*columns, strict=True)]
        except ValueError:  # columns of different lengths
            raise MalformedRow("bad_layout") from None
    if not isinstance(value, list | tuple):
        raise MalformedRow("bad_layout")
    return list(value)


def tuples(value: Any, *fields: tuple[str, ...]) -> list[tuple]:
    """Rows of `len(fields)` items from lists (`[title, sentences]`) or records with named keys."""
    out = []
    for item in records(value):
        if isinstance(item, dict):
            keys = [next((k for k in names if k in item), None) for names in fields]
            if None in keys:
                raise MalformedRow("bad_layout")
            out.append(tuple(item[k] for k in keys))
        elif isinstance(item, list | tuple) and len(item) >= len(fields):
            out.append(tuple(item[: len(fields)]))
        else:
            raise MalformedRow("bad_layout")
    return out


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _norm(text: str) -> str:
    return " ".join(str(text).casefold().split())


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether `text` contains a non-blank `phrase` anywhere, ignoring case and spacing: a loose
    substring test for locating evidence in source documents (the teachers' whole-word test on
    normalised text is `scoring.text.mentions`)."""
    return bool(phrase.strip()) and _norm(phrase) in _norm(text)
