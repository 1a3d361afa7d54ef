"""`sweep` and `report`: ablation sweeps, locally or on SLURM, and the HTML dashboard over runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mbt_online.cli.common import _console_logging, app, console, fail
from mbt_online.config import ConfigError, resolve_config


@app.command()
def sweep(
    sweep_file: Annotated[
        str,
        typer.Argument(
            help="Sweep YAML: a file, or a shipped sweep's name, e.g. sweeps/paper-baselines."
        ),
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Overrides applied to every member, e.g. loop.rounds=1"),
    ] = None,
    sweep_dir: Annotated[
        Path | None,
        typer.Option(help="Where the member runs go (default: <run.runs_dir>/<sweep name>)."),
    ] = None,
    emit: Annotated[
        str | None,
        typer.Option(help="'slurm': write a job-array script instead of running locally."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="List the members and exit.")] = False,
) -> None:
    """Run an ablation sweep: each member one after another, skipping finished runs."""
    from mbt_online.tools.sweep import dump_members, expand, run_sweep

    if emit not in (None, "slurm"):
        fail(f"--emit must be slurm (got {emit!r})")
    try:
        path = resolve_config(sweep_file)
        if dry_run:
            print(dump_members(expand(path, overrides or [])), end="")
            return
        _console_logging()
        out = run_sweep(path, sweep_dir, overrides or [], emit=emit)
    except ConfigError as e:
        fail(str(e))
    console.print(f"{'SLURM script' if emit else 'sweep directory'}: {out}")
    if not emit:
        console.print(f"report: mbt-online report {out} --out {out / 'report.html'}")


@app.command()
def report(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Run directories, sweep directories or wandb offline run folders."),
    ],
    out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("report.html"),
    samples: Annotated[int, typer.Option(help="Sample traces per round in the browser.")] = 10,
) -> None:
    """Write one self-contained HTML dashboard (opens offline) comparing runs."""
    from mbt_online.tools.report import write_report

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"not found: {', '.join(missing)}")
    try:
        written = write_report(paths, out, max_samples=samples)
    except (ConfigError, ValueError) as e:
        fail(str(e))
    console.print(f"report written: {written}")
