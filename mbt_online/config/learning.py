"""The sections of how a round learns: rewards, the teacher, and training (LoRA, SFT, DPO).

Split from `schema` (the run, its data, student, engine, sampling and tracking) so each stays
readable; `mbt_online.config` re-exports every class.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field

from mbt_online.config.grpo import GRPOConfig
from mbt_online.config.passthrough import LibraryNamed
from mbt_online.config.section import Section
from mbt_online.llm.endpoint import check_base_url


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
        default=256,
        ge=1,
        le=2**20,
        description="Token budget of a tier without its own in budgets.",
    )
    repetition_ngram: int = Field(
        default=4, ge=1, description="n-gram length of the repetition diagnostic."
    )


class TeacherConfig(Section):
    """Who writes the target traces, and how they are checked."""

    mode: Literal["mbt-r", "mbt-s", "both", "none", "distill", "distill-r", "direct-r"] = Field(
        default="mbt-r",
        description="`mbt-r` rewrites the student's drafts, `mbt-s` synthesizes traces from the "
        "question, `both` does both, `none` trains on the student's own correct traces "
        "(self-distillation). The paper's controls: `distill` trains on the teacher's own "
        "solutions (teacher distillation, rejection-sampled on the answer), `distill-r` rewrites "
        "the student's drafts like `mbt-r` but without the five phases (Distill-R), `direct-r` "
        "applies the MBT-R rewrite to the teacher's own solution instead of a student draft.",
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
        description="Teacher model: the endpoint's model name (openai), or a local model folder "
        "or Hugging Face hub id such as `Qwen/Qwen3-8B`, read through the hub cache (vllm).",
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="Environment variable holding the endpoint's API key (the key itself never "
        "goes in a config).",
    )
    max_tries: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Attempts per request until a trace passes verify (a fresh seed each).",
    )
    samples: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="LLM completions per attempt; the first verified one is kept.",
    )
    concurrency: int = Field(
        default=8, ge=1, le=1024, description="Requests in flight at once to the endpoint."
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
        default=4096, ge=1, le=2**20, description="LLM teacher's completion length cap in tokens."
    )
    rewrite: Literal["failing", "all"] = Field(
        default="failing",
        description="Under MBT-R, which student traces get rewritten: `failing` ones or `all` "
        "sampled ones, lowest reward first, at most rewrites_per_question per question.",
    )
    rewrites_per_question: int = Field(
        default=1, ge=1, le=1024, description="Most MBT-R rewrites per question and round."
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


class LoraConfig(LibraryNamed):
    """LoRA adapter shape (train.method=lora); PEFT's names `lora_alpha` and `lora_dropout` are
    accepted for alpha and dropout."""

    ALIASES: ClassVar[dict[str, str]] = {"lora_alpha": "alpha", "lora_dropout": "dropout"}
    PASSTHROUGH: ClassVar[tuple[str, str] | None] = ("peft", "peft.LoraConfig")

    r: int = Field(default=64, ge=1, le=4096, description="Adapter rank.")
    alpha: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="LoRA scaling alpha (scale = alpha / r; PEFT: lora_alpha).",
    )
    dropout: float = Field(
        default=0.0, ge=0, lt=1, description="Dropout on the adapter input (PEFT: lora_dropout)."
    )
    target_modules: str | list[str] = Field(
        default="all-linear",
        description="Modules that get adapters: `all-linear` or a list of module names (PEFT).",
    )
    peft: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other field of PEFT's LoraConfig by its own name, e.g. {use_rslora: "
        "true}; checked at load (unknown names, fields the project sets, wrong types refused).",
    )


class StepConfig(LibraryNamed):
    """What SFT and DPO share: the optimizer step, its batch and its schedule length. TRL's names
    are accepted for epochs, batch_size and grad_accum; `trl` sets any other field of TRL's
    config by its own name."""

    ALIASES: ClassVar[dict[str, str]] = {
        "num_train_epochs": "epochs",
        "per_device_train_batch_size": "batch_size",
        "gradient_accumulation_steps": "grad_accum",
    }

    enabled: bool = Field(default=True, description="Run this step each round.")
    learning_rate: float = Field(default=1e-4, gt=0, description="Peak learning rate.")
    epochs: float = Field(
        default=1.0,
        gt=0,
        le=1000,
        description="Passes over the round's rows (TRL: num_train_epochs).",
    )
    batch_size: int = Field(
        default=8,
        ge=1,
        le=10**6,
        description="Per-device batch size (TRL: per_device_train_batch_size).",
    )
    grad_accum: int = Field(
        default=1,
        ge=1,
        le=10**6,
        description="Gradient accumulation steps per optimizer step (TRL: "
        "gradient_accumulation_steps).",
    )
    global_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=10**6,
        description="Rows per optimizer step over all processes; grad_accum is then derived as "
        "global_batch_size / (batch_size x world size) and must divide exactly. null = grad_accum "
        "as set.",
    )
    max_grad_norm: float = Field(default=0.3, gt=0, description="Gradient clipping norm.")
    max_length: int = Field(
        default=2048,
        ge=16,
        le=2**20,
        description="Longest training sequence in tokens; longer rows cut.",
    )
    trl: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other field of TRL's config for this step by its own name, e.g. "
        "{weight_decay: 0.1}; checked at load (unknown names, fields the project sets, wrong "
        "types refused).",
    )


class SFTConfig(StepConfig):
    """Supervised fine-tuning on the verified teacher traces (TRL SFTTrainer)."""

    ALIASES: ClassVar[dict[str, str]] = {
        **StepConfig.ALIASES,
        "lr_scheduler_type": "lr_scheduler",
    }
    PASSTHROUGH: ClassVar[tuple[str, str] | None] = ("trl", "trl.SFTConfig")

    warmup_ratio: float = Field(
        default=0.1, ge=0, le=1, description="Share of the steps spent warming up the rate."
    )
    lr_scheduler: str = Field(
        default="cosine",
        description="Learning-rate schedule (a transformers scheduler name: cosine, linear...; "
        "TRL: lr_scheduler_type).",
    )
    max_rows_per_question: int | None = Field(
        default=2,
        ge=1,
        le=1024,
        description="Most SFT rows one question may put into a round, whatever the method "
        "(teacher traces or the student's own): the fair budget that lets methods be compared. "
        "null lifts the cap.",
    )
    select: Literal["reward", "correct"] = Field(
        default="reward",
        description="Self-distillation's rows (teacher.mode=none): `reward` the student's "
        "correct finished traces ranked by the project's reward, `correct` every correct "
        "finished trace in sample order, unranked (the paper's self-distillation).",
    )


class DPOConfig(StepConfig):
    """Preference tuning after SFT: the chosen trace against the student's worst (TRL DPO)."""

    PASSTHROUGH: ClassVar[tuple[str, str] | None] = ("trl", "trl.DPOConfig")

    def conflicts(self) -> list[tuple[str, str]]:
        """TRL's loss_type / loss_weights given with sft_weight, which sets them too."""
        given = sorted(self.trl.keys() & {"loss_type", "loss_weights"})
        if self.sft_weight > 0 and given:
            return [
                (
                    f"trl.{given[0]}",
                    "{section}.sft_weight sets TRL's loss_type and loss_weights too "
                    '(["sigmoid", "sft"]): set sft_weight to 0 and list "sft" with its weight '
                    "in trl.loss_type and trl.loss_weights, or leave these to sft_weight",
                )
            ]
        return []

    beta: float = Field(
        default=0.1, gt=0, description="DPO temperature: how far from the reference model."
    )
    learning_rate: float = Field(default=5e-5, gt=0, description="Peak learning rate.")
    precompute_ref_log_probs: bool = Field(
        default=False,
        description="Compute the reference model's log-probabilities for all pairs before "
        "training (TRL's precompute_ref_log_probs), so the reference is not held beside the "
        "policy during training.",
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
        default=1, ge=1, le=1024, description="Most preference pairs per question and round."
    )
    sft_weight: float = Field(
        default=0.0,
        ge=0,
        description="Weight of an NLL term on the chosen trace beside the DPO loss (RPO); "
        "0 = plain DPO. DPO alone can lower the chosen trace's likelihood too, and the freed "
        "mass shows up as repetition.",
    )


def grad_accum_for(step: SFTConfig | DPOConfig, world: int, key: str) -> int:
    """Accumulation steps per optimizer step for `world` processes: derived from
    `global_batch_size` when set (batch_size x world must divide it), else `grad_accum`.
    `key` is the section's dotted name (`train.sft`) for the error message."""
    if step.global_batch_size is None:
        return step.grad_accum
    per_step = step.batch_size * world
    if step.global_batch_size % per_step:
        raise ValueError(
            f"{key}.global_batch_size ({step.global_batch_size}) must be a multiple of "
            f"{key}.batch_size x world size ({step.batch_size} x {world} = {per_step})"
        )
    return step.global_batch_size // per_step


class TrainConfig(Section):
    """How each round's student is trained: SFT, then DPO, then GRPO (off by default)."""

    method: Literal["lora", "full"] = Field(
        default="full", description="`full` fine-tuning or a `lora` adapter merged each round."
    )
    lora: LoraConfig = Field(default=LoraConfig(), description="Adapter shape for method=lora.")
    sft: SFTConfig = Field(default=SFTConfig(), description="The SFT step.")
    dpo: DPOConfig = Field(default=DPOConfig(), description="The DPO step.")
    grpo: GRPOConfig = Field(
        default=GRPOConfig(), description="The GRPO step (reinforcement on the MBT rewards)."
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for training (torch); null = torch's default.",
    )
    bf16: bool | None = Field(
        default=None,
        description="bfloat16 autocast in SFT and DPO; master weights and optimizer stay "
        "float32 and the saved student keeps its folder's dtype. null = on when "
        "`student.dtype` is bfloat16. On a CPU with native bfloat16 matmuls it cut the "
        "quickstart's TRAIN by about a quarter (docs/results.md); without them it is much "
        "slower.",
    )
    fp32_lm_head: bool | None = Field(
        default=None,
        description="Under bf16 autocast, project the LM head in float32 (TRL's "
        "`cast_lm_head_to_fp32`, which its SFT and DPO trainers do not expose): DPO's loss is "
        "a difference of summed token log-probs that bfloat16 logits blur. null = on a CPU "
        "only: on a GPU a float32 head leaves the tensor cores for the largest matmul of a "
        "big-vocabulary model, a cost not measured here.",
    )
    attn_implementation: (
        Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3"] | None
    ) = Field(
        default=None,
        description="Attention kernel of the trained model (transformers' attn_implementation); "
        "null = transformers' default for the model.",
    )
    gradient_checkpointing: bool | None = Field(
        default=None,
        description="Recompute activations in the backward pass (non-reentrant): less memory, "
        "~20-30% more compute. null = on with CUDA, off on a CPU.",
    )
    optim: str | None = Field(
        default=None,
        description="Optimizer (a transformers optim name: adamw_torch_fused, adamw_torch...); "
        "null = transformers' default (fused AdamW with torch >= 2.8).",
    )
    save_steps: int | None = Field(
        default=None,
        ge=1,
        description="Checkpoint every this many optimizer steps inside SFT and DPO, under "
        "round-<r>/train/<stage>/checkpoints; a killed TRAIN stage resumes from the last one. "
        "Removed when the stage completes. null = no checkpoints.",
    )
