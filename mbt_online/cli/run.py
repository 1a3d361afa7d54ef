"""`train` and `config`: start, resume or preview a run, and show the configs it would use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from mbt_online.cli.common import (
    CONFIG_HELP,
    EXIT_CODES,
    TRAIN_EPILOG,
    app,
    console,
    fail,
    flag_wording,
    print_round_table,
    stage_failed,
    stopped,
)
from mbt_online.config import ConfigError, config_yaml, load_config, resolve_config


@app.command(epilog=f"{TRAIN_EPILOG}\n\n{EXIT_CODES}")
def train(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted config overrides, e.g. loop.rounds=2 teacher.mode=mbt-s"),
    ] = None,
    config: Annotated[list[str] | None, typer.Option("--config", "-c", help=CONFIG_HELP)] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run directory (default: <run.runs_dir>/<run.name>).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Resume the run in this directory where it stopped.")
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="With --resume: train up to this many rounds (extends a finished run from its "
            "last model).",
        ),
    ] = None,
    allow_changed: Annotated[
        bool,
        typer.Option(
            "--allow-changed",
            help="With --resume: continue although the run's config.yaml, a data file or the "
            "package version changed since it started (a deliberate change; the run then records "
            "the new ones).",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(help="Print the resolved config and the run directory, then exit."),
    ] = False,
) -> None:
    """Run a multi-round MBT training run (the embedded synthetic world by default)."""
    from mbt_online import preemption
    from mbt_online.cli.plan import plan_text
    from mbt_online.contracts import StageFailed

    if rounds is not None and not resume:
        fail("--rounds extends a run with --resume; for a new run use loop.rounds=N")
    if allow_changed and not resume:
        fail("--allow-changed accepts a changed run on --resume; a new run records what it reads")
    if resume and (overrides or config):
        fail("--resume takes the run's own config.yaml; drop --config and overrides")
    try:
        if dry_run:
            extra = [] if rounds is None else [f"loop.rounds={rounds}"]
            cfg = load_config(resume / "config.yaml", extra) if resume else None
            cfg = cfg or load_config(config, overrides or [])
            print(config_yaml(cfg), end="")
            target = resume or run_dir or cfg.run_dir()
            print(f"# run directory: {target}")
            print(plan_text(cfg, target), end="")  # the stages' runtime, commands and memory
            return
        with preemption.handling():  # SIGUSR1: at the next safe point; SIGINT/SIGTERM: now
            out = _train(config, overrides or [], run_dir, resume, rounds, allow_changed)
    except (preemption.Preempted, preemption.Interrupted) as e:  # one line: where, how to resume
        stopped(e)
    except ConfigError as e:
        fail(flag_wording(e))
    except StageFailed as e:  # an endpoint outage or a failed TRAIN child: nothing committed
        stage_failed(e, e.resume_hint())
    print_round_table(out)


def _train(
    config: list[str] | None,
    overrides: list[str],
    run_dir: Path | None,
    resume: Path | None,
    rounds: int | None,
    allow_changed: bool = False,
) -> Path:
    from mbt_online import loop

    if resume:  # the run's own config.yaml, read once its integrity is checked
        return loop.train(None, resume, resume=True, rounds=rounds, allow_changed=allow_changed)
    return loop.train(load_config(config, overrides), run_dir)


config_app = typer.Typer(
    help="The shipped configs, and the resolved config a run would use.", no_args_is_help=True
)
app.add_typer(config_app, name="config")


@config_app.command("show", epilog=TRAIN_EPILOG)
def config_show(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted config overrides, e.g. loop.rounds=2 teacher.mode=mbt-s"),
    ] = None,
    config: Annotated[list[str] | None, typer.Option("--config", "-c", help=CONFIG_HELP)] = None,
    defaults: Annotated[
        bool,
        typer.Option(
            "--defaults", help="The schema's defaults instead of a config file (then overrides)."
        ),
    ] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Each key's description as a comment above it.")
    ] = False,
) -> None:
    """Print the resolved config as YAML: the file (or shipped name) with the overrides applied
    and every default filled in, exactly what `train` would run and record in config.yaml."""
    from mbt_online.config import apply_overrides, validate
    from mbt_online.config.docs import explained_yaml

    if defaults and config:
        fail("--defaults shows the schema defaults; drop --config")
    try:
        cfg = (
            validate(apply_overrides({}, overrides or []))
            if defaults
            else load_config(config, overrides or [])
        )
    except ConfigError as e:
        fail(str(e))
    print(explained_yaml(cfg) if explain else config_yaml(cfg), end="")


@config_app.command("list")
def config_list() -> None:
    """List the configs shipped with the package: names for --config (and for `sweep`)."""
    from mbt_online.config import shipped_configs
    from mbt_online.config.docs import config_summary

    for name in shipped_configs():
        console.print(Text(name, style="bold"), f" {config_summary(name)}", highlight=False)
    console.print(f"(in {resolve_config('quickstart').parent})", highlight=False)
