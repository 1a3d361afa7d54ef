"""Markdown tables of sweep members against one of them, every number from `mbt-online compare`
(`report.compare.paired_compare`): each member's final-round mean with its 95% interval, and the
paired difference from the baseline with its interval, per metric.

    .venv/bin/python scripts/compare_table.py runs/grpo-seeds --baseline mbt-r \\
        --members grpo mbt-r-grpo self-distill-grpo
    .venv/bin/python scripts/compare_table.py runs/paper-testbed      # the sweep's `endpoint:`
    .venv/bin/python scripts/compare_table.py runs/paper-testbed --write docs/results.md
    .venv/bin/python scripts/compare_table.py runs/paper-testbed --brief --write README.md

Without --baseline the sweep's registered endpoint (`endpoint:` in the sweep file that
sweep.json names) names the control, the primary comparison and the secondary ones, and every member
of the sweep is tabled against the control; members that only evaluate round 0 (the untrained
baselines) get their round-0 means. The behavioural metrics (`eval/slips_caught`, ...) are ratios
over slips, not per-question values: they are tabled as the mean over replicates of each run's
own final-round number, with the replicates' range.

Nothing is typed by hand: paste the output into docs/results.md with the command that made it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mbt_online.config import ConfigError
from mbt_online.report.compare import group_of, last_round, paired_compare, resolve_runs
from mbt_online.rundir import read_metrics
from mbt_online.sweeps.spec import load_sweep

METRICS = ("accuracy", "mean_tokens", "degeneration_rate", "answer_inclusive_rate")
TIER_METRICS = ("hard/accuracy", "shifted/accuracy")
BEHAVIOUR = (
    "eval/slip_rate",
    "eval/slips_caught",
    "eval/slips_repaired",
    "eval/verify_real_link",
    "train/sft_rows",
)


def cell(side: dict) -> str:
    return f"{side['mean']:.3f} [{side['ci_low']:.3f}, {side['ci_high']:.3f}]"


def diff(result: dict) -> str:
    mark = " *" if result["excludes_zero"] else ""
    low, high = result["ci_low"], result["ci_high"]
    return f"{result['difference']:+.3f} [{low:+.3f}, {high:+.3f}]{mark}"


def _compare(member: str, baseline: str, round_: int | None, metric: str, sweep_dir: Path):
    try:
        return paired_compare(member, baseline, round_, metric, sweep_dir)
    except ConfigError:  # e.g. a tier this sweep's evaluation does not have
        return None


def table(
    sweep_dir: Path, baseline: str, members: list[str], round_: int | None, metrics=METRICS
) -> str:
    metrics = [m for m in metrics if _compare(members[0], baseline, round_, m, sweep_dir)]
    head = ["member", *(f"{m} (difference from {baseline})" for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows: dict[str, list[str]] = {baseline: [], **{m: [] for m in members}}
    runs: dict[str, int] = {}
    for metric in metrics:
        for member in members:
            r = paired_compare(member, baseline, round_, metric, sweep_dir)
            rows[member].append(f"{cell(r['a'])}; {diff(r)}")
            if member == members[0]:
                rows[baseline].append(cell(r["b"]))
            runs[member], runs[baseline] = len(r["a"]["runs"]), len(r["b"]["runs"])
            round_ = r["round"]
    for name, cells in rows.items():
        lines.append(f"| {name} ({runs[name]} seeds) | " + " | ".join(cells) + " |")
    note = (
        f"\nRound {round_}; means over the seeds' runs with 95% intervals; differences paired "
        "over the same held-out questions and seeds (* : the interval excludes zero)."
    )
    return "\n".join(lines) + note


def round_zero_table(sweep_dir: Path, members: list[str]) -> str:
    """The untrained rows: their round-0 means (a t interval over the replicates)."""
    lines = [
        "| member (round 0) | " + " | ".join(METRICS) + " |",
        "|" + "---|" * (1 + len(METRICS)),
    ]
    for member in members:
        cells = [cell(paired_compare(member, member, 0, m, sweep_dir)["a"]) for m in METRICS]
        lines.append(f"| {member} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def behaviour_table(sweep_dir: Path, members: list[str]) -> str:
    """Each member's final-round behavioural metrics: mean over its replicates [min, max]."""
    lines = ["| member | " + " | ".join(BEHAVIOUR) + " |", "|" + "---|" * (1 + len(BEHAVIOUR))]
    for member in members:
        _, runs = resolve_runs(member, sweep_dir)
        final = last_round(runs)
        lasts = [next(m for m in read_metrics(r) if m["round"] == final) for r in runs]
        cells = []
        for key in BEHAVIOUR:
            values = [m[key] for m in lasts if key in m]
            cells.append(
                f"{sum(values) / len(values):.3f} [{min(values):.3f}, {max(values):.3f}]"
                if values
                else "-"
            )
        lines.append(f"| {member} (round {final}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_members(sweep_dir: Path) -> tuple[dict, list[str]]:
    """The registered endpoint and the member groups with at least one run, in sweep order."""
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    endpoint = manifest.get("endpoint") or {}
    if not endpoint and manifest.get("sweep_file"):  # the sweep file the runs came from
        endpoint = load_sweep(manifest["sweep_file"]).endpoint
    if not endpoint:
        raise SystemExit(f"{sweep_dir}: its sweep file registers no endpoint: pass --baseline")
    groups = list(dict.fromkeys(group_of(m["name"]) for m in manifest["members"]))
    present = [g for g in groups if any(p.is_dir() for p in sweep_dir.glob(f"{g}-s*"))]
    return endpoint, present


def endpoint_report(sweep_dir: Path) -> str:
    endpoint, groups = sweep_members(sweep_dir)
    control, treatment = endpoint["control"], endpoint["treatment"]
    trained, untrained = [], []
    for g in groups:
        (trained if last_round(resolve_runs(g, sweep_dir)[1]) > 0 else untrained).append(g)
    out = []
    primary = paired_compare(
        treatment, control, None, endpoint["metric"].split("eval/")[-1], sweep_dir
    )
    out.append(
        f"**Primary endpoint** ({endpoint['metric']}, round {primary['round']}, {treatment} minus "
        f"{control}, {primary['pairs']} replicate pairs): {diff(primary)}"
    )
    for sec in endpoint.get("secondary", []):
        metric = sec["metric"].split("eval/")[-1]
        base = sec.get("control", control)
        r = _compare(sec.get("treatment", treatment), base, None, metric, sweep_dir)
        if r is not None:
            out.append(f"- {sec['metric']}, {treatment} minus {base}: {diff(r)}")
    members = [g for g in trained if g != control]
    out += ["", table(sweep_dir, control, members, None, (*METRICS, *TIER_METRICS))]
    if untrained:
        out += ["", round_zero_table(sweep_dir, untrained)]
    out += ["", behaviour_table(sweep_dir, [control, *members])]
    return "\n".join(out)


def brief_report(sweep_dir: Path) -> str:
    """The README's block: the primary endpoint and every row's accuracy against the control."""
    endpoint, groups = sweep_members(sweep_dir)
    full = endpoint_report(sweep_dir).split("\n\n")
    trained = [g for g in groups if g != endpoint["control"]]
    trained = [g for g in trained if last_round(resolve_runs(g, sweep_dir)[1]) > 0]
    return (
        full[0].splitlines()[0]
        + "\n\n"
        + table(sweep_dir, endpoint["control"], trained, None, ("accuracy",))
    )


def write_block(path: Path, sweep_dir: Path, text: str) -> None:
    """Replace what stands between `<!-- compare_table:<sweep dir name> -->` and
    `<!-- /compare_table -->` in `path` with `text`, so a document's numbers are regenerated,
    never typed."""
    start, end = f"<!-- compare_table:{sweep_dir.name} -->", "<!-- /compare_table -->"
    doc = path.read_text()
    if start not in doc:
        raise SystemExit(f"{path}: no {start} marker")
    head, rest = doc.split(start, 1)
    if end not in rest:
        raise SystemExit(f"{path}: {start} has no {end}")
    path.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--baseline", help="default: the sweep's registered endpoint")
    parser.add_argument("--members", nargs="+")
    parser.add_argument("--round", type=int, default=None)
    parser.add_argument(
        "--write", type=Path, nargs="*", default=[], help="files whose marked block to replace"
    )
    parser.add_argument("--brief", action="store_true", help="primary endpoint and accuracy only")
    args = parser.parse_args()
    if args.baseline is None:
        text = (brief_report if args.brief else endpoint_report)(args.sweep_dir)
        for path in args.write:
            write_block(path, args.sweep_dir, text)
        print(text)
        return
    if not args.members:
        parser.error("--members is required with --baseline")
    print(table(args.sweep_dir, args.baseline, args.members, args.round))


if __name__ == "__main__":
    main()
