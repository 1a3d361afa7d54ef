"""The trainer's data: TRL's conversational rows, and the end-of-turn cuts applied after TRL
tokenizes them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from datasets import Dataset

Messages = list[dict[str, str]]


def sft_dataset(items: Iterable[tuple[Messages, str]]) -> Dataset:
    """(prompt messages, assistant text) -> TRL's conversational prompt/completion rows."""
    rows = [
        {"prompt": list(prompt), "completion": [{"role": "assistant", "content": text}]}
        for prompt, text in items
    ]
    return Dataset.from_list(rows)


def dpo_dataset(
    items: Iterable[tuple[Messages, str, str]], rejected_truncated: Iterable[bool] | None = None
) -> Dataset:
    """(prompt messages, chosen text, rejected text) -> TRL's conversational preference rows;
    `rejected_truncated` flags rejected traces that hit the length cap (see `end_dpo_turns`)."""
    rows = [
        {
            "prompt": list(prompt),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
        for prompt, chosen, rejected in items
    ]
    if rejected_truncated is not None:
        for row, flag in zip(rows, rejected_truncated, strict=True):
            row["rejected_truncated"] = bool(flag)
    return Dataset.from_list(rows)


def in_memory(rows: Dataset) -> Dataset:
    """A copy with no backing files: TRL's `map` calls would otherwise drop tokenization caches
    (cache-*.arrow) into the folder the rows were loaded from, i.e. the loop's build stage."""
    if not rows.cache_files:
        return rows
    return Dataset.from_dict(rows.to_dict(), features=rows.features)


def through_end_of_turn(ids: list[int], eos_id: int, keep: bool = True) -> list[int]:
    """`ids` up to its last end-of-turn token, with or without it."""
    if eos_id not in ids:
        return ids
    end = len(ids) - 1 - ids[::-1].index(eos_id)
    return ids[: end + 1] if keep else ids[:end]


def end_sft_turns(tokenized: Dataset, eos_id: int | None) -> Dataset:
    """Train each completion through its end-of-turn token and no further.

    Chat templates put text after the end-of-turn token (`<|im_end|>` then a newline); the student
    never generates it, yet training on it taught a small student to write a newline where it
    should stop, and it rambled after `</answer>` (P(end) there fell from 1.00 to 0.69 in three
    SFT rounds). Cut only when that end-of-turn is supervised, i.e. the completion's own.
    """
    if eos_id is None:
        return tokenized

    def cut(row: dict[str, Any]) -> dict[str, Any]:
        n = len(through_end_of_turn(row["input_ids"], eos_id))
        if n < len(row["input_ids"]) and row["labels"][n - 1] != -100:
            row["input_ids"], row["labels"] = row["input_ids"][:n], row["labels"][:n]
        return row

    return tokenized.map(cut)


def end_dpo_turns(tokenized: Dataset, eos_id: int | None) -> Dataset:
    """Chosen and rejected end at their end-of-turn token, as in `end_sft_turns`; a rejected trace
    flagged `rejected_truncated` (it ran into the length cap) loses that token too: rendered as a
    chat turn it gets one it never generated, and DPO would push it down, teaching not to stop."""
    if eos_id is None:
        return tokenized
    flagged = "rejected_truncated" in tokenized.column_names

    def cut(row: dict[str, Any]) -> dict[str, Any]:
        row["chosen_ids"] = through_end_of_turn(row["chosen_ids"], eos_id)
        unfinished = flagged and row["rejected_truncated"]
        row["rejected_ids"] = through_end_of_turn(row["rejected_ids"], eos_id, not unfinished)
        return row

    return tokenized.map(cut)
