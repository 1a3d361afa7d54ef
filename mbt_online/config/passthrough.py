"""TRL's and PEFT's names in the training sections: aliases for the knobs the schema models under
its own name, and a checked passthrough for every other field of TRL's and PEFT's configs.

A TRL user writes `num_train_epochs`, `per_device_train_batch_size`, `lora_alpha`; the schema says
`epochs`, `batch_size`, `alpha`. Each section lists TRL's (or PEFT's) name for its knobs
(`ALIASES`): either name is accepted and the config keeps the schema's; both at once is an error
naming both. A field the schema does not model (`weight_decay`, `label_smoothing`, a DPO
`loss_type`, PEFT's `use_rslora`...) goes in the section's passthrough, `train.sft.trl`,
`train.dpo.trl`, `train.grpo.trl` or `train.lora.peft`, by TRL's or PEFT's own name, and reaches
the library's config as given (`training/args.py`). Checked at load, before any work: a name the
library's config does not have is refused with the close matches; a field the project sets itself
is refused with the reason (its own key, or why the project decides it); a value of the wrong type
is refused with the type. The library is imported only when a passthrough is not empty.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import types
import typing
from functools import cache
from typing import Any, ClassVar

from pydantic import TypeAdapter, ValidationError, model_validator

from mbt_online.config.section import Section


class KeyProblem(ValueError):
    """A problem with one key inside a section (an alias or a passthrough field); the loader
    prints it as `<section>.<key>: <problem>` (`config._format_errors`), `{section}` in the
    problem filled in with the section's dotted name."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


# TRL's fields for what every TRL stage gets from the project, and why
_COMMON: dict[str, str] = {
    "output_dir": "the stage's folder under round-<r>/train is the project's",
    "report_to": "TRL reports nowhere: the run's tracking logs TRL's steps (tracking.*)",
    "logging_steps": "every step is logged: the train/* metrics and curves read each step",
    "seed": "derived from run.seed and the round (seeds.py)",
    "data_seed": "derived from run.seed and the round (seeds.py)",
    "bf16": "set it as train.bf16",
    "fp16": "training runs in float32 or under bf16 autocast (train.bf16)",
    "use_cpu": "follows the machine (CUDA or not)",
    "gradient_checkpointing": "set it as train.gradient_checkpointing",
    "gradient_checkpointing_kwargs": "non-reentrant with train.gradient_checkpointing (LoRA, FSDP)",
    "save_strategy": "checkpoints come with train.save_steps",
    "save_steps": "set it as train.save_steps",
    "save_total_limit": "two checkpoints are kept: the newest may be one a kill interrupted",
    "resume_from_checkpoint": "a killed stage resumes from its own checkpoints (train.save_steps)",
    "optim": "set it as train.optim",
    "disable_tqdm": "follows whether stderr is a terminal",
    "dataloader_num_workers": "the rows are in memory; worker processes would fork the trainer",
    "deepspeed": "set by the launch's accelerate config (runtime.accelerate_config)",
    "fsdp": "set by the launch's accelerate config (runtime.accelerate_config)",
    "fsdp_config": "set by the launch's accelerate config (runtime.accelerate_config)",
    "push_to_hub": "a round's model is a folder in the run directory",
    "model_init_kwargs": "the project loads the model itself (float32 weights, "
    "train.attn_implementation)",
}
# TRL's name -> the schema's key for what SFT and DPO share (`StepConfig`)
_STEP: dict[str, str] = {
    "learning_rate": "learning_rate",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "max_grad_norm": "max_grad_norm",
    "max_length": "max_length",
}
_GRPO_SAMPLING = "the samples come from the round's engine"
# library config -> {field: why the passthrough may not set it}
PROJECT_SET: dict[str, dict[str, str]] = {
    "trl.SFTConfig": {
        **_COMMON,
        **{k: f"set it as {{section}}.{v}" for k, v in _STEP.items()},
        "warmup_steps": "set it as {section}.warmup_ratio",
        "lr_scheduler_type": "set it as {section}.lr_scheduler",
        "completion_only_loss": "the loss is on the completion only: prompts are never trained",
    },
    "trl.DPOConfig": {
        **_COMMON,
        **{k: f"set it as {{section}}.{v}" for k, v in _STEP.items()},
        "beta": "set it as {section}.beta",
        "precompute_ref_log_probs": "set it as {section}.precompute_ref_log_probs",
    },
    "trl.GRPOConfig": {
        **_COMMON,
        **{
            k: f"set it as {{section}}.{v}"
            for k, v in {
                "learning_rate": "learning_rate",
                "num_train_epochs": "num_train_epochs",
                "per_device_train_batch_size": "per_device_train_batch_size",
                "gradient_accumulation_steps": "gradient_accumulation_steps",
                "max_grad_norm": "max_grad_norm",
                "loss_type": "loss_type",
                "beta": "beta",
                "epsilon": "epsilon",
                "epsilon_high": "epsilon_high",
                "scale_rewards": "scale_rewards",
                "num_iterations": "num_iterations",
                "mask_truncated_completions": "mask_truncated_completions",
                "vllm_importance_sampling_correction": "importance_sampling_correction",
                "vllm_importance_sampling_mode": "importance_sampling_mode",
                "vllm_importance_sampling_clip_max": "importance_sampling_clip_max",
            }.items()
        },
        "num_generations": f"{_GRPO_SAMPLING}: rollout.samples per question",
        "max_completion_length": f"{_GRPO_SAMPLING}: rollout.max_tokens",
        "temperature": f"{_GRPO_SAMPLING}: rollout.temperature (the log-probs' temperature)",
        "top_p": f"{_GRPO_SAMPLING}: rollout.top_p",
        "top_k": f"{_GRPO_SAMPLING}: rollout.top_k",
        "min_p": _GRPO_SAMPLING,
        "repetition_penalty": _GRPO_SAMPLING,
        "generation_kwargs": _GRPO_SAMPLING,
        "generation_batch_size": f"{_GRPO_SAMPLING}, dealt in whole groups per optimizer step",
        "steps_per_generation": f"{_GRPO_SAMPLING}, dealt in whole groups per optimizer step",
        "use_vllm": f"{_GRPO_SAMPLING} (engine.*), not from TRL's vLLM",
        "log_completions": "the run logs its completions itself (round-<r>/grpo_rollout)",
        "shuffle_dataset": "the round's samples are shuffled",
        "reward_weights": "one reward function per RL component, weighted by reward.weights",
    },
    "peft.LoraConfig": {
        "r": "set it as {section}.r",
        "lora_alpha": "set it as {section}.alpha",
        "lora_dropout": "set it as {section}.dropout",
        "target_modules": "set it as {section}.target_modules",
        "task_type": "the student is a causal LM (CAUSAL_LM)",
        "peft_type": "the adapter is a LoRA",
        "base_model_name_or_path": "the base is the round's model folder",
        "inference_mode": "the adapter is trained",
    },
}
# GRPO's engine settings live in engine.*: any of TRL's vllm_* fields not listed above
_PREFIX_SET = {"trl.GRPOConfig": ("vllm_", f"{_GRPO_SAMPLING} (engine.*), not from TRL's vLLM")}


@cache
def library_fields(target: str) -> dict[str, Any]:
    """Field name -> type of a library's config dataclass (`trl.SFTConfig`, `peft.LoraConfig`),
    imported on first use."""
    module, name = target.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def problems(target: str, given: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """(key, problem) for each field of `given` the library config `target` cannot take from
    the passthrough named `where` (`trl`, `peft`)."""
    if not given:
        return []
    fields = library_fields(target)
    project = PROJECT_SET.get(target, {})
    prefix, prefix_reason = _PREFIX_SET.get(target, ("\0", ""))
    out = []
    for name, value in given.items():
        key = f"{where}.{name}"
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=3, cutoff=0.6)
            hint = f"close matches: {', '.join(close)}" if close else "no close match"
            out.append((key, f"not a field of {target}; {hint}"))
        elif name in project or name.startswith(prefix):
            out.append((key, f"the project sets it: {project.get(name, prefix_reason)}"))
        elif (wrong := _type_problem(fields[name], value)) is not None:
            out.append((key, f"{target}.{name} takes {_shown(fields[name])}: {wrong}"))
    return out


_SCALARS = (int, float, bool, str, type(None))


def _scalar(hint: Any) -> bool:
    """A number, flag, string or choice (or a union of them): checked here. Containers are left
    to the library, which coerces some (TRL's DPO turns a `loss_type` string into a list)."""
    if hint in _SCALARS:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return all(_scalar(arg) for arg in typing.get_args(hint))
    return False


def _type_problem(hint: Any, value: Any) -> str | None:
    if not _scalar(hint):
        return None
    try:
        adapter = TypeAdapter(hint)
    except Exception:  # a type pydantic cannot build a validator for: the library checks it
        return None
    try:
        adapter.validate_python(value)
    except ValidationError as e:
        return f"{e.errors()[0]['msg']} (got {value!r})"
    return None


def _shown(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def rename(data: Any, aliases: dict[str, str]) -> Any:
    """A section's raw mapping with TRL's / PEFT's names turned into the schema's; both names of
    one knob is an error naming both."""
    if not isinstance(data, dict) or not aliases.keys() & data.keys():
        return data
    out = dict(data)
    for theirs, ours in aliases.items():
        if theirs not in out:
            continue
        if ours in out:
            raise KeyProblem(
                theirs,
                f"is {{section}}.{ours} by its library's name, and {ours} is given too "
                f"({ours}={out[ours]!r}, {theirs}={out[theirs]!r}): give one",
            )
        out[ours] = out.pop(theirs)
    return out


def _section(model: Any, key: str) -> Any:
    """The section class of `model`'s field `key` (None when it is no section)."""
    field = model.model_fields.get(key) if isinstance(model, type) else None
    annotation = field.annotation if field is not None else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def canonical_path(model: Any, path: list[str]) -> list[str]:
    """A dotted key with TRL's / PEFT's names turned into the schema's (`train.sft.
    num_train_epochs` -> `train.sft.epochs`), so an override by either name replaces what a
    config file set by the other."""
    out, node = [], model
    for part in path:
        if node is not None and issubclass(node, LibraryNamed):
            part = node.ALIASES.get(part, part)
        out.append(part)
        node = _section(node, part)
    return out


def canonical_names(model: Any, raw: Any) -> Any:
    """One config file's mapping with TRL's / PEFT's names turned into the schema's, so a file
    layered over another overrides by either name; a section giving both names keeps them (the
    schema then refuses it naming both)."""
    if not isinstance(raw, dict) or model is None:
        return raw
    out = {key: canonical_names(_section(model, key), value) for key, value in raw.items()}
    if issubclass(model, LibraryNamed):
        clashes = [t for t, o in model.ALIASES.items() if t in out and o in out]
        if not clashes:
            out = rename(out, model.ALIASES)
    return out


class LibraryNamed(Section):
    """A section that takes its library's names for its knobs (`ALIASES`: theirs -> ours) and a
    passthrough field (`PASSTHROUGH`: the field's name and the library config it feeds)."""

    ALIASES: ClassVar[dict[str, str]] = {}
    PASSTHROUGH: ClassVar[tuple[str, str] | None] = None

    @model_validator(mode="before")
    @classmethod
    def _library_names(cls, data: Any) -> Any:
        return rename(data, cls.ALIASES)

    def conflicts(self) -> list[tuple[str, str]]:
        """(key, problem) for passthrough fields that contradict the section's own keys."""
        return []

    @model_validator(mode="after")
    def _passthrough(self) -> LibraryNamed:
        if self.PASSTHROUGH is None:
            return self
        where, target = self.PASSTHROUGH
        found = problems(target, getattr(self, where), where) or self.conflicts()
        if found:
            (key, problem), more = found[0], [k for k, _ in found[1:]]
            raise KeyProblem(key, problem + (f" (also refused: {', '.join(more)})" if more else ""))
        return self
