"""What every TRL step (SFT, DPO, GRPO) shares: the policy loaded in float32 with the engine's chat
template, TRL's fused LM head set up, the fit (resumed from the stage's last checkpoint), and the
finish: the full weights gathered, rank 0 writing the model folder, the stage's history and
metrics (metrics last: their presence says the stage is complete). A step with nothing to train
points at its input folder and says so in its metrics.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.trainer_callback import PrinterCallback

from mbt_online.config import TrainConfig
from mbt_online.rundir.atomic import write_json_atomic
from mbt_online.rundir.live_steps import live_dir
from mbt_online.rundir.stages import STAGE_HISTORY
from mbt_online.training import compact_head, fp32_head
from mbt_online.training.history import (
    LiveLog,
    ProgressLog,
    fit_metrics,
)
from mbt_online.training.saving import (
    StopAtCheckpoint,
    dist_state,
    gather_state_dict,
    write_model,
)

METRICS_FILE = "train_metrics.json"


@dataclass
class TrainResult:
    """Where the trained model lives and what training measured.

    `model_dir` is a complete HF folder (merged when LoRA) — or the input folder when there was
    nothing to train; `adapter_dir` is the PEFT adapter, only for `method == "lora"` runs;
    `history` is TRL's `log_history` of the stage.
    """

    model_dir: Path
    adapter_dir: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def fused_head(cfg: TrainConfig) -> None:
    """TRL's fused LM head as a round wants it, set before a trainer adds it to its model."""
    compact_head.install()  # on the CPU the head scores labelled positions only
    # null = the platform's default, as in `training.args.common_args`: a CPU only
    fp32 = not torch.cuda.is_available() if cfg.fp32_lm_head is None else cfg.fp32_lm_head
    if fp32:
        fp32_head.install()  # float32 logits under bf16 autocast
    else:
        fp32_head.restore()


def load_policy(
    model_dir: str | Path, chat_template: str = "model", attn_implementation: str | None = None
) -> tuple[PreTrainedModel, Any]:
    """fp32 master weights whatever the folder's dtype: bf16 weights round away small updates.
    The tokenizer renders chats as the engine does (`prompts.use_chat_template`)."""
    from mbt_online.prompts import use_chat_template

    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, **attn_kwargs(attn_implementation)
    )
    tokenizer = use_chat_template(AutoTokenizer.from_pretrained(str(model_dir)), chat_template)
    return model, tokenizer


def load_reference(
    model_dir: str | Path,
    ref_model_dir: str | Path | None,
    lora: bool,
    bf16: bool,
    attn_implementation: str | None = None,
) -> PreTrainedModel | None:
    """The frozen DPO reference, or None when TRL can derive it without a second copy.

    Full FT needs a separate copy even for "the same model" (the policy's weights move); it is
    loaded in bf16 when training in bf16, since it only runs forward passes.
    """
    same = ref_model_dir is None or Path(ref_model_dir).resolve() == Path(model_dir).resolve()
    if lora and same:
        return None
    path = model_dir if ref_model_dir is None else ref_model_dir
    dtype = torch.bfloat16 if bf16 else torch.float32
    ref = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=dtype, **attn_kwargs(attn_implementation)
    )
    ref.eval()
    return ref


def attn_kwargs(attn_implementation: str | None) -> dict[str, str]:
    """null leaves the choice to transformers (sdpa where it applies)."""
    return {} if attn_implementation is None else {"attn_implementation": attn_implementation}


def fit(trainer: Any, stage: str, n_rows: int, resume: Path | None = None) -> dict[str, float]:
    """Train, from `resume` (the stage's last complete checkpoint) when a killed run left one."""
    trainer.remove_callback(PrinterCallback)  # the loop logs metrics; no per-step dict dumps
    if trainer.args.disable_tqdm:
        trainer.add_callback(ProgressLog(stage))
    trainer.add_callback(StopAtCheckpoint(stage))
    if (job_dir := live_dir()) is not None:  # the wandb mirror tails TRAIN's events
        trainer.add_callback(LiveLog(stage, job_dir))
    start = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return fit_metrics(stage, n_rows, trainer, out, time.perf_counter() - start)


def finish(
    trainer: Any, model_dir: str | Path, out_dir: Path, metrics: dict[str, float]
) -> TrainResult:
    """Gather the full weights (every rank: a collective under FSDP / ZeRO-3), then rank 0 writes
    the adapter (LoRA), the model in the input folder's dtype and the metrics; the others wait
    so nobody reads a half-written folder, and all return the same result."""
    accelerator = trainer.accelerator
    state = gather_state_dict(trainer.model, accelerator)
    model = accelerator.unwrap_model(trainer.model)
    history = list(trainer.state.log_history)
    if accelerator.is_main_process:
        write_model(model, state, trainer.processing_class, model_dir, out_dir)
        write_json_atomic(out_dir / STAGE_HISTORY, history)
        write_metrics(out_dir, metrics)  # last: its presence says the stage is complete
    accelerator.wait_for_everyone()
    adapter_dir = out_dir / "adapter" if hasattr(model, "peft_config") else None
    return TrainResult(out_dir / "model", adapter_dir, metrics, history)


def finished(out_dir: Path) -> TrainResult | None:
    """The stage's result as a completed run left it (metrics are written last), else None."""
    files = [out_dir / METRICS_FILE, out_dir / STAGE_HISTORY, out_dir / "model"]
    if not all(f.exists() for f in files):
        return None
    adapter = out_dir / "adapter"
    return TrainResult(
        out_dir / "model",
        adapter if adapter.is_dir() else None,
        json.loads(files[0].read_text()),
        json.loads(files[1].read_text()),
    )


def nothing_to_train(model_dir: str | Path, out_dir: Path, stage: str) -> TrainResult:
    metrics = {f"train/{stage}_rows": 0.0, f"train/{stage}_steps": 0.0}
    if dist_state().is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_metrics(out_dir, metrics)
    return TrainResult(model_dir=Path(model_dir), adapter_dir=None, metrics=metrics)


def write_metrics(out_dir: Path, metrics: dict[str, float]) -> None:
    write_json_atomic(out_dir / METRICS_FILE, metrics)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Honour `train.threads` for this call only; the caller's setting comes back afterwards."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
