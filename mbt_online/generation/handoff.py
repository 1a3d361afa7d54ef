"""HANDOFF: how a live generator takes the round's new weights. One reading of the three modes
(reload in place, a LoRA adapter on the base, restart on the folder) shared by the vLLM and
transformers backends, so the fast paths and the restart path give the same policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mbt_online.contracts import HandoffMode


def dispatch_handoff(
    engine: Any, mode: HandoffMode, model_dir: str, adapter_dir: str | None = None
) -> None:
    """The handoff modes over an engine's `load_weights` / `restart` / `set_lora`, shared by the
    vLLM and transformers backends so both read a mode the same way. For "lora", `model_dir` is the
    base the adapter was trained on; it is loaded first when it is not the engine's weights."""
    if mode == "reload":
        engine.load_weights(model_dir)
    elif mode == "restart":
        engine.restart(model_dir)
    elif mode == "lora":
        if adapter_dir is None:
            raise ValueError("handoff mode 'lora' needs adapter_dir")
        if Path(model_dir).resolve() != Path(engine.model_path).resolve():
            engine.load_weights(model_dir)
        engine.set_lora(adapter_dir)
    else:
        raise ValueError(f"unknown handoff mode {mode!r}; use reload, lora or restart")
