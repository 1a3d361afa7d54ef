"""2WikiMultihopQA: context + supporting facts (as HotpotQA) plus evidence triples as gold hops.

Official file: a JSON array of `_id, type, question, context [[title, [sentences]]],
supporting_facts [[title, sent_id]], evidences [[subject, relation, object]], answer`; hub copies
store structs of parallel lists (`context: {title, content}`, `evidences: {fact, relation,
entity}`).

Answer aliases: the official evaluation (`2wikimultihop_evaluate_v1.1.py`) scores a prediction
against the answer and every alias and demonym that `id_aliases.json` lists for the row's
`answer_id` (JSON lines of `Q_id, aliases, demonyms`, shipped beside the data with `answer_id`s),
taking the best EM and the best F1 over them. `load_examples` reads that file when it sits beside
the data file or is named (`data.<split>.aliases_path`); `with_aliases` adds its strings to each
row's `Example.aliases`, which every score takes the best over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from mbt_online.tasks.base import (
    Example,
    Hop,
    as_text,
    describe_missing,
    norm_text,
    read_source,
    resolve_data_path,
    tuples,
)
from mbt_online.tasks.wiki_context import parse_context_row

log = logging.getLogger("mbt_online")

NAME = "2wikimultihopqa"
ALIASES_FILE = "id_aliases.json"  # the official file's name, looked for beside the data file
TYPE_TIERS = {
    "comparison": "easy",
    "inference": "medium",
    "compositional": "medium",
    "bridge_comparison": "hard",
}
SUBJECT_KEYS = ("subject", "fact", "head")
RELATION_KEYS = ("relation", "predicate")
OBJECT_KEYS = ("object", "entity", "tail")


def tier(kind: str, facts: int) -> str:
    """By question type alone: a bridge-comparison compares two two-hop chains."""
    return TYPE_TIERS.get(kind, "medium")


def parse(row: dict, id_aliases: dict[str, list[str]] | None = None) -> Example:
    """One row; with `id_aliases` (`read_id_aliases`), the aliases and demonyms of the row's
    `answer_id` join the answer's aliases, as the official script adds them to the gold set."""
    example = parse_context_row(row, NAME, tier)
    example.hops = _hops(row, example)
    answer_id = row.get("answer_id")
    if id_aliases and isinstance(answer_id, str) and answer_id in id_aliases:
        extra = [a for a in id_aliases[answer_id] if a != example.answer]
        example.aliases = list(dict.fromkeys([*example.aliases, *extra]))
    return example


def with_aliases(id_aliases: dict[str, list[str]]) -> Callable[[dict], Example]:
    """The row parser whose examples also count `id_aliases`' strings as their answer."""
    return partial(parse, id_aliases=id_aliases)


def aliases_file(source: Any, aliases_path: str | Path | None = None) -> Path | None:
    """The alias file a load reads: `aliases_path` when given (a `FileNotFoundError` when it names
    no file), else the `id_aliases.json` beside a data file or folder, else None (a hub data set
    or rows in memory have no folder to look in)."""
    if aliases_path is not None:
        path = resolve_data_path(aliases_path)
        if not path.is_file():
            raise FileNotFoundError(f"{NAME} aliases not found: {describe_missing(aliases_path)}")
        return path
    if not isinstance(source, str | Path):
        return None
    beside = resolve_data_path(source).parent / ALIASES_FILE
    return beside if beside.is_file() else None


def read_id_aliases(path: str | Path) -> dict[str, list[str]]:
    """`Q_id` -> its aliases then its demonyms (the official file: JSON lines of `Q_id, aliases,
    demonyms`; a JSON array of such records reads the same). Entries without a string `Q_id` or
    with a list that is not of strings are skipped, counted in one warning: an entry more or less
    moves one question's gold set, never the load."""
    table: dict[str, list[str]] = {}
    skipped = 0
    for entry in read_source(f"{NAME} aliases", path):
        strings = _alias_strings(entry)
        if strings is None:
            skipped += 1
            continue
        q_id = entry["Q_id"]  # a repeated id adds its strings to the first entry's
        table[q_id] = list(dict.fromkeys([*table.get(q_id, []), *strings]))
    if skipped:
        log.warning("%s: skipped %d unreadable alias entries", path, skipped)
    log.info("%s: answer aliases and demonyms of %d answer ids from %s", NAME, len(table), path)
    return table


def _alias_strings(entry: Any) -> list[str] | None:
    """An entry's aliases then demonyms, stripped, blanks dropped; None when unreadable."""
    if not isinstance(entry, dict) or not isinstance(entry.get("Q_id"), str):
        return None
    out: list[str] = []
    for key in ("aliases", "demonyms"):
        values = entry.get(key) or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return None
        out += [v.strip() for v in values if v.strip()]
    try:  # a byte that is not UTF-8 (read as a lone surrogate) would cost the data row
        "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        return None
    return out


def _hops(row: dict, example: Example) -> list[Hop]:
    """One hop per evidence triple; the supporting sentence naming the object grounds it. The
    texts searched are normalised once per row, not once per triple."""
    evidences = row.get("evidences")
    if not evidences:
        return []
    triples = tuples(evidences, SUBJECT_KEYS, RELATION_KEYS, OBJECT_KEYS, what="hops")
    support = [(t, s, norm_text(s)) for t, s in example.supporting_sentences]
    titles = set(example.supporting_titles)
    docs = [(t, norm_text(text)) for t, text in example.documents if t in titles]
    return [
        _hop(*(as_text(x, "bad_evidences") for x in triple), support, docs) for triple in triples
    ]


def _hop(
    subject: str,
    relation: str,
    obj: str,
    support: list[tuple[str, str, str]],
    docs: list[tuple[str, str]],
) -> Hop:
    """`support`: (title, sentence, normalised sentence); `docs`: (title, normalised text) of the
    supporting documents."""
    o, s = norm_text(obj), norm_text(subject)
    evidence = next(((t, x) for t, x, n in support if o and o in n), None)
    title = (
        evidence[0]
        if evidence
        else next((t for t, n in docs if o and o in n), None)
        or next((t for t, n in docs if s and s in n), "")
    )
    if evidence is None:  # the annotation words the object differently: use the title's fact
        evidence = next(((t, x) for t, x, _ in support if t == title), (title, ""))
    return Hop(
        question=f"What is the {relation} of {subject}?",
        answer=obj,
        title=title,
        evidence=evidence[1],
    )
