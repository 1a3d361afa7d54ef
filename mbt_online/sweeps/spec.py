"""Sweeps: one base config, a grid and explicit members of dotted overrides, many named runs.

A sweep directory holds one run directory per member (named from what the member varies), so a
report over the directory compares them, and re-running the same sweep skips finished members and
resumes an interrupted one instead of starting over. The same expansion feeds a SLURM job array
(`sweeps.slurm`), so a cluster runs exactly the runs a laptop would.

Sweep YAML (paths relative to the YAML file)::

    name: paper-baselines            # default: the file's stem; also the wandb group
    base: ../quickstart.yaml         # the config every member starts from
    group: null                      # wandb group (default: name)
    tags: [paper]                    # wandb tags on every member
    seeds: [0, 1, 2]                 # optional: every member once per seed, <member>-s<seed>,
                                     #   with run.seed and rollout.seed = the seed (`with_seeds`)
    seed_keys: [run.seed, rollout.seed, bootstrap.seed]   # optional: what a seed sets (default
                                     #   run.seed, rollout.seed); bootstrap.seed: a new student
    endpoint: {metric: eval/accuracy, ...}  # optional: the pre-registered comparison, recorded
                                     #   as written (scripts/compare_table.py reads it)
    overrides: [loop.rounds=2]       # shared by every member (list of key=value, or a mapping)
    grid:                            # cartesian product, crossed with every member
      train.dpo.enabled: [false, true]
      student.model: {0.6b: Qwen/Qwen3-0.6B, 1.7b: Qwen/Qwen3-1.7B}   # mapping = explicit labels
    members:                         # optional; without it the grid alone makes the members
      - name: base
        overrides: [loop.rounds=0]
        grid: {}                     # a member's own grid replaces the shared one ({} = none)
        tags: [baseline]
        slurm: {nodes: 2, gpus_per_node: 4}   # this member's resources (sweeps.slurm_spec)
    slurm:                           # only for --emit slurm / --submit
      partition: gpu                 # resources: nodes, gpus_per_node, cpus_per_task, mem, time,
      gpus_per_node: 1               #   partition, account, sbatch (extra #SBATCH options)
      time: "04:00:00"
      labels: {1.7b: {mem: 64G}}     # resources per grid label
      max_parallel: 4
      signal_seconds: 300            # SLURM's warning before the time limit: stop and requeue
      env: {HF_HOME: /scratch/hf, HF_HUB_OFFLINE: 1}
      setup: ["source .venv/bin/activate"]

Precedence, lowest first: base file, shared `overrides`, command-line extras, the member's own
overrides, its grid values, then what the sweep itself sets (run.name, run.runs_dir, tracking.group,
tracking.tags). Extras thus change every member's shared settings (`loop.rounds=1` for a smoke run)
without turning the untrained baselines (which pin `loop.rounds=0`) into trained ones; an extra on a
key the grid varies is an error, since it would collapse the grid.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mbt_online.config import (
    Config,
    ConfigError,
    apply_overrides,
    parse_override,
    read_yaml,
    validate,
)
from mbt_online.sweeps.slurm_spec import check_block, merge_resources

log = logging.getLogger("mbt_online")

MANIFEST = "sweep.json"
# more members than this is a typo in a grid (one axis too many), not a plan: refused at once
MAX_MEMBERS = 1000
# Keys the sweep owns: each member's identity and tracking come from the sweep, not from overrides.
RESERVED = ("run.name", "run.runs_dir", "tracking.group", "tracking.tags")
# Key segments too generic to name a value ("train.dpo.enabled" is about DPO, not "enabled").
GENERIC = {"enabled", "enable", "value", "mode", "name", "path"}
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
SWEEP_KEYS = {
    "name",
    "base",
    "group",
    "tags",
    "overrides",
    "grid",
    "members",
    "slurm",
    "seeds",
    "seed_keys",
    "endpoint",
}
MEMBER_KEYS = {"name", "overrides", "grid", "tags", "slurm"}
# per-launch settings (a rendezvous port per SLURM task): not part of what a run is
LAUNCH_KEYS = ("run.runs_dir", "runtime.main_process_port", "runtime.main_process_ip")


@dataclass(frozen=True)
class Member:
    """One run of a sweep: its directory name and every override that makes it (in order), and
    the SLURM resources it asks for (`sweeps.slurm_spec`; copy them to members derived from it)."""

    name: str
    overrides: list[str]
    slurm: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class Sweep:
    """A parsed sweep file (see the module docstring for the YAML shape)."""

    path: Path
    name: str
    base: Path
    group: str
    tags: list[str]
    overrides: list[str]
    grid: dict[str, list[tuple[str | None, Any]]]
    members: list[dict[str, Any]]
    slurm: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] | None = None  # every member repeated per seed (`with_seeds`)
    seed_keys: tuple[str, ...] = ("run.seed", "rollout.seed")  # what each replicate's seed sets
    endpoint: dict[str, Any] = field(default_factory=dict)  # the pre-registered comparison


# ---------------------------------------------------------------------------------------------
# parsing


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; every shape error names the offending key."""
    path = Path(path).resolve()
    raw = read_yaml(path)
    unknown = set(raw) - SWEEP_KEYS
    if unknown:
        raise ConfigError(
            f"{path}: unknown sweep keys {sorted(unknown)}; allowed: {sorted(SWEEP_KEYS)}"
        )
    if "base" not in raw:
        raise ConfigError(f"{path}: `base:` (the config file every member starts from) is required")
    base = (path.parent / str(raw["base"])).resolve()
    if not base.is_file():
        raise ConfigError(f"{path}: base config not found: {base}")
    name = str(raw.get("name") or path.stem)
    _check_name(name, f"{path}: name")
    members = raw.get("members") or [{}]
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise ConfigError(f"{path}: `members:` must be a list of mappings")
    for i, m in enumerate(members):
        bad = set(m) - MEMBER_KEYS
        if bad:
            raise ConfigError(
                f"{path}: members[{i}]: unknown keys {sorted(bad)}; allowed: {sorted(MEMBER_KEYS)}"
            )
    slurm = check_block(raw.get("slurm"), f"{path}: slurm", sweep_level=True)
    for i, m in enumerate(members):
        check_block(m.get("slurm"), f"{path}: members[{i}].slurm", sweep_level=False)
    return Sweep(
        path=path,
        name=name,
        base=base,
        group=str(raw.get("group") or name),
        tags=[str(t) for t in as_list(raw.get("tags"), f"{path}: tags")],
        overrides=_override_list(raw.get("overrides"), f"{path}: overrides"),
        grid=_parse_grid(raw.get("grid"), f"{path}: grid"),
        members=members,
        slurm=slurm,
        seeds=_parse_seeds(raw.get("seeds"), f"{path}: seeds"),
        seed_keys=_parse_seed_keys(raw.get("seed_keys"), f"{path}: seed_keys"),
        endpoint=_parse_endpoint(raw.get("endpoint"), f"{path}: endpoint"),
    )


def as_list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    return value


def _override_list(value: Any, where: str) -> list[str]:
    """Overrides as `key=value` strings, whether written as a list of strings or a mapping."""
    if isinstance(value, dict):
        return [override_item(str(k), v) for k, v in value.items()]
    items = [str(v) for v in as_list(value, where)]
    for item in items:
        parse_override(item)  # fails early on a malformed item
    return items


def override_item(key: str, value: Any) -> str:
    """`key=value` with the value as JSON, the form `parse_override` reads back."""
    # JSON is valid YAML and quotes strings, so "on"/"none"/"1e-4" keep the type they were given.
    return f"{key}={json.dumps(value)}"


def _parse_grid(value: Any, where: str) -> dict[str, list[tuple[str | None, Any]]]:
    """Grid axes as (label or None, value) lists: a mapping axis gives explicit labels."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of key: [values]")
    grid: dict[str, list[tuple[str | None, Any]]] = {}
    for key, axis in value.items():
        if isinstance(axis, dict):
            for label in axis:
                _check_name(str(label), f"{where}.{key} label")
            grid[str(key)] = [(str(label), v) for label, v in axis.items()]
        elif isinstance(axis, list) and axis:
            grid[str(key)] = [(None, v) for v in axis]
        else:
            raise ConfigError(f"{where}.{key}: expected a non-empty list or a mapping label: value")
    return grid


def _check_name(name: str, where: str) -> None:
    if not SAFE_NAME.fullmatch(name):  # the whole name: `a/../../x` starts like a safe one
        raise ConfigError(
            f"{where}: {name!r} is not a safe directory name (letters, digits, . _ + -)"
        )


# ---------------------------------------------------------------------------------------------
# naming


def short_key(key: str) -> str:
    """The most telling segment of a dotted key: train.dpo.enabled -> dpo, student.use_x -> x."""
    parts = key.split(".")
    seg = next((p for p in reversed(parts) if p not in GENERIC), parts[-1])
    seg = seg.removeprefix("use_")
    return seg.replace("_", "-")


def short_value(key: str, value: Any) -> str:
    """A stable, filesystem-safe label for one varied value (bools read as `dpo` / `no-dpo`)."""
    label = short_key(key)
    if isinstance(value, bool):
        text = label if value else f"no-{label}"
    elif value is None:
        text = f"no-{label}"
    elif isinstance(value, str):
        text = value.rstrip("/").rsplit("/", 1)[-1]  # a model path reads as its folder name
    elif isinstance(value, int | float):
        text = f"{label}{value}"
    elif isinstance(value, list):
        text = "+".join(short_value(key, v) for v in value) or f"no-{label}"
    else:
        text = f"{label}-{json.dumps(value, sort_keys=True)}"
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.") or label


# ---------------------------------------------------------------------------------------------
# expansion


def expand(
    sweep_yaml: str | Path | Sweep, extra_overrides: list[str] | tuple[str, ...] = ()
) -> list[Member]:
    """Every member of the sweep, with its full override list, in file order then grid order."""
    sweep = sweep_yaml if isinstance(sweep_yaml, Sweep) else load_sweep(sweep_yaml)
    extras = list(extra_overrides)
    _check_reserved(sweep.overrides + extras, "shared overrides / command line")
    out: list[Member] = []
    parts: set[str] = set()  # every grid label (or value name), for `slurm.labels`
    replicas, total = max(1, len(sweep.seeds or [])), 0
    for i, spec in enumerate(sweep.members):
        where = f"{sweep.path}: members[{i}]"
        own = _override_list(spec.get("overrides"), f"{where}.overrides")
        _check_reserved(own, where)
        grid = sweep.grid if "grid" not in spec else _parse_grid(spec["grid"], f"{where}.grid")
        _check_extras_vs_grid(extras, grid)
        _note_pinned(extras, own, spec.get("name"))
        if spec.get("name") is not None:
            _check_name(str(spec["name"]), f"{where}.name")
        parts |= {lab or short_value(k, v) for k, axis in grid.items() for lab, v in axis}
        total += math.prod(len(axis) for axis in grid.values()) * replicas
        if total > MAX_MEMBERS:  # counted before one member is made: a grid of 10^9 is refused
            raise ConfigError(
                f"{where}.grid: the sweep would have {total} or more members (the product of the "
                f"grid's axes, times its seeds); at most {MAX_MEMBERS}"
            )
        for combo in itertools.product(
            *[[(k, lab, v) for lab, v in axis] for k, axis in grid.items()]
        ):
            out.append(_member(sweep, spec, own, extras, combo))
    out = with_seeds(out, sweep.seeds, sweep.path, sweep.seed_keys)
    _check_unique(out, sweep.path)
    unused = sorted({str(k) for k in sweep.slurm.get("labels") or {}} - parts)
    if unused:
        raise ConfigError(f"{sweep.path}: slurm.labels: no grid value is labelled {unused}")
    return out


def _member(sweep: Sweep, spec: dict, own: list[str], extras: list[str], combo: tuple) -> Member:
    grid_overrides = [override_item(k, v) for k, _, v in combo]
    grid_parts = [lab or short_value(k, v) for k, lab, v in combo]
    if spec.get("name") is not None:
        head = [str(spec["name"])]
    elif own:
        head = [short_value(k, v) for k, v in (_key_value(o) for o in own)]
    else:
        head = []
    parts = head + grid_parts
    name = "_".join(parts) or sweep.name
    tags = _dedupe(sweep.tags + [sweep.name] + [str(t) for t in spec.get("tags") or []] + parts)
    sweep_set = [
        override_item("run.name", name),
        override_item("tracking.group", sweep.group),
        override_item("tracking.tags", tags),
    ]
    labels = {str(k): v for k, v in (sweep.slurm.get("labels") or {}).items()}
    by_label = [labels.get(part) for part in grid_parts]
    resources = merge_resources(sweep.slurm, *by_label, spec.get("slurm"))
    overrides = _last_per_key(sweep.overrides + extras + own + grid_overrides + sweep_set)
    return Member(name, overrides, resources)


# the keys a sweep's `seeds:` sets in every member
SEED_KEYS = ("run.seed", "rollout.seed")


def _parse_seeds(value: Any, where: str) -> list[int] | None:
    if value is None:
        return None
    items = as_list(value, where)
    if not items or not all(isinstance(s, int) and not isinstance(s, bool) for s in items):
        raise ConfigError(f"{where}: expected a list of integers, e.g. [0, 1, 2]")
    if len(set(items)) != len(items):
        raise ConfigError(f"{where}: seeds repeat in {items}")
    return items


def _parse_seed_keys(value: Any, where: str) -> tuple[str, ...]:
    """The dotted keys each replicate's seed sets; they must be config keys (checked when the
    members' configs load) and at least the run's own seed."""
    if value is None:
        return SEED_KEYS
    keys = [str(k) for k in as_list(value, where)]
    if "run.seed" not in keys or len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: expected distinct keys including run.seed, got {keys}")
    return tuple(keys)


def _parse_endpoint(value: Any, where: str) -> dict[str, Any]:
    """The comparison registered before the runs: kept as written; `metric` is required."""
    if value is None:
        return {}
    if not isinstance(value, dict) or "metric" not in value:
        raise ConfigError(f"{where}: expected a mapping with at least `metric:`")
    return dict(value)


def with_seeds(
    members: list[Member],
    seeds: list[int] | None,
    path: Path,
    seed_keys: tuple[str, ...] = SEED_KEYS,
) -> list[Member]:
    """Each member once per seed, named `<member>-s<seed>` (`report.compare.group_of` reads the
    group back), with `run.seed` and `rollout.seed` set to the seed: a replicate redraws the
    engine, training, teacher and rollout noise (and, for a shuffled benchmark file, the
    questions), while `eval.sampling.seed` stays the config's, so every replicate and member
    is evaluated under the same protocol."""
    if seeds is None:
        return members
    out = []
    for m in members:
        pinned = [k for k in (_key_value(o)[0] for o in m.overrides) if k in seed_keys]
        if pinned:
            raise ConfigError(
                f"{path}: member {m.name!r} sets {pinned[0]}, which `seeds:` sets per replicate; "
                "drop it from the overrides (or drop `seeds:`)"
            )
        for seed in seeds:
            name = f"{m.name}-s{seed}"
            extra = [override_item(k, seed) for k in seed_keys]
            extra.append(override_item("run.name", name))
            out.append(Member(name, _last_per_key(m.overrides + extra), m.slurm))
    return out


def _last_per_key(overrides: list[str]) -> list[str]:
    """Drop overrides a later one of the same key replaces: same config, readable manifests."""
    last = {_key_value(o)[0]: i for i, o in enumerate(overrides)}
    return [o for i, o in enumerate(overrides) if last[_key_value(o)[0]] == i]


def _key_value(item: str) -> tuple[str, Any]:
    path, value = parse_override(item)
    return ".".join(path), value


def _check_reserved(overrides: list[str], where: str) -> None:
    for item in overrides:
        key, _ = _key_value(item)
        if key in RESERVED:
            raise ConfigError(
                f"{where}: {key} is set by the sweep (member name, --sweep-dir, `group:`, `tags:`)"
            )


def _check_extras_vs_grid(extras: list[str], grid: dict) -> None:
    for item in extras:
        key, _ = _key_value(item)
        if key in grid:
            raise ConfigError(
                f"override {item!r}: the sweep varies {key} in its grid; "
                "edit the grid instead of overriding it for every member"
            )


def _note_pinned(extras: list[str], own: list[str], name: Any) -> None:
    """Say so when a command-line extra yields to a member's own setting (see the precedence)."""
    pinned = dict(_key_value(o) for o in own)
    for item in extras:
        key, _ = _key_value(item)
        if key in pinned:
            log.info("sweep member %s keeps %s=%s over %s", name, key, pinned[key], item)


def _check_unique(members: list[Member], path: Path) -> None:
    seen: set[str] = set()
    for m in members:
        _check_name(m.name, f"{path}: member name")
        if m.name in seen:
            raise ConfigError(
                f"{path}: two members are both named {m.name!r}; give members "
                "distinct `name:`s or label the grid values with a mapping"
            )
        seen.add(m.name)


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def member_config(sweep: Sweep, member: Member, sweep_dir: Path) -> Config:
    """The validated config of one member, with its runs under the sweep directory."""
    raw = apply_overrides(
        read_yaml(sweep.base), member.overrides + [override_item("run.runs_dir", str(sweep_dir))]
    )
    try:
        return validate(raw)
    except ConfigError as e:
        raise ConfigError(f"sweep member {member.name!r}: {e}") from None


def default_sweep_dir(sweep: Sweep) -> Path:
    """runs/<sweep name>, under the base config's runs_dir."""
    runs_dir = read_yaml(sweep.base).get("run", {}).get("runs_dir", "runs")
    return Path(runs_dir) / sweep.name


# ---------------------------------------------------------------------------------------------
# running


def dump_members(members: list[Member]) -> str:
    """A readable listing (for a dry run or a log line): name and its overrides."""
    return yaml.safe_dump(
        [{"name": m.name, "overrides": m.overrides} for m in members], sort_keys=False
    )
