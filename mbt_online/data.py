"""Benchmark data: one `Example` shape and a loader per multi-hop benchmark.

Loaders read both the official files (JSON array or JSON lines, detected) and the Hugging Face hub
layout, skip malformed rows with a counted reason, and never crash on bad input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
