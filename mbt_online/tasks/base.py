"""What every task shares: one `Example` shape, the readers of benchmark files, and the field
helpers the benchmark parsers build on.

Readers take the official files (JSON array or JSON lines, detected), Parquet and `save_to_disk`
folders alike; a parser turns one raw row into an `Example` or raises `MalformedRow`, which the
loader counts instead of crashing, so a run can report how much data it lost and why.

No row of a data file can crash a load: bytes that are not UTF-8, JSON nested past the recursion
limit, numbers past Python's digit limit, wrong types in any field, rows past the size caps below
and repeated ids each become a counted skip. Invalid bytes are decoded as lone surrogates, so they
cost only the rows whose text holds them (`bad_utf8`); a file the readers cannot walk at all (a
broken array, UTF-16, an unreadable Parquet file or folder) is a `ConfigError` naming the file.
"""

from __future__ import annotations

import json
import math
import random
import re
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

# Per-row caps, far above any official row (HotpotQA and 2Wiki rows are ~10 KB with 10 documents,
# MuSiQue's ~15 KB with 20 paragraphs and at most 4 steps): a row past one is skipped and counted
# (`too_large`, `too_many_<what>`) rather than parsed, so one absurd row costs bounded time.
MAX_ROW_CHARS = 1_000_000  # characters of one row's JSON text
MAX_RECORDS = 500  # documents, paragraphs, supporting facts, decomposition steps or evidences


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
    try:
        example = parse(row)
    except MalformedRow:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError) as err:
        # a shape no parser rule names yet: still a counted skip, never a crashed load
        raise MalformedRow("unreadable", repr(err)[:200]) from None
    _check_text(example)
    return example


def _check_text(example: Example) -> None:
    """`bad_utf8` when any text holds a lone surrogate: an invalid byte in the file (decoded as
    one) or a `\\ud800` escape; either would crash the tokenizer or Arrow later."""
    texts = [example.id, example.question, example.answer, example.type, *example.aliases]
    texts += [t for pair in (*example.documents, *example.supporting_sentences) for t in pair]
    texts += [t for h in example.hops for t in (h.question, h.answer, h.title, h.evidence)]
    try:
        "\n".join(texts).encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedRow("bad_utf8") from None


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
    stops once `limit` is reached. A repeated id is skipped after its first row in reading order
    (`duplicate_id`): two examples with one id would collide in every per-question record."""
    if shuffle:
        rows = list(rows)
        random.Random(seed).shuffle(rows)
    result = LoadResult(examples=[])
    good, seen = 0, set()
    for row in rows:
        if limit is not None and len(result.examples) >= limit:
            break
        result.total += 1
        try:
            example = parse_with(parse, row)
            if example.id in seen:
                raise MalformedRow("duplicate_id", example.id)
        except MalformedRow as err:
            result.skipped[err.reason] += 1
            continue
        seen.add(example.id)
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


def _file_error(path: Path, why: str) -> Exception:
    from mbt_online.config import ConfigError  # the config stays unimported until a load needs it

    return ConfigError(f"data file {path}: {why}")


def _read_dir(path: Path) -> Iterable[Any]:
    import datasets  # heavy import, only needed for save_to_disk folders

    try:
        data = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - any failure here means the folder is unreadable
        raise _file_error(path, f"not a readable save_to_disk folder ({err})") from None
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
        yield from _read_parquet(path)
        return
    if magic[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise _file_error(path, "is UTF-16 (or UTF-32); save it as UTF-8")
    # invalid bytes become lone surrogates: they cost the rows that hold them (`bad_utf8`)
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    start = len(text) - len(text.lstrip())
    if text.startswith("[", start) and not _first_line_is_a_row(text, start):
        yield from _json_array(text, start, path)
    else:
        yield from _json_lines(text)


def _read_parquet(path: Path) -> Iterator[Any]:
    import pyarrow.parquet as pq  # comes with `datasets`; streams without a cache copy

    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds for a broken file
        raise _file_error(path, f"not a readable Parquet file ({err})") from None


def _first_line_is_a_row(text: str, start: int) -> bool:
    """Whether a file that opens with `[` is JSON lines whose first row is an array: its first
    line is a whole JSON value and more lines follow. A one-line file (HotpotQA's) is an array."""
    end = text.find("\n", start)
    if end == -1 or not text[end:].strip():
        return False
    line = text[start:end].rstrip()
    try:
        _, stop = json.JSONDecoder().raw_decode(line)
    except (ValueError, RecursionError):
        return False
    return stop == len(line)


_SPACE = re.compile(r"[ \t\n\r]*")
# what an unreadable array element is skipped by: strings, brackets and commas
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*+"|[\[\]{},]')


def _json_array(text: str, start: int, path: Path) -> Iterator[Any]:
    """The elements of a JSON array one by one, so an element that is too large, too deep or not
    JSON is a counted row rather than the whole file lost."""
    decoder, i = json.JSONDecoder(), _SPACE.match(text, start + 1).end()
    if text.startswith("]", i):
        i += 1
    else:
        while True:
            begin = i
            try:
                row, i = decoder.raw_decode(text, begin)
                yield row if i - begin <= MAX_ROW_CHARS else MalformedRow("too_large")
            except (ValueError, RecursionError) as err:
                i = _element_end(text, begin, path)
                yield MalformedRow("too_deep" if isinstance(err, RecursionError) else "bad_json")
            i = _SPACE.match(text, i).end()
            if text.startswith("]", i):
                i += 1
                break
            if not text.startswith(",", i):
                raise _file_error(path, f"not a JSON array: ',' or ']' expected at character {i}")
            i = _SPACE.match(text, i + 1).end()
    if text[i:].strip():
        raise _file_error(path, f"text after the JSON array at character {i}")


def _element_end(text: str, begin: int, path: Path) -> int:
    """Where the array element starting at `begin` ends: its brackets closed, or the next comma
    or closing bracket of the array itself."""
    depth = 0
    for m in _STRUCTURE.finditer(text, begin):
        token = m.group()
        if token in ("[", "{"):
            depth += 1
        elif token in ("]", "}"):
            if depth == 0:
                return m.start()
            depth -= 1
            if depth == 0:
                return m.end()
        elif token == "," and depth == 0:
            return m.start()
    raise _file_error(path, f"not a JSON array: the element at character {begin} never ends")


def _json_lines(text: str) -> Iterator[Any]:
    """One row per non-blank line. Lines are split at `\\n` only: JSON allows U+2028 and
    U+0085 inside strings, which `str.splitlines` would cut a row at."""
    for line in text.split("\n"):
        if not line.strip():
            continue
        if len(line) > MAX_ROW_CHARS:
            yield MalformedRow("too_large")
        elif not line.isascii() and not _encodes(line):
            yield MalformedRow("bad_utf8")  # the line held bytes that are not UTF-8
        else:
            try:
                yield json.loads(line)
            except RecursionError:
                yield MalformedRow("too_deep")
            except ValueError:  # not JSON, or a number past the int digit limit
                yield MalformedRow("bad_json")


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---- field helpers shared by the benchmark parsers ----

# Key names for the same field across official files and hub copies, in order of preference.
ALIAS_KEYS = ("answer_aliases", "aliases")


def as_text(value: Any, reason: str, default: str | None = None) -> str:
    """A string field as text: a string, or a finite number written out; None gives `default`
    when there is one. Anything else (a list, a dict, a bool, a number past Python's digit limit)
    is `MalformedRow(reason)`: `str()` of it would pass junk on as text."""
    if value is None and default is not None:
        return default
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # more digits than `sys.get_int_max_str_digits()`
            raise MalformedRow(reason, "number too long") from None
    if isinstance(value, float) and math.isfinite(value):
        return str(value)
    raise MalformedRow(reason, type(value).__name__)


def text_field(row: dict, key: str) -> str:
    """A required non-blank string (numbers are read as text): `missing_<key>` when absent or
    blank, `bad_<key>` when of another type."""
    value = row.get(key)
    text = "" if value is None else as_text(value, f"bad_{key}").strip()
    if not text:
        raise MalformedRow(f"missing_{key}")
    return text


def row_id(row: dict) -> str:
    """The official files say `_id` or `id`, hub copies `id`: a string or an integer."""
    value = row.get("_id", row.get("id"))
    if value is None or value == "":
        raise MalformedRow("missing_id")
    if isinstance(value, float):  # an id is a name or a count, never a measurement
        raise MalformedRow("bad_id", "float")
    return as_text(value, "bad_id")


def aliases(row: dict, answer: str) -> list[str]:
    """Other strings that count as the answer, in order, without repeats or the answer itself.
    One string or number stands for a list of one; any other shape is `bad_aliases`."""
    values = next((row[k] for k in ALIAS_KEYS if row.get(k)), [])
    if not isinstance(values, list | tuple):
        values = [values]
    out: list[str] = []
    for value in values:
        value = as_text(value, "bad_aliases").strip()
        if value and value != answer and value not in out:
            out.append(value)
    return out


def records(value: Any, what: str = "records") -> list:
    """A list of records, whether stored as a list or as a dict of parallel lists (hub structs);
    more than `MAX_RECORDS` is `too_many_<what>`."""
    if isinstance(value, dict):
        columns = list(value.values())
        if not all(isinstance(c, list | tuple) for c in columns):
            raise MalformedRow("bad_layout")
        if any(len(c) > MAX_RECORDS for c in columns):
            raise MalformedRow(f"too_many_{what}")
        try:
            return [dict(zip(value, items, strict=True)) for items in zip(*columns, strict=True)]
        except ValueError:  # columns of different lengths
            raise MalformedRow("bad_layout") from None
    if not isinstance(value, list | tuple):
        raise MalformedRow("bad_layout")
    if len(value) > MAX_RECORDS:
        raise MalformedRow(f"too_many_{what}")
    return list(value)


def tuples(value: Any, *fields: tuple[str, ...], what: str = "records") -> list[tuple]:
    """Rows of `len(fields)` items from lists (`[title, sentences]`) or records with named keys."""
    out = []
    for item in records(value, what):
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


def norm_text(text: str) -> str:
    """Text as `contains_phrase` compares it: case-folded, runs of spaces as one. A parser that
    tests many texts against one phrase normalises each once (a long row stays linear)."""
    return " ".join(str(text).casefold().split())


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether `text` contains a non-blank `phrase` anywhere, ignoring case and spacing: a loose
    substring test for locating evidence in source documents (the teachers' whole-word test on
    normalised text is `scoring.text.mentions`)."""
    return bool(phrase.strip()) and norm_text(phrase) in norm_text(text)
