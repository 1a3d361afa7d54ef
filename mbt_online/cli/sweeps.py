"""`sweep` (run, status) and `report`: ablation sweeps, locally or on SLURM, and the HTML dashboard
over runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from mbt_online.cli.common import (
    CONFIG_HELP,
    app,
    console,
    console_logging,
    fail,
    stage_failed,
    stopped,
)
from mbt_online.config import ConfigError, resolve_config
from mbt_online.inert import controls

# how a stopped sweep resumes (`preemption.stop_line`; {run}: the member in flight)
SWEEP_RESUME = "run the same `mbt-online sweep` command again to resume (member {run})"


class _SweepGroup(TyperGroup):
    """`sweep FILE [overrides]` runs a sweep (the `run` command), while `sweep status DIR` is a
    subcommand: a first token that names no subcommand goes to `run`."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


sweep_app = typer.Typer(
    cls=_SweepGroup,
    no_args_is_help=True,
    help="Ablation sweeps: `mbt-online sweep FILE key=value...` runs one (locally, as SLURM "
    "job arrays with --emit slurm, or submitted with --submit); `mbt-online sweep status DIR` "
    "shows where each member stands.",
)
app.add_typer(sweep_app, name="sweep")


@sweep_app.command("run")
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
        typer.Option(
            help="'slurm': write one job-array script per resource set and submit.sh instead "
            "of running locally."
        ),
    ] = None,
    submit: Annotated[
        bool,
        typer.Option(help="Write the SLURM scripts (as --emit slurm), submit them, print job ids."),
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="List the members and exit.")] = False,
) -> None:
    """Run an ablation sweep: each member one after another, skipping finished runs (the default
    command: `mbt-online sweep FILE` is `mbt-online sweep run FILE`)."""
    from mbt_online import preemption
    from mbt_online.contracts import StageFailed
    from mbt_online.sweeps.local import run_sweep
    from mbt_online.sweeps.spec import dump_members, expand

    if emit not in (None, "slurm"):
        fail(f"--emit must be slurm (got {emit!r})")
    emit = "slurm" if submit else emit
    try:
        path = resolve_config(sweep_file)
        if dry_run:
            print(dump_members(expand(path, overrides or [])), end="")
            return
        console_logging()
        with preemption.handling(SWEEP_RESUME):
            out = run_sweep(path, sweep_dir, overrides or [], emit=emit)
        if submit:
            _submit(out.parent)
            return
    except (preemption.Preempted, preemption.Interrupted) as e:
        stopped(e)
    except ConfigError as e:
        fail(str(e))
    except StageFailed as e:  # a member's stage: rerunning the sweep resumes that member
        stage_failed(e, "Run the same sweep command again to resume it.")
    console.print(f"{'SLURM submit script' if emit else 'sweep directory'}: {out}")
    if not emit:
        console.print(f"report: mbt-online report {out} --out {out / 'report.html'}")


def _submit(sweep_dir: Path) -> None:
    from mbt_online.sweeps.slurm import submit

    for job in submit(sweep_dir):
        print(controls(f"{job['job_id']} {job['script']}: {', '.join(job['members'])}"))
    console.print(f"status: mbt-online sweep status {sweep_dir}", highlight=False)


@sweep_app.command("status")
def sweep_status(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep directory (it holds sweep.json).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Each member's state (not started, queued, running, finished, failed), round and stage,
    last evaluation, and its SLURM task where squeue / sacct answer."""
    from rich.table import Table

    from mbt_online.sweeps.status import format_status, sweep_status

    try:
        status = sweep_status(sweep_dir.resolve())
    except ConfigError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(status, indent=1))
        return
    table = Table(title=f"sweep {status['sweep']}: {status['dir']}")
    for col in ("member", "state", "round/stage", "last eval", "SLURM task", "SLURM state"):
        table.add_column(col)
    for row in format_status(status):
        table.add_row(*row)
    console.print(table)


@app.command("sweep-member", hidden=True)
def sweep_member(
    run_dir: Annotated[Path, typer.Argument(help="The member's run directory.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="The member's overrides.")] = None,
    config: Annotated[str | None, typer.Option("--config", "-c", help=CONFIG_HELP)] = None,
) -> None:
    """One sweep member as a local sweep runs it (a SLURM array task's command): skipped when
    finished, resumed when cut, refused when its stored config differs; exit 3 when preempted."""
    from mbt_online import preemption
    from mbt_online.config import load_config
    from mbt_online.contracts import StageFailed
    from mbt_online.sweeps.local import run_member

    console_logging()
    try:
        with preemption.handling():  # from the config's load on: a signal stops it at once
            run_member(run_dir, load_config(config, overrides or []), run_dir.name)
    except (preemption.Preempted, preemption.Interrupted) as e:
        stopped(e)
    except ConfigError as e:
        fail(str(e))
    except StageFailed as e:
        stage_failed(e, e.resume_hint())


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
    from mbt_online.report import write_report

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"not found: {', '.join(missing)}")
    try:
        written = write_report(paths, out, max_samples=samples)
    except (ConfigError, ValueError) as e:
        fail(str(e))
    console.print(f"report written: {written}")
