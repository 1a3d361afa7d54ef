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

from pathlib import Path
from typing import Any

from datasets import Dataset
from trl import DPOTrainer, SFTTrainer

from mbt_online.config import TrainConfig
from mbt_online.contracts import Trained, TrainJob
from mbt_online.rundir.stages import LOG_HISTORY
from mbt_online.training.args import dpo_args, peft_config, sft_args
from mbt_online.training.grpo import GRPOSampling, train_grpo
from mbt_online.training.history import (
    ProgressLog,
    dpo_metrics,
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
    dist_state,
    last_checkpoint,
    trainer_dir,
)
from mbt_online.training.steps import (
    METRICS_FILE,
    STAGE_HISTORY,
    TrainResult,
    finish,
    finished,
    fit,
    free_memory,
    fused_head,
    load_policy,
    load_reference,
    nothing_to_train,
    torch_threads,
)
from mbt_online.versions import WrittenFor

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
        return nothing_to_train(model_dir, out_dir, "sft")
    if cfg.save_steps and (done := finished(out_dir)) is not None:
        return done  # a resumed TRAIN whose sft had completed before the kill
    state = dist_state()
    with torch_threads(cfg.threads), trainer_dir(out_dir, cfg.save_steps, state) as work:
        trainer = sft_trainer(
            model_dir, in_memory(rows), cfg, seed, work, bf16=bf16, chat_template=chat_template
        )
        metrics = fit(trainer, "sft", len(rows), last_checkpoint(work))
        metrics.update(sft_metrics(trainer.state.log_history))
        result = finish(trainer, model_dir, out_dir, metrics)
        del trainer
    free_memory()
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
        return nothing_to_train(model_dir, out_dir, "dpo")
    if cfg.save_steps and (done := finished(out_dir)) is not None:
        return done  # a resumed TRAIN whose dpo had completed before the kill
    state = dist_state()
    with torch_threads(cfg.threads), trainer_dir(out_dir, cfg.save_steps, state) as work:
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
        metrics = fit(trainer, "dpo", len(pairs), last_checkpoint(work))
        metrics.update(dpo_metrics(trainer.state.log_history))
        result = finish(trainer, model_dir, out_dir, metrics)
        del trainer
    free_memory()
    return result


class TrlTrainer:
    """The loop's `Trainer` in a real run: SFT, DPO then GRPO with TRL, each from the model the
    step before it left; a step with no rows is skipped (its model is the one it was given).

    `train(job)` is also what each rank of a multi-process TRAIN launch calls: every rank
    returns the same `Trained`; rank 0 alone writes the folders and `log_history.jsonl`.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        bf16: bool = False,
        chat_template: str = "model",
        grpo: GRPOSampling | None = None,
    ) -> None:
        # chat_template: student.chat_template, so targets render as the engine renders prompts
        self.cfg, self.bf16, self.chat_template = cfg, bf16, chat_template
        self.grpo = grpo  # how GRPO's samples were drawn and weighed (a GRPO job needs it)

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
        if len(job.grpo):
            if self.grpo is None:
                raise ValueError("a GRPO job needs the trainer's grpo sampling settings")
            out = job.out_dir / "grpo"
            res = train_grpo(model, job.grpo, out, self.cfg, job.seed, self.grpo, **opts)
            adapter_base, model, adapter = model, str(res.model_dir), res.adapter_dir
            metrics.update(res.metrics)
            history += history_rows("grpo", res.history)
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
    fused_head(cfg)
    model, tokenizer = load_policy(model_dir, chat_template, cfg.attn_implementation)
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
    fused_head(cfg)
    # TRL precomputes in __init__, before end_dpo_turns cuts the rows: its values would belong to
    # other sequences (first-step loss 3.5, not 2.3, on a quickstart round). Off there, run below
    # (on a TRL outside PRECOMPUTE's range: not at all, TRL scores the reference every step).
    precompute, args.precompute_ref_log_probs = args.precompute_ref_log_probs, False
    model, tokenizer = load_policy(model_dir, chat_template, cfg.attn_implementation)
    ref = load_reference(model_dir, ref_model_dir, lora, args.bf16, cfg.attn_implementation)
    trainer = DPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=pairs,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora) if lora else None,
    )
    trainer.train_dataset = end_dpo_turns(trainer.train_dataset, tokenizer.eos_token_id)
    if precompute and PRECOMPUTE.holds():
        _precompute_reference(trainer)
    return trainer


# TRL's private reference pass that `_precompute_reference` calls, as TRL 1.16 defines it
PRECOMPUTE = WrittenFor(
    "trl",
    ">=1.16,<1.17",
    "the reference log-probs precomputed through DPOTrainer._precompute_ref_logps",
    "TRL's DPOTrainer computes the reference log-probs at every step instead (same values)",
)


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


# ---------------------------------------------------------------- running and saving
