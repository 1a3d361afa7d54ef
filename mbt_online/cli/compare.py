"""`compare`: two runs, or two sweep members over their seeds, on the same held-out questions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mbt_online.cli.common import app, fail, fmt_value
from mbt_online.config import ConfigError
from mbt_online.inert import controls


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="A run directory, or a sweep member (its seed runs).")],
    b: Annotated[str, typer.Argument(help="The run or sweep member to compare A against.")],
    round_: Annotated[
        int | None,
        typer.Option("--round", help="Round to compare (default: the last both evaluated)."),
    ] = None,
    metric: Annotated[
        str,
        typer.Option(
            help="Per-question eval metric: accuracy, em, f1, mean_tokens, ...; "
            "<tier>/<metric> (hard/accuracy) compares one tier's questions"
        ),
    ] = "accuracy",
    sweep_dir: Annotated[
        Path | None,
        typer.Option(help="Where member names are looked up (default: beside the name given)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Paired comparison of A and B: each side's mean ± 95% interval, and the paired bootstrap
    of the per-question differences A - B, with whether its interval excludes zero."""
    from mbt_online.report.compare import paired_compare

    try:
        out = paired_compare(a, b, round_, metric, sweep_dir)
    except ConfigError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(out, sort_keys=True))
        return
    # plain print: a verdict line must not be wrapped mid-phrase by the console width
    print(controls(f"{metric} at round {out['round']} ({out['pairs']} run pair(s)):"))
    for side in ("a", "b"):
        s = out[side]
        print(
            f"  {controls(s['name'], keep_lines=False)}: {fmt_value(s['mean'])} "
            f"[{fmt_value(s['ci_low'])}, {fmt_value(s['ci_high'])}]"
            f"  n={s['n']} ({s['interval_over']})"
        )
    verdict = "excludes zero" if out["excludes_zero"] else "includes zero: not distinguishable"
    print(
        f"  difference A - B: {out['difference']:+.3f} "
        f"[{out['ci_low']:+.3f}, {out['ci_high']:+.3f}] over {out['n']} paired questions, "
        f"{verdict}"
    )
