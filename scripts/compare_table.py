"""A markdown table of sweep members against one of them, every number from `mbt-online compare`
(`report.compare.paired_compare`): each member's final-round mean with its 95% interval over
questions, and the paired difference from the baseline with its interval, per metric.

    .venv/bin/python scripts/compare_table.py runs/grpo-seeds --baseline mbt-r \
        --members grpo mbt-r-grpo self-distill-grpo

Nothing is typed by hand: paste the output into docs/results.md with the command that made it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mbt_online.report.compare import paired_compare

METRICS = ("accuracy", "mean_tokens", "degeneration_rate", "answer_inclusive_rate")


def cell(side: dict) -> str:
    return f"{side['mean']:.3f} [{side['ci_low']:.3f}, {side['ci_high']:.3f}]"


def diff(result: dict) -> str:
    mark = " *" if result["excludes_zero"] else ""
    low, high = result["ci_low"], result["ci_high"]
    return f"{result['difference']:+.3f} [{low:+.3f}, {high:+.3f}]{mark}"


def table(sweep_dir: Path, baseline: str, members: list[str], round_: int | None) -> str:
    head = ["member", *(f"{m} (difference from {baseline})" for m in METRICS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows: dict[str, list[str]] = {baseline: [], **{m: [] for m in members}}
    runs: dict[str, int] = {}
    for metric in METRICS:
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
        f"\nRound {round_}; means over the seeds' runs with 95% intervals over the 200 held-out "
        "questions; differences paired over the same questions and seeds (* : the interval "
        "excludes zero)."
    )
    return "\n".join(lines) + note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--members", nargs="+", required=True)
    parser.add_argument("--round", type=int, default=None)
    args = parser.parse_args()
    print(table(args.sweep_dir, args.baseline, args.members, args.round))


if __name__ == "__main__":
    main()
