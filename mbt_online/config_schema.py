"""The run configuration's schema: every knob, its type, range, default and description.

The single source of truth for a run's settings: each field's description is what
`mbt-online config show`, `train --help` and docs/configuration.md are generated from (a test
fails on a field without one). Loading YAML files and overrides lives in `mbt_online.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from mbt_online.llm.endpoint import check_base_url
from mbt_online.rundir.names import check_safe_name
from mbt_online.tasks.names import BENCHMARKS, DATASETS


class Section(BaseModel):
    """Base for every config section: no unknown keys, assignments re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(Section):
    """What the run is called, its seed and where its directory goes."""

    name: Annotated[str, AfterValidator(check_safe_name)] = Field(
        default="mbt",
        description="Run name: the run directory <runs_dir>/<name> and the wandb run name; one "
        "path component (letters, digits and . _ + -, starting with a letter or digit).",
    )
    seed: int = Field(
        default=0,
        description="Run seed: the engine's, data shuffling's and training's (plus the round); "
        "sampling has its own seeds (rollout.seed, eval.sampling.seed).",
    )
    runs_dir: str = Field(
        default="runs", description="Folder that holds run directories (relative to the cwd)."
    )


class DataSplit(Section):
    """Where a split's questions come from and how their prompts are built."""

    dataset: Literal[DATASETS] = Field(  # type: ignore[valid-type]
        default="world",
        description="Benchmark layout of `path`, or `world` for the embedded synthetic world "
        "(no file needed).",
    )
    path: str | None = Field(
        default=None,
        description="Data file in the benchmark's official layout (JSON, JSON lines or Parquet) "
        "or a datasets save_to_disk folder; required unless dataset=world. "
        "`pkg://samples/<benchmark>/<file>` names a dev sample shipped with the package.",
    )
    limit: int | None = Field(
        default=None, ge=1, description="Use at most this many questions; null = all."
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
        default=40, ge=4, description="Entities of each kind (people, cities...) in a world."
    )
    questions: int = Field(
        default=200, ge=1, description="Questions generated per world (before offset/limit)."
    )
    min_hops: int = Field(
        default=2, ge=2, le=4, description="Fewest reasoning hops in a question (2 to 4)."
    )
    max_hops: int = Field(
        default=4, ge=2, le=4, description="Most reasoning hops in a question (2 to 4)."
    )
    distractors: int = Field(
        default=3, ge=0, description="Distractor documents beside the gold ones in a prompt."
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
    worlds: int = Field(default=24, ge=1, description="Generated worlds the traces come from.")
    questions_per_world: int = Field(
        default=200, ge=1, description="Traces (one per question) generated per world."
    )
    vocab_size: int = Field(
        default=1600, ge=300, description="Vocabulary size of the student's word tokenizer."
    )
    hidden_size: int = Field(default=128, ge=64, description="Transformer hidden size.")
    layers: int = Field(
        default=3,
        ge=2,
        description="Transformer layers; the reader circuit takes two, the rest is free.",
    )
    heads: int = Field(
        default=2,
        ge=1,
        description="Attention heads; head size hidden_size/heads must be >= 32 and at most "
        "hidden_size/2.",
    )
    max_length: int = Field(
        default=448,
        ge=64,
        description="Longest training sequence in tokens (prompt + completion); loops are cut "
        "here.",
    )
    epochs: float = Field(default=1.0, gt=0, description="Passes over the training traces.")
    batch_size: int = Field(default=8, ge=1, description="Sequences per optimizer step.")
    learning_rate: float = Field(default=3e-3, gt=0, description="Peak learning rate (AdamW).")
    seed: int = Field(
        default=0, description="Seed of the traces, the weights' initialisation and batching."
    )

    @model_validator(mode="after")
    def _check_rates(self) -> BootstrapConfig:
        if self.p_loop + self.p_distractor_switch + self.p_overthink > 1:
            raise ValueError("p_loop + p_distractor_switch + p_overthink must be <= 1")
        return self


class StudentConfig(Section):
    """The model being trained and how its prompts look."""

    model: str = Field(
        default="bootstrap",
        description="Initial student: `bootstrap` (the embedded world's tiny model), a known "
        "pretrained name (`mbt-online models fetch`) or a local Hugging Face model folder.",
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        default="float32", description="Weights' dtype in the engine and in training."
    )
    max_model_len: int = Field(
        default=2048, ge=64, description="Context window in tokens (prompt + completion)."
    )
    use_metacognitive_prompt: bool = Field(
        default=False,
        description="Add the paper's metacognitive system prompt to every student prompt (the "
        "prompt-only baseline).",
    )


class EngineConfig(Section):
    """The vLLM engine that samples the student."""

    handoff: Literal["reload", "lora", "restart"] = Field(
        default="reload",
        description="How a round's new weights reach the engine: `reload` in place, `lora` "
        "serves the trained adapter (needs train.method=lora), `restart` a fresh engine.",
    )
    kvcache_gib: float = Field(
        default=1.0, gt=0, description="CPU only: KV-cache size in GiB (rounded up)."
    )
    enforce_eager: bool = Field(
        default=True,
        description="Run without CUDA graphs / compilation: slower steps, much faster start.",
    )
    gpu_memory_utilization: float = Field(
        default=0.45,
        gt=0,
        le=1,
        description="GPU only: share of GPU memory vLLM may take; the rest is left to training.",
    )


class SamplingConfig(Section):
    """How completions are sampled."""

    samples: int = Field(default=4, ge=1, description="Completions per question.")
    temperature: float = Field(default=0.6, ge=0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Nucleus sampling mass; 1 = off.")
    top_k: int = Field(
        default=20, ge=-1, description="Sample among the k likeliest tokens; -1 = off."
    )
    max_tokens: int = Field(
        default=512, ge=1, description="Completion length cap in tokens; a cut trace is degenerate."
    )
    seed: int = Field(
        default=0, description="Sampling seed (offset per round where each round must differ)."
    )


class RewardWeights(Section):
    """Weight of each reward component (each in [0, 1]); the sign says penalty or bonus."""

    correct: float = Field(default=1.0, description="The answer covers a gold answer.")
    format: float = Field(default=0.2, description="The response has an answer tag.")
    degenerate: float = Field(
        default=-1.0, description="The response was cut at max_tokens (a loop or a ramble)."
    )
    answer_inclusive: float = Field(
        default=-0.5,
        description="The reasoning reached a gold answer but the final answer is wrong.",
    )
    redundancy: float = Field(
        default=-0.3, description="Share of the reasoning spent after first reaching the answer."
    )
    over_budget: float = Field(
        default=-0.3,
        description="Tokens over the tier's budget, as a fraction of the budget (capped at 1).",
    )
    phases: float = Field(
        default=0.2,
        description="Share of the metacognitive phases (goal, plan, monitor, verify...) present.",
    )


class RewardConfig(Section):
    """The per-trace reward: what ranks rollouts, picks DPO pairs and scores evaluation."""

    weights: RewardWeights = Field(
        default=RewardWeights(), description="Weight of each reward component."
    )
    budgets: dict[str, int] = Field(
        default_factory=dict,
        description="Token budget per difficulty tier (easy, medium, hard), e.g. {easy: 100}; "
        "tiers not listed use default_budget.",
    )
    default_budget: int = Field(
        default=256, ge=1, description="Token budget of a tier without its own in budgets."
    )
    repetition_ngram: int = Field(
        default=4, ge=1, description="n-gram length of the repetition diagnostic."
    )


class TeacherConfig(Section):
    """Who writes the target traces, and how they are checked."""

    mode: Literal["mbt-r", "mbt-s", "both", "none"] = Field(
        default="mbt-r",
        description="`mbt-r` rewrites the student's drafts, `mbt-s` synthesizes traces from the "
        "question, `both` does both, `none` trains on the student's own correct traces "
        "(self-distillation).",
    )
    backend: Literal["structured", "openai", "vllm"] = Field(
        default="structured",
        description="`structured`: the built-in rule-based teacher (no model); `openai`: an "
        "OpenAI-compatible endpoint at base_url; `vllm`: teacher.model in a local vLLM engine.",
    )
    base_url: Annotated[str, AfterValidator(check_base_url)] = Field(
        default="http://127.0.0.1:8000/v1",
        description="OpenAI-compatible endpoint (backend=openai; also the LLM judges'); no "
        "user:pass@ or ?query (refused: the key goes in api_key_env).",
    )
    model: str = Field(
        default="",
        description="Teacher model: the endpoint's model name (openai) or a local model folder "
        "(vllm).",
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="Environment variable holding the endpoint's API key (the key itself never "
        "goes in a config).",
    )
    max_tries: int = Field(
        default=3,
        ge=1,
        description="Attempts per request until a trace passes verify (a fresh seed each).",
    )
    samples: int = Field(
        default=1, ge=1, description="LLM completions per attempt; the first verified one is kept."
    )
    concurrency: int = Field(
        default=8, ge=1, description="Requests in flight at once to the endpoint."
    )
    timeout_s: float = Field(default=120.0, gt=0, description="Read timeout per request, seconds.")
    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a connection to the endpoint."
    )
    max_response_bytes: int = Field(
        default=8_000_000, ge=1, description="Largest response body read; past it `too_large`."
    )
    max_retry_after_s: float = Field(
        default=60.0, ge=0, description="Longest Retry-After honoured; past it a request fails."
    )
    breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive connection errors or timeouts that stop sending."
    )
    allow_insecure_key: bool = Field(
        default=False, description="Send the API key over plain http to a non-loopback host."
    )
    temperature: float = Field(default=0.7, ge=0, description="LLM teacher's sampling temperature.")
    max_tokens: int = Field(
        default=4096, ge=1, description="LLM teacher's completion length cap in tokens."
    )
    rewrite: Literal["failing", "all"] = Field(
        default="failing",
        description="Under MBT-R, which student traces get rewritten: `failing` ones or `all` "
        "sampled ones, lowest reward first, at most rewrites_per_question per question.",
    )
    rewrites_per_question: int = Field(
        default=1, ge=1, description="Most MBT-R rewrites per question and round."
    )
    style: Literal["full", "concise", "student"] = Field(
        default="full",
        description="Structured teacher's wording: `full` monologue paragraphs, `concise` one "
        "line per phase, `student` the world student's own lines plus short phase cues "
        "(concise outside the world).",
    )
    budget_tokens: int | None = Field(
        default=None,
        ge=1,
        description="verify's length cap in student tokens; null = the largest reward budget.",
    )
    max_failure_rate: float = Field(
        default=0.2, ge=0, le=1, description="Unanswered share that fails TEACH/judge, unmarked."
    )
    stage_deadline_s: float | None = Field(
        default=None, gt=0, description="TEACH's time limit (s); past it, it fails unmarked."
    )


class LoraConfig(Section):
    """LoRA adapter shape (train.method=lora)."""

    r: int = Field(default=64, ge=1, description="Adapter rank.")
    alpha: int = Field(default=32, ge=1, description="LoRA scaling alpha (scale = alpha / r).")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field(
        default="all-linear",
        description="Modules that get adapters: `all-linear` or a list of module names (PEFT).",
    )


class SFTConfig(Section):
    """Supervised fine-tuning on the verified teacher traces (TRL SFTTrainer)."""

    enabled: bool = Field(default=True, description="Run the SFT step each round.")
    learning_rate: float = Field(default=1e-4, gt=0, description="Peak learning rate.")
    epochs: float = Field(default=1.0, gt=0, description="Passes over the round's SFT rows.")
    batch_size: int = Field(default=8, ge=1, description="Per-device batch size.")
    grad_accum: int = Field(
        default=1, ge=1, description="Gradient accumulation steps per optimizer step."
    )
    warmup_ratio: float = Field(
        default=0.1, ge=0, le=1, description="Share of the steps spent warming up the rate."
    )
    lr_scheduler: str = Field(
        default="cosine",
        description="Learning-rate schedule (a transformers scheduler name: cosine, linear...).",
    )
    max_grad_norm: float = Field(default=0.3, gt=0, description="Gradient clipping norm.")
    max_length: int = Field(
        default=2048, ge=16, description="Longest training sequence in tokens; longer rows cut."
    )


class DPOConfig(Section):
    """Preference tuning after SFT: the chosen trace against the student's worst (TRL DPO)."""

    enabled: bool = Field(default=True, description="Run the DPO step each round.")
    beta: float = Field(
        default=0.1, gt=0, description="DPO temperature: how far from the reference model."
    )
    learning_rate: float = Field(default=5e-5, gt=0, description="Peak learning rate.")
    epochs: float = Field(default=1.0, gt=0, description="Passes over the round's pairs.")
    batch_size: int = Field(default=8, ge=1, description="Per-device batch size.")
    grad_accum: int = Field(
        default=1, ge=1, description="Gradient accumulation steps per optimizer step."
    )
    max_grad_norm: float = Field(default=0.3, gt=0, description="Gradient clipping norm.")
    max_length: int = Field(
        default=2048, ge=16, description="Longest prompt + trace in tokens; longer pairs cut."
    )
    margin: float = Field(
        default=0.5,
        ge=0,
        description="Smallest reward gap between chosen and rejected for a pair to be kept, so "
        "DPO never pushes against a preference the rewards cannot see.",
    )
    chosen: Literal["teacher", "student_best", "student_then_teacher"] = Field(
        default="teacher",
        description="The chosen trace: the teacher's, the student's own best correct one, or "
        "the student's where it has one and the teacher's otherwise (on-policy pairs that teach "
        "which of its own answers to commit).",
    )
    reference: Literal["initial", "previous"] = Field(
        default="previous",
        description="DPO reference model: the `initial` student or the `previous` round's.",
    )
    max_pairs_per_question: int = Field(
        default=1, ge=1, description="Most preference pairs per question and round."
    )
    sft_weight: float = Field(
        default=0.0,
        ge=0,
        description="Weight of an NLL term on the chosen trace beside the DPO loss (RPO); "
        "0 = plain DPO. DPO alone can lower the chosen trace's likelihood too, and the freed "
        "mass shows up as repetition.",
    )


class TrainConfig(Section):
    """How each round's student is trained: SFT, then DPO."""

    method: Literal["lora", "full"] = Field(
        default="full", description="`full` fine-tuning or a `lora` adapter merged each round."
    )
    lora: LoraConfig = Field(default=LoraConfig(), description="Adapter shape for method=lora.")
    sft: SFTConfig = Field(default=SFTConfig(), description="The SFT step.")
    dpo: DPOConfig = Field(default=DPOConfig(), description="The DPO step.")
    threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for training (torch); null = torch's default.",
    )


class LoopConfig(Section):
    """How many rounds and how many questions each."""

    rounds: int = Field(
        default=3,
        ge=0,
        description="Training rounds; 0 only evaluates the untrained student (a baseline).",
    )
    questions_per_round: int | None = Field(
        default=None,
        ge=1,
        description="Training questions per round, a window rotating over the pool so later "
        "rounds see new ones; null = every question every round.",
    )


class EvalConfig(Section):
    """The held-out evaluation after every round."""

    sampling: SamplingConfig = Field(
        default=SamplingConfig(samples=1, seed=1234),
        description="Evaluation sampling; the paper's protocol: one sample per question at "
        "T=0.6, with the same seed every round.",
    )
    judges: list[Literal["correctness", "answer_hit", "rrp", "mqi"]] = Field(
        default_factory=list,
        description="LLM judges run on each round's eval through the teacher's endpoint "
        "(teacher.base_url / teacher.model).",
    )


class AESConfig(Section):
    """Accuracy-efficiency score against round 0: a*dL + b*dA, or a*dL - c*|dA| when accuracy
    drops (O1-Pruner's constants)."""

    a: float = Field(default=1.0, description="Weight of the relative length saving dL.")
    b: float = Field(default=3.0, description="Weight of a relative accuracy gain dA.")
    c: float = Field(
        default=5.0, description="Weight of a relative accuracy loss (costs more than a gain)."
    )


class TrackingConfig(Section):
    """Weights & Biases logging (offline by default: nothing leaves the machine)."""

    wandb_mode: Literal["offline", "online", "disabled"] = Field(
        default="offline",
        description="`offline` writes a local wandb run (upload later with wandb sync), "
        "`online` streams it, `disabled` logs only to the run directory.",
    )
    project: str = Field(default="mbt-online", description="wandb project.")
    entity: str | None = Field(
        default=None, description="wandb entity (user or team); null = your default."
    )
    group: str | None = Field(
        default=None, description="wandb group (a sweep sets its name); null = none."
    )
    tags: list[str] = Field(default_factory=list, description="wandb tags.")
    table_rows: int = Field(
        default=16, ge=0, description="Sample completions logged per round as a wandb table."
    )


class Config(Section):
    """A whole run: every section, each with its own defaults."""

    run: RunConfig = Field(default=RunConfig(), description="Run name, seed and directory.")
    data: DataConfig = Field(default=DataConfig(), description="Training and held-out questions.")
    world: WorldConfig = Field(
        default=WorldConfig(), description="The embedded synthetic world, for dataset=world."
    )
    student: StudentConfig = Field(
        default=StudentConfig(), description="The model being trained and its prompts."
    )
    bootstrap: BootstrapConfig = Field(
        default=BootstrapConfig(),
        description="The world's tiny student built from scratch, for student.model=bootstrap.",
    )
    engine: EngineConfig = Field(
        default=EngineConfig(), description="The vLLM engine that samples the student."
    )
    rollout: SamplingConfig = Field(
        default=SamplingConfig(), description="Sampling of the training rollouts."
    )
    reward: RewardConfig = Field(
        default=RewardConfig(), description="Per-trace reward: weights and token budgets."
    )
    teacher: TeacherConfig = Field(
        default=TeacherConfig(), description="Who writes target traces and how they are checked."
    )
    train: TrainConfig = Field(
        default=TrainConfig(), description="Each round's SFT and DPO training."
    )
    loop: LoopConfig = Field(default=LoopConfig(), description="Rounds and questions per round.")
    eval: EvalConfig = Field(
        default=EvalConfig(), description="Held-out evaluation after every round."
    )
    aes: AESConfig = Field(default=AESConfig(), description="Accuracy-efficiency score constants.")
    tracking: TrackingConfig = Field(
        default=TrackingConfig(), description="Weights & Biases logging."
    )

    @model_validator(mode="after")
    def _check_cross_field(self) -> Config:
        if self.world.min_hops > self.world.max_hops:
            raise ValueError("world.min_hops must be <= world.max_hops")
        if self.engine.handoff == "lora" and self.train.method != "lora":
            raise ValueError(
                "engine.handoff=lora needs train.method=lora (full fine-tuning "
                "produces no adapter); use reload or restart"
            )
        for split in ("train", "eval"):
            s = getattr(self.data, split)
            if s.dataset in BENCHMARKS and not s.path:
                raise ValueError(
                    f"data.{split}.path is required when data.{split}.dataset={s.dataset}"
                )
        return self

    def run_dir(self) -> Path:
        """The run's default directory: <run.runs_dir>/<run.name>."""
        return Path(self.run.runs_dir) / self.run.name
