"""Typed run configuration: pydantic schema, YAML files and dotted command-line overrides.

The schema is the single source of truth for every knob. Unknown keys, wrong types and out-of-range
values fail before any work starts, naming the full dotted key path and what is allowed, so a typo
in a sweep never silently trains with a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "quickstart.yaml"


class Section(BaseModel):
    """Base for every config section: no unknown keys, assignments re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(Section):
    name: str = "mbt"
    seed: int = 0
    runs_dir: str = "runs"


class DataSplit(Section):
    """Where a split's questions come from and how their prompts are built."""

    dataset: Literal["hotpotqa", "musique", "2wikimultihopqa", "world"] = "world"
    path: str | None = None
    limit: int | None = Field(default=None, ge=1)
    offset: int = Field(default=0, ge=0)
    distractors: int | None = Field(default=None, ge=0)
    shuffle: bool = True
    # only for dataset=world: which generated world and how many questions of each hop count
    world_seed: int = 0


class DataConfig(Section):
    train: DataSplit = DataSplit()
    eval: DataSplit = DataSplit(world_seed=1000)
    # more benchmark files appended to a split (e.g. all three benchmarks in one run)
    train_more: list[DataSplit] = Field(default_factory=list)
    eval_more: list[DataSplit] = Field(default_factory=list)

    def splits(self, which: str | None = None) -> list[tuple[str, DataSplit]]:
        """(dotted name, split) for the train and/or eval sources, in load order."""
        out = []
        for split in ("train", "eval") if which is None else (which,):
            out.append((split, getattr(self, split)))
            out += [(f"{split}_more.{i}", s) for i, s in enumerate(getattr(self, f"{split}_more"))]
        return out


class WorldConfig(Section):
    """The embedded synthetic multi-hop world (dataset=world)."""

    entities_per_kind: int = Field(default=40, ge=4)
    questions: int = Field(default=200, ge=1)
    min_hops: int = Field(default=2, ge=2, le=4)
    max_hops: int = Field(default=4, ge=2, le=4)
    distractors: int = Field(default=3, ge=0)


class BootstrapConfig(Section):
    """The embedded world's tiny student: trained from scratch on simulated unregulated traces.

    The p_* rates are the behaviour mix of the training traces (clean traces take the rest); the
    sampled student shows them at a lower rate, since T < 1 sharpens toward clean. Clean traces
    are rare (5%) as in the reasoning models MBT targets: with 20% the student's own best sample
    was usually already clean, and self-distillation needed no teacher. Every field is part of
    the student's cache key.
    """

    p_loop: float = Field(default=0.45, ge=0, le=1)
    p_distractor_switch: float = Field(default=0.2, ge=0, le=1)
    p_overthink: float = Field(default=0.3, ge=0, le=1)
    worlds: int = Field(default=24, ge=1)
    questions_per_world: int = Field(default=200, ge=1)
    vocab_size: int = Field(default=1600, ge=300)
    hidden_size: int = Field(default=128, ge=64)
    layers: int = Field(default=3, ge=2)  # the reader circuit takes two; the rest is free
    heads: int = Field(default=2, ge=1)  # head size hidden/heads: >= 32, at most hidden/2
    max_length: int = Field(default=448, ge=64)  # prompt + completion tokens; loops are cut here
    epochs: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=8, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _check_rates(self) -> BootstrapConfig:
        if self.p_loop + self.p_distractor_switch + self.p_overthink > 1:
            raise ValueError("p_loop + p_distractor_switch + p_overthink must be <= 1")
        return self


class StudentConfig(Section):
    model: str = "bootstrap"  # a local HF folder, "bootstrap" (embedded world) or a known name
    dtype: Literal["float32", "bfloat16"] = "float32"
    max_model_len: int = Field(default=2048, ge=64)
    use_metacognitive_prompt: bool = False


class EngineConfig(Section):
    handoff: Literal["reload", "lora", "restart"] = "reload"
    kvcache_gib: float = Field(default=1.0, gt=0)
    enforce_eager: bool = True
    gpu_memory_utilization: float = Field(default=0.45, gt=0, le=1)


class SamplingConfig(Section):
    samples: int = Field(default=4, ge=1)
    temperature: float = Field(default=0.6, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = Field(default=20, ge=-1)
    max_tokens: int = Field(default=512, ge=1)
    seed: int = 0


class RewardWeights(Section):
    correct: float = 1.0
    format: float = 0.2
    degenerate: float = -1.0
    answer_inclusive: float = -0.5
    redundancy: float = -0.3
    over_budget: float = -0.3
    phases: float = 0.2


class RewardConfig(Section):
    weights: RewardWeights = RewardWeights()
    # token budget per difficulty tier; tiers not listed use `default_budget`
    budgets: dict[str, int] = Field(default_factory=dict)
    default_budget: int = Field(default=256, ge=1)
    repetition_ngram: int = Field(default=4, ge=1)


class TeacherConfig(Section):
    mode: Literal["mbt-r", "mbt-s", "both", "none"] = "mbt-r"
    backend: Literal["structured", "openai", "vllm"] = "structured"
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    max_tries: int = Field(default=3, ge=1)
    samples: int = Field(default=1, ge=1)
    concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    temperature: float = Field(default=0.7, ge=0)
    max_tokens: int = Field(default=4096, ge=1)
    # which student traces get rewritten under MBT-R: failing ones or every sampled one,
    # lowest reward first, at most `rewrites_per_question` per question
    rewrite: Literal["failing", "all"] = "failing"
    rewrites_per_question: int = Field(default=1, ge=1)
    # structured teacher: "full" monologue paragraphs, "concise" one line per phase, or
    # "student": the world student's own line style plus short phase cues (concise elsewhere)
    style: Literal["full", "concise", "student"] = "full"
    # verify's length cap in student tokens; None = the largest reward budget
    budget_tokens: int | None = Field(default=None, ge=1)


class LoraConfig(Section):
    r: int = Field(default=64, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class SFTConfig(Section):
    enabled: bool = True
    learning_rate: float = Field(default=1e-4, gt=0)
    epochs: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    lr_scheduler: str = "cosine"
    max_grad_norm: float = Field(default=0.3, gt=0)
    max_length: int = Field(default=2048, ge=16)


class DPOConfig(Section):
    enabled: bool = True
    beta: float = Field(default=0.1, gt=0)
    learning_rate: float = Field(default=5e-5, gt=0)
    epochs: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_grad_norm: float = Field(default=0.3, gt=0)
    max_length: int = Field(default=2048, ge=16)
    margin: float = Field(default=0.5, ge=0)
    # "student_then_teacher": the student's own best correct trace where it has one (an on-policy
    # pair that teaches which of its own answers to commit), the teacher's trace otherwise
    chosen: Literal["teacher", "student_best", "student_then_teacher"] = "teacher"
    reference: Literal["initial", "previous"] = "previous"
    max_pairs_per_question: int = Field(default=1, ge=1)
    # weight of an NLL term on the chosen trace beside the DPO loss (RPO); 0 = plain DPO. DPO alone
    # can lower the chosen trace's likelihood too, and the freed mass shows up as repetition
    sft_weight: float = Field(default=0.0, ge=0)


class TrainConfig(Section):
    method: Literal["lora", "full"] = "full"
    lora: LoraConfig = LoraConfig()
    sft: SFTConfig = SFTConfig()
    dpo: DPOConfig = DPOConfig()
    threads: int | None = Field(default=None, ge=1)


class LoopConfig(Section):
    rounds: int = Field(default=3, ge=0)
    questions_per_round: int | None = Field(default=None, ge=1)


class EvalConfig(Section):
    # the paper's protocol: one sample per question at T=0.6, with a fixed seed every round
    sampling: SamplingConfig = SamplingConfig(samples=1, seed=1234)
    # LLM judges run on each round's eval through the teacher's endpoint (teacher.base_url/model)
    judges: list[Literal["correctness", "answer_hit", "rrp", "mqi"]] = Field(default_factory=list)


class AESConfig(Section):
    a: float = 1.0
    b: float = 3.0
    c: float = 5.0


class TrackingConfig(Section):
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "mbt-online"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = Field(default_factory=list)
    table_rows: int = Field(default=16, ge=0)


class Config(Section):
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    world: WorldConfig = WorldConfig()
    student: StudentConfig = StudentConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    engine: EngineConfig = EngineConfig()
    rollout: SamplingConfig = SamplingConfig()
    reward: RewardConfig = RewardConfig()
    teacher: TeacherConfig = TeacherConfig()
    train: TrainConfig = TrainConfig()
    loop: LoopConfig = LoopConfig()
    eval: EvalConfig = EvalConfig()
    aes: AESConfig = AESConfig()
    tracking: TrackingConfig = TrackingConfig()

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
            if s.dataset != "world" and not s.path:
                raise ValueError(
                    f"data.{split}.path is required when data.{split}.dataset={s.dataset}"
                )
        return self


class ConfigError(ValueError):
    """A config problem a user can fix; the message names the key and what is allowed."""


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            parent = _section_at(tuple(e["loc"][:-1]))
            if parent is not None:
                msg += f"; allowed keys here: {', '.join(sorted(parent.model_fields))}"
        elif "ctx" in e and "expected" in e["ctx"]:
            msg = f"{msg} (got {e.get('input')!r})"
        else:
            msg = f"{msg} (got {e.get('input')!r})" if "input" in e else msg
        lines.append(f"  {path}: {msg}")
    return "invalid config:\n" + "\n".join(lines)


def _section_at(loc: tuple) -> type[BaseModel] | None:
    """The schema class at a dotted location, to list its allowed keys in an error."""
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value); the value is read as YAML (numbers, lists...)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict (creating sections); the schema validates them later."""
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(path)}: {part} is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def validate(raw: dict) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML file (the quickstart default when None), apply overrides, validate."""
    raw = read_yaml(path or DEFAULT_CONFIG) if (path or DEFAULT_CONFIG.exists()) else {}
    return validate(apply_overrides(raw, list(overrides or [])))


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config: what a run records and what `--resume` reads back."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def to_flat_dict(cfg: Config) -> dict[str, Any]:
    """Dotted-key view for wandb config and sweep naming."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node

    walk("", cfg.model_dump(mode="json"))
    return out
