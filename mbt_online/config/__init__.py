"""Loading a run's configuration: shipped configs by name, YAML files and dotted overrides.

The schema itself (every knob with its description) is `mbt_online.config.schema`; its classes are
re-exported here, so `from mbt_online.config import Config` is the one import a caller needs.
A config is always a file: `--config` names a path or a config shipped inside the package, and
nothing falls back silently to the schema defaults (a different experiment, with no warning).
Unknown keys, wrong types and out-of-range values fail before any work starts, naming the full
dotted key path and what is allowed, so a typo in a sweep never silently trains with a default.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mbt_online.config.data import BootstrapConfig, DataConfig, DataSplit, WorldConfig
from mbt_online.config.learning import (
    DPOConfig,
    LoraConfig,
    RewardConfig,
    RewardWeights,
    SFTConfig,
    TeacherConfig,
    TrainConfig,
)
from mbt_online.config.passthrough import KeyProblem, canonical_names, canonical_path
from mbt_online.config.schema import (
    AESConfig,
    Config,
    EngineConfig,
    EvalConfig,
    LoopConfig,
    RunConfig,
    RuntimeConfig,
    SamplingConfig,
    StudentConfig,
    TrackingConfig,
)
from mbt_online.config.section import Section
from mbt_online.llm.endpoint import redact_url
from mbt_online.rundir.atomic import write_text_atomic

__all__ = [
    "AESConfig",
    "BootstrapConfig",
    "CONFIG_DIR",
    "Config",
    "ConfigError",
    "DEFAULT_CONFIG",
    "DPOConfig",
    "DataConfig",
    "DataSplit",
    "EngineConfig",
    "EvalConfig",
    "LoopConfig",
    "LoraConfig",
    "RewardConfig",
    "RewardWeights",
    "RunConfig",
    "RuntimeConfig",
    "SFTConfig",
    "SamplingConfig",
    "Section",
    "StudentConfig",
    "TeacherConfig",
    "TrackingConfig",
    "TrainConfig",
    "WorldConfig",
    "apply_overrides",
    "config_yaml",
    "dump_config",
    "load_config",
    "merge_configs",
    "parse_override",
    "read_yaml",
    "resolve_config",
    "shipped_configs",
    "to_flat_dict",
    "validate",
]

# The shipped configs are package data, found inside the installed package and never through the
# source tree, so a wheel install runs the same quickstart as a clone. pip installs a package as
# plain files, so this is a real folder: a sweep's `base:` is a path relative to its sweep file.
CONFIG_DIR = Path(str(resources.files("mbt_online") / "configs"))
DEFAULT_CONFIG = CONFIG_DIR / "quickstart.yaml"


class ConfigError(ValueError):
    """A config problem a user can fix; the message names the key and what is allowed."""


# ---------------------------------------------------------------------------------------------
# which file


def shipped_configs() -> list[str]:
    """The names of the configs inside the package, e.g. `quickstart`, `sweeps/paper-baselines`."""
    if not CONFIG_DIR.is_dir():
        return []
    return sorted(
        p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in CONFIG_DIR.rglob("*.yaml")
    )


def resolve_config(ref: str | Path | None = None) -> Path:
    """The file a `--config` value means; the one place a config name becomes a path.

    None is the packaged quickstart; an existing file is taken as given; anything else must name a
    shipped config (`smollm2-mhqa-cpu`, `.yaml` optional; `sweeps/paper-baselines`). A missing
    file is an error listing the shipped names, never a quiet fall back to the schema defaults.
    """
    if ref is None:
        if not DEFAULT_CONFIG.is_file():
            raise ConfigError(
                f"the packaged default config is missing: {DEFAULT_CONFIG} (a broken install; "
                "reinstall mbt-online or pass --config FILE)"
            )
        return DEFAULT_CONFIG
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    names = shipped_configs()
    name = str(ref).removesuffix(".yaml")
    if name in names:
        return CONFIG_DIR / f"{name}.yaml"
    raise ConfigError(
        f"config file not found: {ref} (and no shipped config has that name; shipped: "
        f"{', '.join(names) or 'none'})"
    )


def read_yaml(path: str | Path) -> dict:
    """A YAML file's top-level mapping; a missing or malformed file is a `ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    check_expanded_size(data, str(path))
    return data


MAX_YAML_NODES = 100_000  # a config expands to a few hundred values; a sweep to a few thousand


def check_expanded_size(data: Any, where: str, limit: int = MAX_YAML_NODES) -> None:
    """Refuse YAML whose aliases expand past `limit` values (an alias bomb: a few hundred bytes
    that a later walk over the config would expand to billions). PyYAML shares an aliased node
    instead of copying it, so the expanded size is counted once per shared node, in linear time,
    before anything walks it."""
    sizes: dict[int, int] = {}

    def size(node: Any, depth: int) -> int:
        if depth > 100:
            raise ConfigError(f"{where}: nested more than 100 levels deep")
        if id(node) in sizes:
            return sizes[id(node)]
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        total = 1 + sum(size(child, depth + 1) for child in children)
        if total > limit:
            raise ConfigError(
                f"{where}: its aliases expand to more than {limit:,} values: refused before any "
                "work (an alias bomb?)"
            )
        sizes[id(node)] = total
        return total

    size(data, 0)


# ---------------------------------------------------------------------------------------------
# overrides and validation


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
    """Set dotted keys in a nested dict (creating sections); the schema validates them later.
    TRL's and PEFT's names for a knob are the schema's (`train.sft.num_train_epochs=2` replaces
    the file's `epochs`); two overrides naming one knob by both names are refused."""
    raw = canonical_names(Config, raw)
    typed: dict[tuple[str, ...], str] = {}
    for item in overrides:
        path, value = parse_override(item)
        key = ".".join(path)
        path = canonical_path(Config, path)
        other = typed.setdefault(tuple(path), key)
        if other != key:
            raise ConfigError(
                f"{other} and {key} both set {'.'.join(path)} (one is its name in TRL or PEFT): "
                "give one"
            )
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


def validate(raw: dict) -> Config:
    """The schema's verdict on a nested dict, its errors as one readable `ConfigError`."""
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if isinstance(key := e.get("ctx", {}).get("error"), KeyProblem):  # a key in the section
            lines.append(f"  {path}.{key.key}: {key.problem.replace('{section}', path)}")
            continue
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            parent = _section_at(tuple(e["loc"][:-1]))
            if parent is not None:
                msg += f"; allowed keys here: {', '.join(sorted(parent.model_fields))}"
        elif "ctx" in e and "expected" in e["ctx"]:
            msg = f"{msg} (got {redact_url(repr(e.get('input')))})"
        else:
            msg = f"{msg} (got {redact_url(repr(e.get('input')))})" if "input" in e else msg
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


# ---------------------------------------------------------------------------------------------
# load and dump


def load_config(
    path: str | Path | list[str | Path] | None = None, overrides: list[str] | None = None
) -> Config:
    """Read a config (a file, a shipped name, or the packaged quickstart when None), apply
    dotted overrides, validate. A list of files is layered: later files override earlier ones key
    by key (a preset, then a hardware overlay), then the overrides."""
    paths = list(path) if isinstance(path, list | tuple) else [path]
    raw: dict = {}
    for p in paths or [None]:
        raw = merge_configs(raw, canonical_names(Config, read_yaml(resolve_config(p))))
    return validate(apply_overrides(raw, list(overrides or [])))


def merge_configs(base: dict, top: dict) -> dict:
    """`top` over `base`: sections merge recursively, any other value (lists too) is replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_configs(out[key], value)
        else:
            out[key] = value
    return out


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config: what a run records and what `--resume` reads back."""
    write_text_atomic(path, config_yaml(cfg))


def config_yaml(cfg: Config) -> str:
    """The resolved config as YAML, sections in schema order."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


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
