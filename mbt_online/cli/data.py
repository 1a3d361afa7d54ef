"""`data inspect`: what a benchmark file holds, what was skipped and why, how long prompts get."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from mbt_online.cli.common import DATASET_HELP, PATH_HELP, app, console, fail
from mbt_online.tasks.names import BENCHMARKS

data_app = typer.Typer(help="Inspect benchmark data files.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("inspect")
def data_inspect(
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)],
    path: Annotated[
        Path, typer.Option(help="Official JSON / JSON-lines file, or Parquet. " + PATH_HELP)
    ],
    distractors: Annotated[
        int | None, typer.Option(help="Keep this many distractor documents beside the gold ones.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Load a data file and report rows loaded and skipped, tiers and prompt lengths."""
    summary = inspect_summary(dataset, path, distractors)
    if as_json:
        print(json.dumps(summary, sort_keys=True))
        return
    console.print(
        Text(dataset, style="bold"),
        f"{path}: loaded {summary['loaded']} of {summary['total']} "
        f"rows, skipped {summary['skipped']}",
    )
    for reason, n in summary["skipped_reasons"].items():
        console.print(f"  skipped {n}: {reason}")
    table = Table(title="difficulty tiers")
    table.add_column("tier")
    table.add_column("questions", justify="right")
    for tier, n in summary["tiers"].items():
        table.add_row(tier, str(n))
    console.print(table)
    p = summary["prompt_words"]
    if p:
        console.print(
            f"student prompt length (words): mean {p['mean']:.0f}, median "
            f"{p['median']:.0f}, p95 {p['p95']:.0f}, max {p['max']}"
        )


def inspect_summary(dataset: str, path: Path, distractors: int | None = None) -> dict[str, Any]:
    from mbt_online.prompts import student_messages
    from mbt_online.tasks import load_examples, resolve_data_path

    if dataset not in BENCHMARKS:
        fail(f"--dataset must be one of {', '.join(BENCHMARKS)} (got {dataset!r})")
    if not resolve_data_path(path).is_file():
        fail(f"--path: file not found: {path}")
    res = load_examples(dataset, path, distractors=distractors)
    lengths = sorted(
        sum(len(m["content"].split()) for m in student_messages(ex)) for ex in res.examples
    )
    stats = {}
    if lengths:
        stats = {
            "mean": statistics.fmean(lengths),
            "median": statistics.median(lengths),
            "p95": lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))],
            "max": lengths[-1],
            "min": lengths[0],
        }
    return {
        "dataset": dataset,
        "path": str(path),
        "total": res.total,
        "loaded": len(res.examples),
        "skipped": sum(res.skipped.values()),
        "skipped_reasons": dict(res.skipped),
        "tiers": dict(sorted(Counter(ex.tier for ex in res.examples).items(), key=_tier_order)),
        "prompt_words": stats,
    }


def _tier_order(item: tuple[str, int]) -> tuple[int, str]:
    order = {"easy": 0, "medium": 1, "hard": 2}
    return order.get(item[0], 3), item[0]
