"""What the loop drives, as small protocols: a generator, a teacher and a trainer.

The loop (`loop.Session`) is written against these shapes only, so its control flow (skip, resume,
model lineage, metrics written once) runs in seconds with fakes in tests, while a real run gets
vLLM (`engine.Engine`), a teacher backend (`teachers`) and TRL (`train.TrlTrainer`).

They sit in one module, apart from their implementations, because the implementations import
heavy libraries at the top (torch, TRL) and a fake must not need them; `Teacher` belongs to the
teachers' contract (with `TeachRequest`, `TeachResult` and `verify`) and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mbt_online.engine import Completion, HandoffMode
from mbt_online.teachers.contract import Teacher

__all__ = ["Generator", "Teacher", "Trainer", "TrainJob", "Trained"]


class Generator(Protocol):
    """A live student: samples completions for chat prompts and takes new weights in place."""

    def generate(
        self,
        messages: list[list[dict]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        top_k: int,
        max_tokens: int,
        seed: int,
    ) -> list[list[Completion]]:
        """n completions per chat, in the order of `messages`."""
        ...

    def handoff(self, mode: HandoffMode, model_dir: str, adapter_dir: str | None = None) -> None:
        """Serve `model_dir` (with `adapter_dir` on top for mode "lora") from now on."""
        ...

    def close(self) -> None: ...


@dataclass
class TrainJob:
    """One round's training: SFT on `sft`, then DPO on `pairs`, each from the model the previous
    step left (empty data skips a step). `reference` is DPO's frozen reference, None meaning the
    model DPO starts from."""

    start_model: str
    sft: Sized  # prompt/completion rows (a `datasets.Dataset` in a real run)
    pairs: Sized  # chosen/rejected rows
    out_dir: Path
    seed: int
    reference: str | None = None


@dataclass
class Trained:
    """The round's final model folder, its LoRA adapter as (base model dir, adapter dir) when it
    was trained as one, and the train/* metrics."""

    model: str
    adapter: tuple[str, str] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class Trainer(Protocol):
    """Turns a round's training rows into a new model folder on disk."""

    def train(self, job: TrainJob) -> Trained: ...
