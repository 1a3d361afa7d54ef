"""Benchmark data: one `Example` shape and a loader per multi-hop benchmark.

Loaders read both the official files (JSON array or JSON lines, detected) and the Hugging Face hub
layout, skip malformed rows with a counted reason, and never crash on bad input.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> Example:
        row = dict(row)
        row["documents"] = [tuple(d) for d in row.get("documents", [])]
        row["supporting_sentences"] = [tuple(s) for s in row.get("supporting_sentences", [])]
        row["hops"] = [h if isinstance(h, Hop) else Hop(**h) for h in row.get("hops", [])]
        return cls(**row)

    @property
    def answers(self) -> list[str]:
        """The gold answer followed by its aliases: every string that counts as correct."""
        return [self.answer, *[a for a in self.aliases if a and a != self.answer]]


DATASETS = ("hotpotqa", "musique", "2wikimultihopqa")

# Difficulty tiers by the data set's own question type; HotpotQA questions with 3+ supporting facts
# are "hard" whatever their type (checked separately).
_TYPE_TIERS = {
    "comparison": "easy",
    "bridge": "medium",
    "inference": "medium",
    "compositional": "medium",
    "bridge_comparison": "hard",
}
_HOP_TIERS = {2: "easy", 3: "medium", 4: "hard"}

# Key names for the same field across official files and hub copies, in order of preference.
_TITLE = ("title",)
_SENTENCES = ("sentences", "content", "sents", "text")
_SENT_ID = ("sent_id", "sentence_id", "sent_idx")
_SUBJECT = ("subject", "fact", "head")
_RELATION = ("relation", "predicate")
_OBJECT = ("object", "entity", "tail")
_ALIASES = ("answer_aliases", "aliases")


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


def load_examples(
    dataset: str,
    source: str | Path | Iterable[dict],
    *,
    limit: int | None = None,
    offset: int = 0,
    distractors: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> LoadResult:
    """Load one benchmark from a file, a `save_to_disk` folder, a `datasets.Dataset` or row dicts.

    `shuffle` reorders rows before `offset`/`limit` so a capped run sees a seeded random subset;
    `offset`/`limit` count good examples, and reading stops once `limit` is reached.
    """
    dataset = _check_dataset(dataset)
    rows: Iterable[Any] = _rows(dataset, source)
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
            example = parse_row(dataset, row)
        except MalformedRow as err:
            result.skipped[err.reason] += 1
            continue
        good += 1
        if good > offset:
            result.examples.append(
                example if distractors is None else keep_distractors(example, distractors)
            )
    return result


def parse_row(dataset: str, row: Any) -> Example:
    """One raw row (official or hub layout) as an `Example`; `MalformedRow` if it is unusable."""
    dataset = _check_dataset(dataset)
    if isinstance(row, MalformedRow):  # a line the reader could not decode
        raise row
    if not isinstance(row, dict):
        raise MalformedRow("not_a_dict", type(row).__name__)
    if dataset == "musique":
        return _parse_musique(row)
    example = _parse_context_row(row, dataset)
    if dataset == "2wikimultihopqa":
        example.hops = _wiki_hops(row, example)
    return example


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


def _check_dataset(dataset: str) -> str:
    name = str(dataset).lower()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    return name


def _rows(dataset: str, source: Any) -> Iterable[Any]:
    """Raw rows of any supported source; a file's existence is checked now, not on first read."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{dataset} data not found: {path}")
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


# ---- shared field helpers ----


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise MalformedRow(f"missing_{key}")
    return value.strip()


def _row_id(row: dict) -> str:
    value = row.get("_id", row.get("id"))
    if value is None or str(value) == "":
        raise MalformedRow("missing_id")
    return str(value)


def _aliases(row: dict, answer: str) -> list[str]:
    values = next((row[k] for k in _ALIASES if row.get(k)), [])
    values = [values] if isinstance(values, str) else values
    out: list[str] = []
    for value in values:
        value = str(value).strip()
        if value and value != answer and value not in out:
            out.append(value)
    return out


def _records(value: Any) -> list:
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


def _tuples(value: Any, *fields: tuple[str, ...]) -> list[tuple]:
    """Rows of `len(fields)` items from lists (`[title, sentences]`) or records with named keys."""
    out = []
    for item in _records(value):
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


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _norm(text: str) -> str:
    return " ".join(str(text).casefold().split())


def _mentions(text: str, phrase: str) -> bool:
    return bool(phrase.strip()) and _norm(phrase) in _norm(text)


# Split after . ! ? unless the period ends a lone capital ("U.S.", "J. Smith") or a title ("Mr.").
_SENTENCE_END = re.compile(
    r"(?<=[.!?])(?<!\b[A-Z]\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bMrs\.)\s+"
)


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


# ---- HotpotQA and 2WikiMultihopQA: context + supporting_facts ----


def _parse_context_row(row: dict, dataset: str) -> Example:
    example_id, question, answer = _row_id(row), _text(row, "question"), _text(row, "answer")
    if row.get("context") is None:
        raise MalformedRow("missing_context")
    docs = [(str(t), _doc_sentences(s)) for t, s in _tuples(row["context"], _TITLE, _SENTENCES)]
    if not any(any(sentences) for _, sentences in docs):
        raise MalformedRow("empty_documents")
    by_title: dict[str, list[str]] = {}
    for title, sentences in docs:
        by_title.setdefault(title, sentences)
    if not row.get("supporting_facts"):
        raise MalformedRow("missing_supporting_facts")
    facts = _tuples(row["supporting_facts"], _TITLE, _SENT_ID)
    support = [_supporting_sentence(by_title, str(t), i) for t, i in facts]
    kind = str(row.get("type") or "")
    tier = _TYPE_TIERS.get(kind, "medium")
    if dataset == "hotpotqa" and len(facts) >= 3:
        tier = "hard"
    return Example(
        id=example_id,
        question=question,
        documents=[(t, " ".join(x for x in s if x)) for t, s in docs],
        answer=answer,
        aliases=_aliases(row, answer),
        supporting_titles=_unique(t for t, _ in support),
        supporting_sentences=support,
        tier=tier,
        source=dataset,
        type=kind,
    )


def _doc_sentences(value: Any) -> list[str]:
    """Stripped sentences (HotpotQA keeps a leading space on each, 2Wiki does not).

    Empty ones stay so that supporting-fact sentence ids still point at the right sentence.
    """
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise MalformedRow("bad_layout")
    return [str(v).strip() for v in value]


def _supporting_sentence(
    by_title: dict[str, list[str]], title: str, sent_id: Any
) -> tuple[str, str]:
    if title not in by_title:
        raise MalformedRow("missing_supporting_title", title)
    sentences = by_title[title]
    valid = isinstance(sent_id, int) and not isinstance(sent_id, bool)
    if not valid or not 0 <= sent_id < len(sentences) or not sentences[sent_id]:
        raise MalformedRow("bad_sentence_id", f"{title}[{sent_id}]")
    return title, sentences[sent_id]


def _wiki_hops(row: dict, example: Example) -> list[Hop]:
    """One hop per evidence triple; the supporting sentence naming the object grounds it."""
    evidences = row.get("evidences")
    if not evidences:
        return []
    return [
        _wiki_hop(str(s), str(r), str(o), example)
        for s, r, o in _tuples(evidences, _SUBJECT, _RELATION, _OBJECT)
    ]


def _wiki_hop(subject: str, relation: str, obj: str, example: Example) -> Hop:
    support = example.supporting_sentences
    evidence = next(((t, s) for t, s in support if _mentions(s, obj)), None)
    docs = [(t, text) for t, text in example.documents if t in example.supporting_titles]
    title = (
        evidence[0]
        if evidence
        else next((t for t, text in docs if _mentions(text, obj)), None)
        or next((t for t, text in docs if _mentions(text, subject)), "")
    )
    if evidence is None:  # the annotation words the object differently: use the title's fact
        evidence = next(((t, s) for t, s in support if t == title), (title, ""))
    return Hop(
        question=f"What is the {relation} of {subject}?",
        answer=obj,
        title=title,
        evidence=evidence[1],
    )


# ---- MuSiQue: paragraphs + question_decomposition ----


def _parse_musique(row: dict) -> Example:
    if row.get("answerable") is False:
        raise MalformedRow("unanswerable")
    example_id, question, answer = _row_id(row), _text(row, "question"), _text(row, "answer")
    if row.get("paragraphs") is None:
        raise MalformedRow("missing_context")
    paragraphs = _records(row["paragraphs"])
    if not all(isinstance(p, dict) for p in paragraphs):
        raise MalformedRow("bad_layout")
    docs = [
        (str(p.get("title", "")), str(p.get("paragraph_text") or "").strip()) for p in paragraphs
    ]
    if not any(text for _, text in docs):
        raise MalformedRow("empty_documents")
    position = {p.get("idx", i): i for i, p in enumerate(paragraphs)}
    steps = _records(row.get("question_decomposition") or [])
    if not steps or not all(isinstance(s, dict) for s in steps):
        raise MalformedRow("missing_decomposition")
    hops, used = [], []
    for step in steps:
        pos = position.get(step.get("paragraph_support_idx"))
        if pos is None:
            raise MalformedRow("missing_support_paragraph")
        hops.append(_musique_hop(step, [h.answer for h in hops], docs[pos]))
        used.append(pos)
    used += [i for i, p in enumerate(paragraphs) if p.get("is_supporting") and i not in used]
    return Example(
        id=example_id,
        question=question,
        documents=docs,
        answer=answer,
        aliases=_aliases(row, answer),
        supporting_titles=_unique(docs[i][0] for i in used),
        supporting_sentences=[(h.title, h.evidence) for h in hops],
        hops=hops,
        tier=_musique_tier(example_id, len(steps)),
        source="musique",
        type=_musique_type(example_id, len(steps)),
    )


def _musique_hop(step: dict, earlier: list[str], doc: tuple[str, str]) -> Hop:
    """Sub-question with `#k` filled by hop k's answer; evidence: first sentence with the answer."""

    def fill(match: re.Match) -> str:
        k = int(match.group(1))
        return earlier[k - 1] if 1 <= k <= len(earlier) else match.group(0)

    answer = str(step.get("answer") or "").strip()
    sentences = _sentences(doc[1]) or [""]
    evidence = next((s for s in sentences if _mentions(s, answer)), sentences[0])
    return Hop(
        question=re.sub(r"#(\d+)", fill, str(step.get("question") or "")),
        answer=answer,
        title=doc[0],
        evidence=evidence,
    )


def _musique_type(example_id: str, steps: int) -> str:
    """The id prefix (`2hop`, `3hop1`, `4hop3`...) names the composition shape."""
    prefix = example_id.split("__", 1)[0]
    return prefix if re.fullmatch(r"\d+hop\d*", prefix) else f"{steps}hop"


def _musique_tier(example_id: str, steps: int) -> str:
    hops = int(re.match(r"\d+", _musique_type(example_id, steps)).group())
    return _HOP_TIERS.get(hops, "easy" if hops < 2 else "hard")
