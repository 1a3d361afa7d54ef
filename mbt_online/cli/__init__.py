"""The `mbt-online` command line: train, config, eval, data inspect, teach, judge, sweep, report,
compare, models. One module per group of commands; they all register on `common.app`."""

from __future__ import annotations

import sys

from mbt_online.cli import (  # noqa: F401  (registers commands)
    compare,
    data,
    models,
    run,
    stages,
    sweeps,
)
from mbt_online.cli.common import DATASET_HELP, FAILED_EXIT, USAGE_EXIT, app, err, flag_wording
from mbt_online.cli.data import inspect_summary
from mbt_online.config import ConfigError
from mbt_online.contracts import StageFailed

__all__ = ["DATASET_HELP", "app", "flag_wording", "inspect_summary", "main"]


def main() -> None:
    """The `mbt-online` entry point. Each command maps its own errors to the exit codes of
    `common.EXIT_CODES`; these are the backstop for one that reaches here uncaught."""
    try:
        app()
    except ConfigError as e:
        err.print(f"error: {e}", highlight=False, soft_wrap=True)
        sys.exit(USAGE_EXIT)
    except StageFailed as e:
        err.print(f"error: {e}", highlight=False, soft_wrap=True)
        sys.exit(FAILED_EXIT)


if __name__ == "__main__":
    main()
