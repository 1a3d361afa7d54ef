"""SFT and DPO rounds with TRL: LoRA through PEFT or full fine-tuning, one model folder out.

Every call starts from a model folder on disk and ends with a model folder on disk
(`out_dir/model`, merged weights + tokenizer, safetensors), so the generator can reload the new
weights in place (vLLM `reload_weights`, or a restart) and a killed run can resume from files.
With LoRA the adapter is also kept (`out_dir/adapter`) for the engine's LoRA hand-off.

The same code runs in one process (the loop's in-process TRAIN) and in every rank of a launch
(`accelerate launch` / torchrun: DDP, FSDP, ZeRO): the full state dict is gathered and rank 0
alone writes (`training.saving`); every rank returns the same result. Besides the model, a stage
leaves `train_metrics.json`, and the job `log_history.jsonl` (one row per TRL log event). TRL's
own output folder is scratch, or with `train.save_steps` a checkpoint folder that a killed stage
resumes from; either is removed when the stage completes. TRL reports nowhere (`report_to=[]`).

Empty data is a normal case: a round may have no failing traces to rewrite or no pair that clears
the margin. Then nothing is trained and the result points at the INPUT model folder (no copy),
with `train/<stage>_rows = 0` in its metrics.
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
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.trainer_callback import PrinterCallback
from trl import DPOTrainer, SFTTrainer

from mbt_online.config import TrainConfig
from mbt_online.contracts import Trained, TrainJob
from mbt_online.rundir.atomic import write_json_atomic
from mbt_online.rundir.stages import LOG_HISTORY
from mbt_online.training import compact_head, fp32_head
from mbt_online.training.args import dpo_args, peft_config, sft_args
from mbt_online.training.history import (
    ProgressLog,
    dpo_metrics,
    fit_metrics,
    history_rows,
    peak_memory_gib,
    reset_peak_memory,
    sft_metrics,
    write_history,
)
from mbt_online.training.rows import (
    dpo_dataset,
    end_dpo_turns,
    end_sft_turns,
    in_memory,
    sft_dataset,
)
from mbt_online.training.saving import (
    SCRATCH,
    StopAtCheckpoint,
    dist_state,
    gather_state_dict,
    last_checkpoint,
    trainer_dir,
    write_model,
)

__all__ = [
    "LOG_HISTORY",
    "METRICS_FILE",
    "SCRATCH",
    "STAGE_HISTORY",
    "ProgressLog",
    "TrainResult",
    "TrlTrainer",
    "dpo_dataset",
    "dpo_trainer",
    "sft_dataset",
    "sft_trainer",
    "train_dpo",
    "train_sft",
]

METRICS_FILE = "train_metrics.json"
STAGE_HISTORY = "log_history.json"  # the stage's TRL log_history, for a resumed TRAIN


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


# ---------------------------------------------------------------- public entry points


def train_sft(
    model_dir: str | Path,
    rows: Dataset,
    out_dir: str | Path,
    cfg: TrainConfig,
    seed: int,
    *,
    bf16: bool = False,
    chat_template: str = "model",
) -> TrainResult:
    """Supervised fine-tuning on prompt/completion rows; loss on completion tokens only.

    `bf16` asks for bf16 autocast (the loop passes `staged.train_bf16`: `train.bf16`, or a
    bfloat16 student); it is used only where the device supports it. Master weights stay fp32
    either way.
    """
    out_dir = Path(out_dir)
    if len(rows) == 0:
        return _nothing_to_train(model_dir, out_dir, "sft")
    if cfg.save_steps and (done := _finished(out_dir)) is not None:
        return done  # a resumed TRAIN whose sft had completed before the kill
    state = dist_state()
    with _torch_threads(cfg.threads), trainer_dir(out_dir, cfg.save_steps, state) as work:
        trainer = sft_trainer(
            model_dir, in_memory(rows), cfg, seed, work, bf16=bf16, chat_template=chat_template
        )
        metrics = _fit(trainer, "sft", len(rows), last_checkpoint(work))
        metrics.update(sft_metrics(trainer.state.log_history))
        result = _finish(trainer, model_dir, out_dir, metrics)
        del trainer
    _free_memory()
    return result


def train_dpo(
    model_dir: str | Path,
    ref_model_dir: str | Path | None,
    pairs: Dataset,
    out_dir: str | Path,
    cfg: TrainConfig,
    seed: int,
    *,
    bf16: bool = False,
    chat_template: str = "model",
) -> TrainResult:
    """DPO on chosen/rejected pairs against a frozen reference.

    `ref_model_dir=None` means "the model being trained, as it is now". With LoRA and that
    reference, no copy is loaded: the adapter-disabled base IS the starting model. Any other
    reference (e.g. the initial student while training round 3's) is loaded explicitly.
    """
    out_dir = Path(out_dir)
    if len(pairs) == 0:
        return _nothing_to_train(model_dir, out_dir, "dpo")
    if cfg.save_steps and (done := _finished(out_dir)) is not None:
        return done  # a resumed TRAIN whose dpo had completed before the kill
    state = dist_state()
    with _torch_threads(cfg.threads), trainer_dir(out_dir, cfg.save_steps, state) as work:
        trainer = dpo_trainer(
            model_dir,
            ref_model_dir,
            in_memory(pairs),
            cfg,
            seed,
            work,
            bf16=bf16,
            chat_template=chat_template,
        )
        metrics = _fit(trainer, "dpo", len(pairs), last_checkpoint(work))
        metrics.update(dpo_metrics(trainer.state.log_history))
        result = _finish(trainer, model_dir, out_dir, metrics)
        del trainer
    _free_memory()
    return result


class TrlTrainer:
    """The loop's `Trainer` in a real run: SFT then DPO with TRL, each from the model the step
    before it left; a step with no rows is skipped (its model is the one it was given).

    `train(job)` is also what each rank of a multi-process TRAIN launch calls: every rank
    returns the same `Trained`; rank 0 alone writes the folders and `log_history.jsonl`.
    """

    def __init__(
        self, cfg: TrainConfig, *, bf16: bool = False, chat_template: str = "model"
    ) -> None:
        # chat_template: student.chat_template, so targets render as the engine renders prompts
        self.cfg, self.bf16, self.chat_template = cfg, bf16, chat_template

    def train(self, job: TrainJob) -> Trained:
        model, adapter, adapter_base = job.start_model, None, job.start_model
        metrics: dict[str, float] = {}
        history: list[dict[str, Any]] = []
        reset_peak_memory()
        opts = {"bf16": self.bf16, "chat_template": self.chat_template}
        if len(job.sft):
            res = train_sft(model, job.sft, job.out_dir / "sft", self.cfg, job.seed, **opts)
            adapter_base, model, adapter = model, str(res.model_dir), res.adapter_dir
            metrics.update(res.metrics)
            history += history_rows("sft", res.history)
        if len(job.pairs):
            ref = job.reference or model
            out = job.out_dir / "dpo"
            res = train_dpo(model, ref, job.pairs, out, self.cfg, job.seed, **opts)
            adapter_base, model, adapter = model, str(res.model_dir), res.adapter_dir
            metrics.update(res.metrics)
            history += history_rows("dpo", res.history)
        metrics["train/peak_memory_gib"] = peak_memory_gib()
        state = dist_state()
        if state.is_main_process:
            job.out_dir.mkdir(parents=True, exist_ok=True)
            write_history(job.out_dir / LOG_HISTORY, history)
        state.wait_for_everyone()
        # a LoRA adapter belongs to the model its step started from, not to the initial student
        pair = (adapter_base, str(adapter)) if adapter else None
        return Trained(model=model, adapter=pair, metrics=metrics)


# ---------------------------------------------------------------- trainer set-up


def _fused_head(cfg: TrainConfig) -> None:
    """TRL's fused LM head as a round wants it, set before a trainer adds it to its model."""
    compact_head.install()  # on the CPU the head scores labelled positions only
    # null = the platform's default, as in `training.args.common_args`: a CPU only
    fp32 = not torch.cuda.is_available() if cfg.fp32_lm_head is None else cfg.fp32_lm_head
    if fp32:
        fp32_head.install()  # float32 logits under bf16 autocast
    else:
        fp32_head.restore()


def sft_trainer(
    model_dir: str | Path,
    rows: Dataset,
    cfg: TrainConfig,
    seed: int,
    output_dir: str | Path,
    *,
    bf16: bool = False,
    chat_template: str = "model",
) -> SFTTrainer:
    """The configured TRL SFT trainer (not yet run): `train_sft`'s engine, open for inspection."""
    args = sft_args(cfg, seed, output_dir, bf16)
    _fused_head(cfg)
    model, tokenizer = _load_policy(model_dir, chat_template, cfg.attn_implementation)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora) if cfg.method == "lora" else None,
    )
    trainer.train_dataset = end_sft_turns(trainer.train_dataset, tokenizer.eos_token_id)
    return trainer


def dpo_trainer(
    model_dir: str | Path,
    ref_model_dir: str | Path | None,
    pairs: Dataset,
    cfg: TrainConfig,
    seed: int,
    output_dir: str | Path,
    *,
    bf16: bool = False,
    chat_template: str = "model",
) -> DPOTrainer:
    """The configured TRL DPO trainer (not yet run), reference model resolved as in `train_dpo`."""
    lora = cfg.method == "lora"
    args = dpo_args(cfg, seed, output_dir, bf16)
    _fused_head(cfg)
    # TRL precomputes in __init__, before end_dpo_turns cuts the rows: its values would belong to
    # other sequences (first-step loss 3.5, not 2.3, on a quickstart round). Off there, run below.
    precompute, args.precompute_ref_log_probs = args.precompute_ref_log_probs, False
    model, tokenizer = _load_policy(model_dir, chat_template, cfg.attn_implementation)
    ref = _load_reference(model_dir, ref_model_dir, lora, args.bf16, cfg.attn_implementation)
    trainer = DPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=pairs,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora) if lora else None,
    )
    trainer.train_dataset = end_dpo_turns(trainer.train_dataset, tokenizer.eos_token_id)
    if precompute:
        _precompute_reference(trainer)
    return trainer


def _precompute_reference(trainer: DPOTrainer) -> None:
    """TRL's own reference pass (`precompute_ref_log_probs`), on the rows as they are trained.

    Uses TRL's private `_precompute_ref_logps` (1.16) so the values, batching and the dataset
    columns the collator reads stay TRL's; the reference model is dropped afterwards, as TRL does.
    """
    from trl.trainer.utils import hash_module

    trainer.args.precompute_ref_log_probs = trainer.precompute_ref_logps = True
    trainer._precompute_model_hash = hash_module(trainer.ref_model or trainer.model)
    size = trainer.args.precompute_ref_batch_size or trainer.args.per_device_train_batch_size
    trainer.train_dataset = trainer._precompute_ref_logps(trainer.train_dataset, "train", size)
    trainer.ref_model = None


def _load_policy(
    model_dir: str | Path, chat_template: str = "model", attn_implementation: str | None = None
) -> tuple[PreTrainedModel, Any]:
    """fp32 master weights whatever the folder's dtype: bf16 weights round away small updates.
    The tokenizer renders chats as the engine does (`prompts.use_chat_template`)."""
    from mbt_online.prompts import use_chat_template

    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, **_attn(attn_implementation)
    )
    tokenizer = use_chat_template(AutoTokenizer.from_pretrained(str(model_dir)), chat_template)
    return model, tokenizer


def _load_reference(
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
    ref = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **_attn(attn_implementation))
    ref.eval()
    return ref


def _attn(attn_implementation: str | None) -> dict[str, str]:
    """null leaves the choice to transformers (sdpa where it applies)."""
    return {} if attn_implementation is None else {"attn_implementation": attn_implementation}


# ---------------------------------------------------------------- running and saving


def _fit(trainer: Any, stage: str, n_rows: int, resume: Path | None = None) -> dict[str, float]:
    """Train, from `resume` (the stage's last complete checkpoint) when a killed run left one."""
    trainer.remove_callback(PrinterCallback)  # the loop logs metrics; no per-step dict dumps
    if trainer.args.disable_tqdm:
        trainer.add_callback(ProgressLog(stage))
    trainer.add_callback(StopAtCheckpoint(stage))
    start = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return fit_metrics(stage, n_rows, trainer, out, time.perf_counter() - start)


def _finish(
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
        _write_metrics(out_dir, metrics)  # last: its presence says the stage is complete
    accelerator.wait_for_everyone()
    adapter_dir = out_dir / "adapter" if hasattr(model, "peft_config") else None
    return TrainResult(out_dir / "model", adapter_dir, metrics, history)


def _finished(out_dir: Path) -> TrainResult | None:
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


def _nothing_to_train(model_dir: str | Path, out_dir: Path, stage: str) -> TrainResult:
    metrics = {f"train/{stage}_rows": 0.0, f"train/{stage}_steps": 0.0}
    if dist_state().is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_metrics(out_dir, metrics)
    return TrainResult(model_dir=Path(model_dir), adapter_dir=None, metrics=metrics)


def _write_metrics(out_dir: Path, metrics: dict[str, float]) -> None:
    write_json_atomic(out_dir / METRICS_FILE, metrics)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
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
