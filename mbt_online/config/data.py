"""Where a run's questions and its initial student come from: the data sources and their splits,
the synthetic world, and the bootstrap student built on it (the quickstart's). Read by `tasks/`
and `sim/`; `Config` in `schema.py` holds them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mbt_online.config.section import Section
from mbt_online.tasks.names import DATASETS


class DataSplit(Section):
    """Where a split's questions come from and how their prompts are built."""

    dataset: Literal[DATASETS] = Field(  # type: ignore[valid-type]
        default="world",
        description="Benchmark layout of `path` (or `hub`), or `world` for the embedded "
        "synthetic world (no file needed).",
    )
    path: str | None = Field(
        default=None,
        description="Data file in the benchmark's official layout (JSON, JSON lines or Parquet) "
        "or a datasets save_to_disk folder; required unless dataset=world or `hub` is set. "
        "`pkg://samples/<benchmark>/<file>` names a dev sample shipped with the package.",
    )
    hub: str | None = Field(
        default=None,
        description="Instead of `path`: a Hugging Face hub data set in the benchmark's hub "
        "layout (e.g. `hotpotqa/hotpot_qa`; README: where each benchmark lives), or a local "
        "folder laid out like one, read through `datasets.load_dataset` and the hub cache "
        "(with HF_HUB_OFFLINE=1 it must be cached).",
    )
    hub_config: str | None = Field(
        default=None,
        description="The hub data set's configuration (`distractor` for hotpotqa/hotpot_qa); "
        "null = its default.",
    )
    hub_split: str = Field(
        default="validation",
        description="The hub data set's split to read (the benchmarks' dev sets: `validation`).",
    )
    aliases_path: str | None = Field(
        default=None,
        description="Only for dataset=2wikimultihopqa: the official `id_aliases.json` (JSON "
        "lines of Q_id, aliases, demonyms), whose aliases and demonyms of each row's `answer_id` "
        "count as the answer in every score (EM, F1, cover, the reward), as the official "
        "evaluation script scores. null = the `id_aliases.json` beside `path` when there is "
        "one, else the answer alone.",
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Use at most this many questions; null = all.",
    )
    offset: int = Field(
        default=0,
        ge=0,
        description="Skip this many usable questions first (after shuffling), e.g. to keep "
        "train and eval apart in one file.",
    )
    distractors: int | None = Field(
        default=None,
        ge=0,
        le=500,
        description="Distractor documents kept beside the gold ones in each prompt; null = "
        "every document of the question (the world: world.distractors).",
    )
    shuffle: bool = Field(
        default=True,
        description="Shuffle the questions (seeded: run.seed; the world: world_seed) before "
        "offset and limit, so a capped run sees a random subset.",
    )
    world_seed: int = Field(
        default=0,
        description="Only for dataset=world: which generated world the questions come from; "
        "train and eval use different worlds.",
    )
    tier: str | None = Field(
        default=None,
        max_length=40,
        pattern=r"^[a-z][a-z0-9_-]*$",
        description="Report this source's questions under this tier label (`eval/<tier>/...`) "
        "instead of their own (easy/medium/hard by hops): e.g. `shifted` for a harder held-out "
        "set in data.eval_more. null keeps the source's tiers.",
    )

    @model_validator(mode="after")
    def _check_aliases(self) -> DataSplit:
        if self.aliases_path is not None and self.dataset != "2wikimultihopqa":
            raise ValueError(
                f"aliases_path: only dataset=2wikimultihopqa reads an alias file "
                f"(dataset={self.dataset})"
            )
        return self


class DataConfig(Section):
    """The training and held-out evaluation questions."""

    train: DataSplit = Field(
        default=DataSplit(), description="Training questions: rolled out and taught each round."
    )
    eval: DataSplit = Field(
        default=DataSplit(world_seed=1000),
        description="Held-out evaluation questions: evaluated after every round (round 0 = the "
        "untrained student).",
    )
    train_more: list[DataSplit] = Field(
        default_factory=list,
        description="More training sources appended to data.train (each with the keys of "
        "data.train), e.g. all three benchmarks in one run.",
    )
    eval_more: list[DataSplit] = Field(
        default_factory=list,
        description="More evaluation sources appended to data.eval (each with the keys of "
        "data.eval).",
    )

    def splits(self, which: str | None = None) -> list[tuple[str, DataSplit]]:
        """(dotted name, split) for the train and/or eval sources, in load order."""
        out = []
        for split in ("train", "eval") if which is None else (which,):
            out.append((split, getattr(self, split)))
            out += [(f"{split}_more.{i}", s) for i, s in enumerate(getattr(self, f"{split}_more"))]
        return out


class WorldConfig(Section):
    """The embedded synthetic multi-hop world (dataset=world)."""

    entities_per_kind: int = Field(
        default=40,
        ge=4,
        le=100_000,
        description="Entities of each kind (people, cities...) in a world.",
    )
    questions: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="Questions generated per world (before offset/limit).",
    )
    min_hops: int = Field(
        default=2, ge=2, le=4, description="Fewest reasoning hops in a question (2 to 4)."
    )
    max_hops: int = Field(
        default=4, ge=2, le=4, description="Most reasoning hops in a question (2 to 4)."
    )
    distractors: int = Field(
        default=3,
        ge=0,
        le=500,
        description="Distractor documents beside the gold ones in a prompt.",
    )
    twin_hops: bool = Field(
        default=False,
        description="Regulation testbed: the first distractor slots hold a look-alike chain: "
        "the document of an entity named like an intermediate hop's subject (same last word: "
        "the student's copy key is ambiguous) whose fact leads elsewhere, and the documents "
        "its wrong chain continues through, so a slip there yields a fluent wrong answer that "
        "only re-reading the hop's document with the full name catches (docs/results.md).",
    )


class BootstrapConfig(Section):
    """The embedded world's tiny student: trained from scratch on simulated unregulated traces.

    The p_* rates are the behaviour mix of the training traces (clean traces take the rest); the
    sampled student shows them at a lower rate, since T < 1 sharpens toward clean. Clean traces
    are rare (5%) as in the reasoning models MBT targets: with 20% the student's own best sample
    was usually already clean, and self-distillation needed no teacher. Every field is part of
    the student's cache key.
    """

    p_loop: float = Field(
        default=0.45,
        ge=0,
        le=1,
        description="Share of training traces that loop (repeat a check until cut off).",
    )
    p_distractor_switch: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Share of training traces that reach the answer, then switch to a "
        "distractor's (answer-inclusive errors).",
    )
    p_overthink: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Share of training traces that keep re-checking after the answer. The "
        "three p_* sum to <= 1; clean traces take the rest.",
    )
    p_hop_slip: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of training traces that copy a look-alike's fact at an intermediate "
        "hop and follow its wrong chain (needs world.twin_hops; others fall back to overthinking).",
    )
    p_slip_repair: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of those slips the trace notices itself (names the look-alike, "
        "re-reads the hop's document and goes on right): the repair a student can show on its "
        "own, so self-distillation can select it.",
    )
    worlds: int = Field(
        default=24, ge=1, le=10_000, description="Generated worlds the traces come from."
    )
    questions_per_world: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="Traces (one per question) generated per world.",
    )
    vocab_size: int = Field(
        default=1600,
        ge=300,
        le=1_000_000,
        description="Vocabulary size of the student's word tokenizer.",
    )
    hidden_size: int = Field(default=128, ge=64, le=65_536, description="Transformer hidden size.")
    layers: int = Field(
        default=3,
        ge=2,
        le=1024,
        description="Transformer layers; the reader circuit takes two, the rest is free.",
    )
    heads: int = Field(
        default=2,
        ge=1,
        le=1024,
        description="Attention heads; head size hidden_size/heads must be >= 32 and at most "
        "hidden_size/2.",
    )
    max_length: int = Field(
        default=448,
        ge=64,
        le=1_048_576,
        description="Longest training sequence in tokens (prompt + completion).",
    )
    loop_max_length: int = Field(
        default=336,
        ge=64,
        le=1_048_576,
        description="Where looping traces are cut, in tokens (prompt + completion; at most "
        "`max_length`). A few turns of the cycle teach the student to loop into the cap as well as "
        "many: at 336 instead of 448 the build trains on 14% fewer tokens and its student loops "
        "more, not less (docs/results.md).",
    )
    epochs: float = Field(
        default=1.0, gt=0, le=1000, description="Passes over the training traces."
    )
    batch_size: int = Field(
        default=8, ge=1, le=1_000_000, description="Sequences per optimizer step."
    )
    learning_rate: float = Field(default=3e-3, gt=0, description="Peak learning rate (AdamW).")
    seed: int = Field(
        default=0, description="Seed of the traces, the weights' initialisation and batching."
    )

    @model_validator(mode="after")
    def _check_rates(self) -> BootstrapConfig:
        if self.p_loop + self.p_distractor_switch + self.p_overthink + self.p_hop_slip > 1:
            raise ValueError("p_loop + p_distractor_switch + p_overthink + p_hop_slip must be <= 1")
        return self
