"""The run configuration's schema: every knob, its type, range, default and description.

The single source of truth for a run's settings: each field's description is what
`mbt-online config show`, `train --help` and docs/configuration.md are generated from (a test
fails on a field without one). Loading YAML files and overrides lives in `mbt_online.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from mbt_online.config.data import BootstrapConfig, DataConfig, WorldConfig
from mbt_online.config.learning import (
    RewardConfig,
    TeacherConfig,
    TrainConfig,
    grad_accum_for,
)
from mbt_online.config.section import Section
from mbt_online.config.serving import ServeConfig
from mbt_online.rundir.names import check_safe_name
from mbt_online.tasks.names import BENCHMARKS

# the student samplers that report the sampled token ids and log-probs GRPO trains on
GRPO_BACKENDS = ("vllm", "transformers", "vllm-serve")


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


class StudentConfig(Section):
    """The model being trained and how its prompts look."""

    model: str = Field(
        default="bootstrap",
        description="Initial student: `bootstrap` (the embedded world's tiny model), a known "
        "pretrained name (`mbt-online models fetch`), a local Hugging Face model folder, or a "
        "hub id such as `Qwen/Qwen3-0.6B`, read through the hub cache (`HF_HOME`; with "
        "HF_HUB_OFFLINE=1 it must be cached).",
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        default="float32", description="Weights' dtype in the engine and in training."
    )
    max_model_len: int = Field(
        default=2048,
        ge=64,
        le=1_048_576,
        description="Context window in tokens (prompt + completion).",
    )
    chat_template: Literal["model", "verbatim"] = Field(
        default="model",
        description="How the student's chats become text, alike in the engine and in training: "
        "the model's own template (`model`), or `verbatim`, ChatML that keeps every message, "
        "<think> trace included, byte for byte (Qwen3's own template rewrites reasoning).",
    )
    use_metacognitive_prompt: bool = Field(
        default=False,
        description="Add the paper's metacognitive system prompt to every student prompt (the "
        "prompt-only baseline).",
    )


class EngineConfig(Section):
    """The engine that samples the student (vLLM, or transformers where vLLM does not install)."""

    backend: Literal["vllm", "transformers", "vllm-serve"] = Field(
        default="vllm",
        description="Rollout backend: `vllm` (fast; the vLLM package), `transformers`: "
        "transformers' `generate`, for machines without vLLM and as the rollout benchmark's "
        "baseline (seeded per prompt and sample like vLLM, same handoffs; much slower), or "
        "`vllm-serve`: `vllm serve` processes (one per node under runtime.launcher=srun) "
        "reached over HTTP, each handoff a restart (`engine.serve`).",
    )
    data_parallel_size: int = Field(
        default=1,
        ge=1,
        description="Engine processes for rollouts: each takes a contiguous slice of the prompts "
        "(and, on GPU, its own devices) and every prompt keeps the seeds it has with one engine.",
    )
    handoff: Literal["reload", "lora", "restart"] = Field(
        default="reload",
        description="How a round's new weights reach the engine: `reload` in place, `lora` "
        "serves the trained adapter (needs train.method=lora), `restart` a fresh engine.",
    )
    kvcache_gib: float = Field(
        default=1.0, gt=0, description="CPU only: KV-cache size in GiB (rounded up)."
    )
    enforce_eager: bool | None = Field(
        default=None,
        description="Run without CUDA graphs / compilation (slower steps, much faster start); "
        "null = the platform's choice: eager on CPU, CUDA graphs on GPU.",
    )
    chunked_prefill: bool | None = Field(
        default=None,
        description="vLLM's chunked prefill; null = off on CPU (its seeded sampling needs whole "
        "prefills), vLLM's default (on) on GPU, where vLLM 0.32 warns that off may crash or "
        "give wrong outputs.",
    )
    max_num_seqs: int | None = Field(
        default=None,
        ge=1,
        description="Most sequences vLLM decodes at once (a memory/throughput knob); null = "
        "vLLM's default.",
    )
    prefix_caching: bool | None = Field(
        default=None,
        description="vLLM's prefix cache (samples of one prompt share its prefill); null = "
        "vLLM's default.",
    )
    gpu_memory_utilization: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="GPU only: share of GPU memory vLLM may take; null = 0.45 when TRAIN runs "
        "in-process beside the live engine (training gets the rest), 0.85 in staged mode (the "
        "engine gives its memory back before TRAIN: `between_stages`).",
    )
    tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        description="GPUs per engine (vLLM tensor parallelism); the rollouts use "
        "tensor_parallel_size x data_parallel_size devices.",
    )
    between_stages: Literal["auto", "keep", "stop", "sleep"] = Field(
        default="auto",
        description="What the student's engine does while TRAIN runs: `keep` it live, `stop` it "
        "(a fresh engine on the new model after), `sleep` (vLLM sleep mode, GPU only: weights "
        "offloaded, KV cache dropped; woken and reloaded from the new model). auto = keep when "
        "TRAIN runs in-process on CPU, sleep with vLLM on GPU, stop otherwise.",
    )
    serve: ServeConfig = Field(
        default=ServeConfig(), description="The `vllm serve` processes of backend=vllm-serve."
    )


class SamplingConfig(Section):
    """How completions are sampled."""

    samples: int = Field(default=4, ge=1, le=1024, description="Completions per question.")
    temperature: float = Field(default=0.6, ge=0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Nucleus sampling mass; 1 = off.")
    top_k: int = Field(
        default=20, ge=-1, description="Sample among the k likeliest tokens; -1 = off."
    )
    max_tokens: int = Field(
        default=512,
        ge=1,
        le=1_048_576,
        description="Completion length cap in tokens; a cut trace is degenerate.",
    )
    seed: int = Field(
        default=0, description="Sampling seed (offset per round where each round must differ)."
    )


MAX_EVAL_SEEDS = 100


def _distinct_seeds(seeds: list[int] | None) -> list[int] | None:
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise ValueError("give one or more distinct seeds, or null for the single `seed`")
    if seeds is not None and len(seeds) > MAX_EVAL_SEEDS:
        raise ValueError(f"at most {MAX_EVAL_SEEDS} seeds (each one a whole evaluation)")
    return seeds


class EvalSamplingConfig(SamplingConfig):
    """How evaluation completions are sampled: the rollout's knobs, plus repeated seeds."""

    seeds: Annotated[list[int] | None, AfterValidator(_distinct_seeds)] = Field(
        default=None,
        description="Evaluate once per seed and log each eval metric's mean over seeds with its "
        "std, 95% interval (_ci_low/_ci_high: a bootstrap over questions, rates too) and "
        "eval/seeds; null = the single `seed`, no spread keys.",
    )

    def seed_list(self) -> list[int]:
        """The base seeds an evaluation draws with (each offset per round by `stage_seed`)."""
        return list(self.seeds) if self.seeds is not None else [self.seed]


class LoopConfig(Section):
    """How many rounds and how many questions each."""

    rounds: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="Training rounds; 0 only evaluates the untrained student (a baseline).",
    )
    questions_per_round: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Training questions per round, a window rotating over the pool so later "
        "rounds see new ones; null = every question every round.",
    )


class EvalConfig(Section):
    """The held-out evaluation after every round."""

    sampling: EvalSamplingConfig = Field(
        default=EvalSamplingConfig(samples=1, seed=1234),
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
        default=16,
        ge=0,
        description="Sample completions logged per round into one wandb incremental table "
        "(every round kept).",
    )
    job_type: str | None = Field(
        default=None,
        description="wandb job type; null = the run's name without a sweep replicate's "
        "`-s<seed>` suffix, so the seed replicas of one member share it inside the sweep's group.",
    )
    artifacts: Literal["reference", "upload", "none"] = Field(
        default="reference",
        description="Each round's model folder and SFT / DPO data as wandb artifacts: "
        "`reference` records file:// references (nothing copied or uploaded), `upload` copies "
        "the files into the artifacts (a full model's weights every round), `none` logs none.",
    )


class RuntimeConfig(Section):
    """Where the stages run: `inproc` (everything in this process, the CPU default) or `staged`
    (TRAIN as a child process started with `accelerate launch`, which owns the devices while it
    runs; the orchestrator never initialises CUDA). Multi-machine fields follow accelerate's own
    launch arguments; under SLURM they come as dotted overrides from the job script."""

    mode: Literal["auto", "inproc", "staged"] = Field(
        default="auto",
        description="`inproc`: TRAIN runs in this process beside the engine; `staged`: TRAIN runs "
        "as a child started with `accelerate launch` (exit status and result file are its "
        "interface); auto = staged where CUDA is present, inproc otherwise.",
    )
    accelerate_config: str | None = Field(
        default=None,
        description="Staged TRAIN's accelerate config: a file or a shipped name such as "
        "`accelerate/ddp` (also single_gpu, fsdp2, zero2, zero3: `mbt-online config list`); "
        "null = one process (num_processes x num_machines must be 1).",
    )
    num_processes: int = Field(
        default=1, ge=1, description="Staged TRAIN processes per machine (one per GPU)."
    )
    num_machines: int = Field(default=1, ge=1, description="Machines staged TRAIN spans.")
    machine_rank: int = Field(
        default=0,
        ge=0,
        description="This machine's rank among num_machines (launcher=srun: taken from each "
        "task's SLURM_NODEID instead).",
    )
    main_process_ip: str | None = Field(
        default=None,
        description="Address of machine rank 0 for multi-machine TRAIN; null = localhost on one "
        "machine, the allocation's first node under launcher=srun.",
    )
    main_process_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Rendezvous port of staged TRAIN; 0 = a free port chosen at each launch.",
    )
    launcher: Literal["local", "srun"] = Field(
        default="local",
        description="`local`: the TRAIN child starts on this machine; `srun`: under `srun` on "
        "each node of the SLURM allocation (one task per node), machine rank from SLURM_NODEID.",
    )

    @model_validator(mode="after")
    def _check_world(self) -> RuntimeConfig:
        if self.machine_rank >= self.num_machines:
            raise ValueError(
                f"runtime.machine_rank ({self.machine_rank}) must be below runtime.num_machines "
                f"({self.num_machines})"
            )
        world = self.num_processes * self.num_machines
        if world > 1 and self.accelerate_config is None:
            raise ValueError(
                f"runtime.accelerate_config: null runs one TRAIN process, but runtime."
                f"num_processes x num_machines = {world}; name a multi-process config such as "
                "accelerate/ddp, accelerate/fsdp2 or accelerate/zero3"
            )
        if self.num_machines > 1 and self.launcher == "local" and not self.main_process_ip:
            raise ValueError(
                "runtime.main_process_ip is required when runtime.num_machines > 1 with "
                "runtime.launcher=local (or use launcher=srun)"
            )
        if self.accelerate_config is not None and self.mode != "inproc":
            from mbt_online.config import resolve_config  # the shipped-name resolver

            try:
                resolve_config(self.accelerate_config)
            except ValueError as e:
                raise ValueError(f"runtime.accelerate_config: {e}") from None
        return self


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
    runtime: RuntimeConfig = Field(
        default=RuntimeConfig(),
        description="Where stages run: in this process, or TRAIN as an `accelerate launch` child.",
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
        if self.engine.handoff == "lora" and self.engine.backend == "vllm-serve":
            raise ValueError(
                "engine.backend=vllm-serve restarts its servers on every handoff and serves no "
                "adapter: use engine.handoff=restart (or reload) with the merged weights"
            )
        for split, s in self.data.splits():
            if s.dataset in BENCHMARKS and not (s.path or s.hub):
                raise ValueError(
                    f"data.{split}.path is required when data.{split}.dataset={s.dataset} "
                    f"(or a hub data set in data.{split}.hub)"
                )
            if s.path and s.hub:
                raise ValueError(f"data.{split}: name a path or a hub data set, not both")
        world = self.runtime.num_processes * self.runtime.num_machines
        grad_accum_for(self.train.sft, world, "train.sft")  # raises when it does not divide
        grad_accum_for(self.train.dpo, world, "train.dpo")
        self._check_grpo()
        return self

    def _check_grpo(self) -> None:
        """GRPO needs groups (several samples a question) drawn with noise, and a sampler that
        reports what it drew."""
        if not self.train.grpo.enabled:
            return
        if self.rollout.samples < 2:
            raise ValueError(
                "train.grpo needs rollout.samples >= 2: group-relative advantages compare a "
                "question's samples with each other"
            )
        if self.rollout.temperature <= 0:
            raise ValueError("train.grpo needs rollout.temperature > 0 (greedy samples are equal)")
        if self.engine.backend not in GRPO_BACKENDS:
            raise ValueError(
                f"train.grpo: engine.backend={self.engine.backend} does not report the sampled "
                f"token ids and log-probs yet; use one of {', '.join(GRPO_BACKENDS)}"
            )
        mode = self.engine.serve.flag("--logprobs-mode")
        if self.engine.backend == "vllm-serve" and mode not in (None, "processed_logprobs"):
            raise ValueError(
                f"train.grpo: engine.serve.args sets --logprobs-mode {mode}; GRPO's importance "
                "sampling needs the log-probs the tokens were drawn with (processed_logprobs, "
                "which the servers get when engine.serve.args leaves the flag out)"
            )

    def run_dir(self) -> Path:
        """The run's default directory: <run.runs_dir>/<run.name>."""
        return Path(self.run.runs_dir) / self.run.name
