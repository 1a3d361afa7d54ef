"""The config reference, generated from the schema: docs/configuration.md, `config show --explain`
and the section list in `train --help`.

Written from the field descriptions, types, ranges and defaults of `mbt_online.config.schema`, so
the reference cannot drift from the code (a test compares the committed docs with `markdown()`).
"""

from __future__ import annotations

import inspect
import textwrap
import types
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mbt_online.config import Config, resolve_config, shipped_configs

DOC_HEADER = """\
# Configuration reference

<!-- Generated from mbt_online/config/schema.py by scripts/gen_config_docs.py: do not edit by
hand; a test fails when this file and the schema disagree. -->

A run is configured by one YAML file of the sections below, plus dotted overrides on the command
line (`mbt-online train loop.rounds=2 teacher.mode=mbt-s`). `--config` takes a file path or the
name of a config shipped with the package (`--config smollm2-mhqa-cpu`); without it a run uses
`quickstart`. `mbt-online config list` lists the shipped configs, `mbt-online config show
[--config NAME] [key=value ...]` prints the resolved config, `--defaults` the schema defaults
below and `--explain` adds each key's description as a comment. Unknown keys, wrong types and
out-of-range values fail before any work starts, naming the key and what is allowed.

**TRL's and PEFT's names.** The training sections take TRL's and PEFT's names for the knobs they
name their own way: `num_train_epochs` (`epochs`), `per_device_train_batch_size` (`batch_size`),
`gradient_accumulation_steps` (`grad_accum`), `lr_scheduler_type` (`train.sft.lr_scheduler`),
`lora_alpha` and `lora_dropout` (`train.lora.alpha`, `dropout`), and GRPO's
`vllm_importance_sampling_*` (`train.grpo.importance_sampling_*`). The resolved config keeps the
names below; giving both names of one knob is an error naming both. Any other field of TRL's
`SFTConfig`, `DPOConfig` or `GRPOConfig`, or of PEFT's `LoraConfig`, is set by its own name under
`train.sft.trl`, `train.dpo.trl`, `train.grpo.trl` or `train.lora.peft`:
`train.sft.trl.weight_decay=0.1`, `train.dpo.trl.loss_type=[ipo]` (with `train.dpo.sft_weight=0`),
`train.lora.peft.use_rslora=true`. These are checked at load too: a name the library's config
lacks is refused with its close matches, a field the project sets itself (`output_dir`,
`report_to`, the seeds, what a key below already sets) with the reason, a value of the wrong type
with the type.
"""


@dataclass(frozen=True)
class KeyDoc:
    """One row of the reference: a leaf key with its type, default and description."""

    key: str
    type: str
    default: str
    description: str


def sections(
    model: type[BaseModel] = Config, prefix: str = "", default: Any = None
) -> list[tuple[str, type[BaseModel], BaseModel, str]]:
    """(dotted name, class, default instance, field description) of every nested section, parents
    first in schema order. Defaults come from the enclosing instance: `eval.sampling` and
    `rollout` share a class but not defaults."""
    default = model() if default is None else default
    out = []
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):
            key = f"{prefix}{name}"
            value = getattr(default, name)
            out.append((key, field.annotation, value, field.description or ""))
            out += sections(field.annotation, f"{key}.", value)
    return out


def key_docs(model: type[BaseModel], prefix: str, default: BaseModel) -> list[KeyDoc]:
    """The leaf keys of one section (nested sections get their own table)."""
    return [
        KeyDoc(
            f"{prefix}.{name}",
            type_name(field),
            yaml_inline(getattr(default, name)),
            field.description or "",
        )
        for name, field in model.model_fields.items()
        if not _is_section(field.annotation)
    ]


def all_key_docs() -> list[KeyDoc]:
    """Every leaf key of the schema, in reference order."""
    return [doc for key, cls, value, _ in sections() for doc in key_docs(cls, key, value)]


def type_name(field: FieldInfo) -> str:
    """A reader's name for a field's type with its range, e.g. `int >= 1 or null`."""
    bounds = [_bound(m) for m in field.metadata if _bound(m)]
    base = _type_words(field.annotation)
    if not bounds:
        return base
    if base.endswith(" or null"):
        return f"{base.removesuffix(' or null')} {', '.join(bounds)} or null"
    return f"{base} {', '.join(bounds)}"


def _type_words(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        real = [a for a in args if a is not type(None)]
        words = " or ".join(_type_words(a) for a in real)
        return f"{words} or null" if len(real) < len(args) else words
    if origin is list:
        item = _type_words(args[0])
        return "list of sections" if item == "section" else f"list of ({item})"
    if origin is dict:
        return f"mapping {_type_words(args[0])} to {_type_words(args[1])}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "section"
    return getattr(tp, "__name__", str(tp))


def _bound(meta: Any) -> str:
    for cls, op, attr in (
        (at.Ge, ">=", "ge"),
        (at.Gt, ">", "gt"),
        (at.Le, "<=", "le"),
        (at.Lt, "<", "lt"),
    ):
        if isinstance(meta, cls):
            return f"{op} {getattr(meta, attr)}"
    return ""


def yaml_inline(value: Any) -> str:
    """A value as it is written in a YAML config, on one line."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------------------
# renderings


def markdown() -> str:
    """docs/configuration.md: an overview of the sections, then a table per section."""
    out = [DOC_HEADER, "## Shipped configs\n", "| name | what it runs |", "|---|---|"]
    out += [f"| `{name}` | {_cell(config_summary(name))} |" for name in shipped_configs()]
    out += ["", "## Sections\n", "| section | what it sets |", "|---|---|"]
    for name, field in Config.model_fields.items():
        out.append(f"| [`{name}`](#{name}) | {_cell(field.description or '')} |")
    found = sections()
    uses = Counter(cls for _, cls, _, _ in found)
    for key, cls, value, description in found:
        doc = inspect.cleandoc(cls.__doc__ or "")
        doc = "\n\n".join(" ".join(par.split()) for par in doc.split("\n\n"))
        # a class used once says it best; a shared one (DataSplit...) needs the field's role too
        out += ["", f"## {key}", "", doc if uses[cls] == 1 and doc else description]
        if uses[cls] > 1 and doc:
            out += ["", doc]
        rows = key_docs(cls, key, value)
        if rows:
            out += ["", "| key | type | default | description |", "|---|---|---|---|"]
            out += [
                f"| `{r.key}` | {_cell(r.type)} | `{_cell(r.default)}` | {_cell(r.description)} |"
                for r in rows
            ]
    return "\n".join(out) + "\n"


def explained_yaml(cfg: Config) -> str:
    """A resolved config as YAML with each key's description as a comment above it."""
    return "\n".join(_explain(Config, cfg, 0)) + "\n"


def _explain(model: type[BaseModel], value: BaseModel, depth: int) -> list[str]:
    pad, lines = "  " * depth, []
    for name, field in model.model_fields.items():
        wrap = textwrap.wrap(field.description or "", 98 - len(pad))
        lines += [f"{pad}# {line}" for line in wrap]
        child = getattr(value, name)
        if _is_section(field.annotation):
            lines.append(f"{pad}{name}:")
            lines += _explain(field.annotation, child, depth + 1)
        else:
            lines.append(f"{pad}{name}: {yaml_inline(_plain(child))}")
    return lines


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def config_summary(name: str) -> str:
    """A shipped config's first sentence, from the comment block that opens its file."""
    lines = []
    for line in resolve_config(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    return text.split(". ")[0].rstrip(".") + "." if text else ""


def sections_help() -> str:
    """The top-level sections and what each sets, in one line: the config part of `--help`."""
    return (
        "; ".join(
            f"{name} ({(field.description or '').rstrip('.')})"
            for name, field in Config.model_fields.items()
        )
        + "."
    )
