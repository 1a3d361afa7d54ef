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
from mbt_online.cli.common import DATASET_HELP, app, err, flag_wording
from mbt_online.cli.data import inspect_summary
from mbt_online.config import ConfigError

__all__ = ["DATASET_HELP", "app", "flag_wording", "inspect_summary", "main"]


def main() -> None:
    try:
        app()
    except ConfigError as e:  # pragma: no cover - typer commands already catch this
        err.print(f"error: {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
