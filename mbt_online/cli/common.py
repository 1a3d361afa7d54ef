"""What every command shares: the typer app, the consoles, the common help texts, `fail` and the
library-to-flag error wording."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mbt_online.config import ConfigError
from mbt_online.config.docs import sections_help
from mbt_online.inert import InertFormatter, controls
from mbt_online.preemption import INTERRUPTED_EXIT, PREEMPTED_EXIT
from mbt_online.tasks.names import BENCHMARKS

# What every command's exit status means (docs/development.md, "Exit codes"): a script or a batch
# system tells a mistake to fix (2) from a failure to retry (1) and a stop to requeue (3), and a
# Ctrl-C (130, as a shell reports it) from all of them.
FAILED_EXIT = 1  # a stage failed or an endpoint was out: nothing of it committed, resume later
USAGE_EXIT = 2  # the command line or the config is wrong: nothing was done; fix and run again
EXIT_CODES = (
    "Exit codes: 0 done; 1 a stage failed or an endpoint was out (nothing of that stage was "
    "committed: resume it when the cause is fixed); 2 a usage or config error (nothing was done); "
    f"{PREEMPTED_EXIT} preempted (stopped on SIGUSR1 at a safe point, or on SIGTERM at once: "
    f"resume or requeue); {INTERRUPTED_EXIT} interrupted by Ctrl-C (resume)."
)

app = typer.Typer(
    help="Online Metacognitive Behavioral Tuning: roll out, score, teach, SFT, DPO, repeat.",
    epilog=EXIT_CODES,
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class InertConsole(Console):
    """A console that shows every string as text: no rich markup is read (`[bold red]`,
    `[link=...]` in a path, a data row or an endpoint's reply print as they are) and control
    characters (ANSI escape sequences) are written as escapes (`inert.controls`). Styles come from
    `rich.text.Text` objects, never from the strings. Every string the console renders (print's
    arguments, table titles and cells) passes `render_str`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs["markup"] = False
        return super().render_str(controls(text), **kwargs)


console = InertConsole()
err = InertConsole(stderr=True)

DATASET_HELP = f"Benchmark layout: {', '.join(BENCHMARKS[:-1])} or {BENCHMARKS[-1]}."
PATH_HELP = "`pkg://samples/<benchmark>/<file>` names a dev sample shipped with the package."


def fail(message: str, code: int = USAGE_EXIT) -> None:
    """The error on one line: hard breaks at the console's width split the paths it names, so
    a log or a pipe could neither copy nor grep them (the terminal wraps it for display). Exits
    `code`: a usage or config error unless the caller says a stage failed (`FAILED_EXIT`)."""
    err.print(Text("error:", style="bold red"), message, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _print_version(value: bool) -> None:
    if value:
        from mbt_online.rundir.integrity import PACKAGE, package_version

        print(controls(f"{PACKAGE} {package_version()}"))
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the installed mbt-online version and exit.",
        ),
    ] = False,
) -> None:
    """Online Metacognitive Behavioral Tuning: roll out, score, teach, SFT, DPO, repeat."""


TRAIN_EPILOG = (
    f"Config sections, each key a dotted override section.key=value: {sections_help()}\n\n"
    "Every key with its type, default and meaning: `mbt-online config show --explain` and "
    "docs/configuration.md; the shipped configs: `mbt-online config list`."
)
CONFIG_HELP = (
    "A YAML file, or the name of a shipped config (`mbt-online config list`), e.g. "
    "smollm2-mhqa-cpu; repeat it to layer files, later ones overriding earlier ones (a preset, "
    "then a hardware overlay: -c gpu/qwen3-4b -c gpu/hw-8gpu). Default: the shipped quickstart."
)


def print_round_table(run_dir: Path) -> None:
    from mbt_online.rundir.metrics_file import read_metrics
    from mbt_online.scoring.round_metrics import HEADLINE

    table = Table(title=f"MBT run {run_dir}")
    cols = [("round", "round"), *((title, key) for key, title in HEADLINE)]
    for name, _ in cols:
        table.add_column(name, justify="right")
    for m in read_metrics(run_dir):
        table.add_row(*[fmt_spread(m, key) for _, key in cols])
    console.print(table)
    console.print(f"run directory: {run_dir}")
    wandb_runs = sorted((run_dir / "wandb" / "wandb").glob("offline-run-*"))
    if wandb_runs:
        console.print(f"offline wandb run: {wandb_runs[-1]}  (upload: wandb sync {wandb_runs[-1]})")


# library parameters that the commands take as options of the same name
FLAGS = ("distractors", "path", "rounds", "save", "resume", "seeds")


def flag_wording(e: ConfigError) -> str:
    """A library error in the command line's words: the library names its parameters
    (`save: ...`), the user typed options (`--save`); a run that exists gets its resume command."""
    from mbt_online.loop import RunExistsError

    text = str(e)
    if isinstance(e, RunExistsError):
        return f"{text}: resume it with `mbt-online train --resume {e.run_dir}` or pass --run-dir"
    param, colon, rest = text.partition(":")
    return f"--{param}{colon}{rest}" if colon and param in FLAGS else text


def fmt_spread(metrics: dict[str, Any], key: str) -> str:
    """`mean ± half-interval` where the metric carries its 95% interval (several eval seeds),
    the plain number otherwise; the half-width at the mean's own precision."""
    v, low, high = (metrics.get(f"{key}{s}") for s in ("", "_ci_low", "_ci_high"))
    if not isinstance(v, float) or low is None or high is None:
        return fmt_value(v)
    digits = 1 if abs(v) >= 10 else 3
    return f"{fmt_value(v)} ± {(high - low) / 2:.{digits}f}"


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
    return "-" if v is None else str(v)


def parse_distractors(value: str | None) -> int | str | None:
    if value is None or value == "all":
        return value
    if not value.isdigit():
        fail(f"--distractors: expected a count or 'all', got {value!r}")
    return int(value)


def console_logging() -> None:
    import logging

    logger = logging.getLogger("mbt_online")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(InertFormatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def stopped(e: BaseException) -> None:
    """A run stopped by a signal (`preemption.Preempted` or `Interrupted`): one line saying where
    and how to resume, and the signal's exit code (3 to requeue, 130 for Ctrl-C)."""
    from mbt_online import preemption

    assert isinstance(e, preemption.Preempted | preemption.Interrupted)
    err.print(preemption.stop_line(e), highlight=False, soft_wrap=True)
    code = PREEMPTED_EXIT if isinstance(e, preemption.Preempted) else None
    raise typer.Exit(code or preemption.exit_code(e.signal_name))


def stage_failed(e: Exception, hint: str) -> None:
    """A failed stage: what to do first, then the error, so that the last line is the root
    cause (the endpoint and what it answered, the TRAIN child's own error)."""
    err.print(hint, highlight=False, soft_wrap=True)
    fail(str(e), FAILED_EXIT)
