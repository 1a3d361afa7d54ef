"""SFT and DPO rounds with TRL: LoRA through PEFT or full fine-tuning, one model folder out.

Every call starts from a model folder on disk and ends with a model folder on disk
(`out_dir/model`, merged weights + tokenizer, safetensors), so the generator can reload the new
weights in place (vLLM `reload_weights`, or a restart) and a killed run can resume from files.
With LoRA the adapter is also kept (`out_dir/adapter`) for the engine's LoRA hand-off.

Nothing else of the trainer survives: checkpoints are off, TRL's output dir is a temporary folder,
and the only other file is a small `train_metrics.json`. Metrics come back as `train/*` floats
for the loop to log; TRL itself reports nowhere (`report_to=[]`).

Empty data is a normal case: a round may have no failing traces to rewrite or no pair that clears
the margin. Then nothing is trained and the result points at the INPUT model folder (no copy),
with `train/<stage>_rows = 0` in its metrics.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig as PeftLoraConfig
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.trainer_callback import PrinterCallback, TrainerCallback
from trl import DPOConfig as TrlDPOConfig
from trl import DPOTrainer, SFTTrainer
from trl import SFTConfig as TrlSFTConfig

from mbt_online.config import LoraConfig, TrainConfig
from mbt_online.contracts import Trained, TrainJob
from mbt_online.rundir.atomic import write_dir_atomic, write_json_atomic
from mbt_online.scoring.stats import mean

Messages = list[dict[str, str]]
METRICS_FILE = "train_metrics.json"
log = logging.getLogger("mbt_online")
SCRATCH = "trainer-scratch"  # TRL output_dir; removed when the stage ends


@dataclass
class TrainResult:
    """Where the trained model lives and what training measured.

    `model_dir` is a complete HF folder (merged when LoRA) — or the input folder when there was
    nothing to train; `adapter_dir` is the PEFT adapter, only for `method == "lora"` runs.
    """

    model_dir: Path
    adapter_dir: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- dataset rows


def sft_dataset(items: Iterable[tuple[Messages, str]]) -> Dataset:
    """(prompt messages, assistant text) -> TRL's conversational prompt/completion rows."""
    rows = [
        {"prompt": list(prompt), "completion": [{"role": "assistant", "content": text}]}
        for prompt, text in items
    ]
    return Dataset.from_list(rows)


def dpo_dataset(
    items: Iterable[tuple[Messages, str, str]], rejected_truncated: Iterable[bool] | None = None
) -> Dataset:
    """(prompt messages, chosen text, rejected text) -> TRL's conversational preference rows;
    `rejected_truncated` flags rejected traces that hit the length cap (see `_end_dpo_turns`)."""
    rows = [
        {
            "prompt": list(prompt),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
        for prompt, chosen, rejected in items
    ]
    if rejected_truncated is not None:
        for row, flag in zip(rows, rejected_truncated, strict=True):
            row["rejected_truncated"] = bool(flag)
    return Dataset.from_list(rows)


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

    `bf16` asks for bf16 autocast (the loop passes `student.dtype == "bfloat16"`); it is used
    only where the device supports it. Master weights stay fp32 either way.
    """
    out_dir = Path(out_dir)
    if len(rows) == 0:
        return _nothing_to_train(model_dir, out_dir, "sft")
    with _torch_threads(cfg.threads), _scratch(out_dir) as tmp:
        trainer = sft_trainer(
            model_dir, _in_memory(rows), cfg, seed, tmp, bf16=bf16, chat_template=chat_template
        )
        metrics = _fit(trainer, "sft", len(rows))
        metrics.update(_sft_metrics(trainer.state.log_history))
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
    with _torch_threads(cfg.threads), _scratch(out_dir) as tmp:
        trainer = dpo_trainer(
            model_dir,
            ref_model_dir,
            _in_memory(pairs),
            cfg,
            seed,
            tmp,
            bf16=bf16,
            chat_template=chat_template,
        )
        metrics = _fit(trainer, "dpo", len(pairs))
        metrics.update(_dpo_metrics(trainer.state.log_history))
        result = _finish(trainer, model_dir, out_dir, metrics)
        del trainer
    _free_memory()
    return result


class TrlTrainer:
    """The loop's `Trainer` in a real run: SFT then DPO with TRL, each from the model the step
    before it left; a step with no rows is skipped (its model is the one it was given)."""

    def __init__(
        self, cfg: TrainConfig, *, bf16: bool = False, chat_template: str = "model"
    ) -> None:
        # chat_template: student.chat_template, so targets render as the engine renders prompts
        self.cfg, self.bf16, self.chat_template = cfg, bf16, chat_template

    def train(self, job: TrainJob) -> Trained:
        model, adapter, adapter_base = job.start_model, None, job.start_model
        metrics: dict[str, float] = {}
        if len(job.sft):
            res = train_sft(
                model,
                job.sft,
                job.out_dir / "sft",
                self.cfg,
                job.seed,
                bf16=self.bf16,
                chat_template=self.chat_template,
            )
            adapter_base, model, adapter = model, str(res.model_dir), res.adapter_dir
            metrics.update(res.metrics)
        if len(job.pairs):
            ref = job.reference or model
            res = train_dpo(
                model,
                ref,
                job.pairs,
                job.out_dir / "dpo",
                self.cfg,
                job.seed,
                bf16=self.bf16,
                chat_template=self.chat_template,
            )
            adapter_base, model, adapter = model, str(res.model_dir), res.adapter_dir
            metrics.update(res.metrics)
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
    hp = cfg.sft
    args = TrlSFTConfig(
        **_common_args(output_dir, seed, bf16),
        learning_rate=hp.learning_rate,
        num_train_epochs=hp.epochs,
        per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.grad_accum,
        warmup_steps=_warmup(hp.warmup_ratio),
        lr_scheduler_type=hp.lr_scheduler,
        max_grad_norm=hp.max_grad_norm,
        max_length=hp.max_length,
        # TRL's default (None) already means completion-only for prompt/completion data;
        # pinning it keeps prompts out of the loss if that default ever changes.
        completion_only_loss=True,
    )
    model, tokenizer = _load_policy(model_dir, chat_template)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        peft_config=_peft_config(cfg.lora) if cfg.method == "lora" else None,
    )
    trainer.train_dataset = _end_sft_turns(trainer.train_dataset, tokenizer.eos_token_id)
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
    hp = cfg.dpo
    lora = cfg.method == "lora"
    args = TrlDPOConfig(
        **_common_args(output_dir, seed, bf16),
        learning_rate=hp.learning_rate,
        num_train_epochs=hp.epochs,
        per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.grad_accum,
        max_grad_norm=hp.max_grad_norm,
        max_length=hp.max_length,
        beta=hp.beta,
        **_dpo_loss(hp.sft_weight),
    )
    model, tokenizer = _load_policy(model_dir, chat_template)
    trainer = DPOTrainer(
        model=model,
        ref_model=_load_reference(model_dir, ref_model_dir, lora, args.bf16),
        args=args,
        train_dataset=pairs,
        processing_class=tokenizer,
        peft_config=_peft_config(cfg.lora) if lora else None,
    )
    trainer.train_dataset = _end_dpo_turns(trainer.train_dataset, tokenizer.eos_token_id)
    return trainer


def _dpo_loss(sft_weight: float) -> dict[str, Any]:
    """TRL's loss settings: plain DPO, or DPO plus NLL on the chosen trace (RPO) when weighted."""
    if sft_weight <= 0:
        return {"loss_type": ["sigmoid"]}
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, sft_weight]}


def _through_end_of_turn(ids: list[int], eos_id: int, keep: bool = True) -> list[int]:
    """`ids` up to its last end-of-turn token, with or without it."""
    if eos_id not in ids:
        return ids
    end = len(ids) - 1 - ids[::-1].index(eos_id)
    return ids[: end + 1] if keep else ids[:end]


def _end_sft_turns(tokenized: Dataset, eos_id: int | None) -> Dataset:
    """Train each completion through its end-of-turn token and no further.

    Chat templates put text after the end-of-turn token (`<|im_end|>` then a newline); the student
    never generates it, yet training on it taught a small student to write a newline where it
    should stop, and it rambled after `</answer>` (P(end) there fell from 1.00 to 0.69 in three
    SFT rounds). Cut only when that end-of-turn is supervised, i.e. the completion's own.
    """
    if eos_id is None:
        return tokenized

    def cut(row: dict[str, Any]) -> dict[str, Any]:
        n = len(_through_end_of_turn(row["input_ids"], eos_id))
        if n < len(row["input_ids"]) and row["labels"][n - 1] != -100:
            row["input_ids"], row["labels"] = row["input_ids"][:n], row["labels"][:n]
        return row

    return tokenized.map(cut)


def _end_dpo_turns(tokenized: Dataset, eos_id: int | None) -> Dataset:
    """Chosen and rejected end at their end-of-turn token, as in `_end_sft_turns`; a rejected trace
    flagged `rejected_truncated` (it ran into the length cap) loses that token too: rendered as a
    chat turn it gets one it never generated, and DPO would push it down, teaching not to stop."""
    if eos_id is None:
        return tokenized
    flagged = "rejected_truncated" in tokenized.column_names

    def cut(row: dict[str, Any]) -> dict[str, Any]:
        row["chosen_ids"] = _through_end_of_turn(row["chosen_ids"], eos_id)
        unfinished = flagged and row["rejected_truncated"]
        row["rejected_ids"] = _through_end_of_turn(row["rejected_ids"], eos_id, not unfinished)
        return row

    return tokenized.map(cut)


def _in_memory(rows: Dataset) -> Dataset:
    """A copy with no backing files: TRL's `map` calls would otherwise drop tokenization caches
    (cache-*.arrow) into the folder the rows were loaded from, i.e. the loop's build stage."""
    if not rows.cache_files:
        return rows
    return Dataset.from_dict(rows.to_dict(), features=rows.features)


def _common_args(output_dir: str | Path, seed: int, bf16: bool) -> dict[str, Any]:
    """Arguments shared by SFT and DPO: no checkpoints, no reporting, a log line per step."""
    cuda = torch.cuda.is_available()
    return {
        "output_dir": str(output_dir),
        "seed": seed,
        "data_seed": seed,
        # TRL defaults bf16 to True; here it is opt-in and only where the hardware has it.
        "bf16": bf16 and _bf16_supported(),
        "use_cpu": not cuda,
        # Checkpointing buys GPU memory with ~20-30% more compute; CPU runs have RAM to spare.
        "gradient_checkpointing": cuda,
        "save_strategy": "no",
        "report_to": [],
        "logging_steps": 1,  # per-step history: first/last/mean loss come from it
        "disable_tqdm": not sys.stderr.isatty(),
        "dataloader_num_workers": 0,
    }


def _bf16_supported() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return True  # CPU autocast has bf16 kernels (fast with AVX-512 BF16 / AMX, correct anywhere)


def _warmup(ratio: float) -> float:
    """transformers 5 reads a float warmup in [0, 1) as a ratio of steps; 1.0 would mean 1 step."""
    return min(ratio, 0.999)


def _peft_config(lora: LoraConfig) -> PeftLoraConfig:
    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def _load_policy(
    model_dir: str | Path, chat_template: str = "model"
) -> tuple[PreTrainedModel, Any]:
    """fp32 master weights whatever the folder's dtype: bf16 weights round away small updates.
    The tokenizer renders chats as the engine does (`prompts.use_chat_template`)."""
    from mbt_online.prompts import use_chat_template

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    tokenizer = use_chat_template(AutoTokenizer.from_pretrained(str(model_dir)), chat_template)
    return model, tokenizer


def _load_reference(
    model_dir: str | Path, ref_model_dir: str | Path | None, lora: bool, bf16: bool
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
    ref = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    ref.eval()
    return ref


# ---------------------------------------------------------------- running and saving


class ProgressLog(TrainerCallback):
    """A log line every `every_s` seconds and at the last step, for runs without a terminal.

    Without a TTY the trainer's progress bar is off (it would fill log files with redraws), and a
    SmolLM2 stage on a CPU trains for 20 minutes: `run.log` should still say how far it is.
    """

    def __init__(self, stage: str, every_s: float = 60.0) -> None:
        self.stage, self.every_s = stage, every_s
        self.start = self.last = time.perf_counter()

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any
    ) -> None:
        now, step, total = time.perf_counter(), state.global_step, state.max_steps
        if not logs or "loss" not in logs or (now - self.last < self.every_s and step < total):
            return
        self.last, elapsed = now, now - self.start
        eta = elapsed / step * (total - step) if step else float("nan")
        log.info(
            "%s step %d/%d loss %.4f (%.0fs, about %.0fs left)",
            self.stage,
            step,
            total,
            logs["loss"],
            elapsed,
            eta,
        )


def _fit(trainer: Any, stage: str, n_rows: int) -> dict[str, float]:
    trainer.remove_callback(PrinterCallback)  # the loop logs metrics; no per-step dict dumps
    if trainer.args.disable_tqdm:
        trainer.add_callback(ProgressLog(stage))
    start = time.perf_counter()
    out = trainer.train()
    return {
        f"train/{stage}_rows": float(n_rows),
        f"train/{stage}_steps": float(trainer.state.global_step),
        f"train/{stage}_seconds": time.perf_counter() - start,
        f"train/{stage}_loss": float(out.training_loss),
    }


def _step_logs(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step entries of `log_history` (the final summary entry has no `loss`)."""
    return [h for h in history if "loss" in h]


def _mean(logs: list[dict[str, Any]], key: str) -> float:
    """NaN when no step logged `key`: a missing quantity, not a zero."""
    return mean((float(h[key]) for h in logs if key in h), empty=float("nan"))


def _sft_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    steps = _step_logs(history)
    return {
        "train/sft_loss_first": float(steps[0]["loss"]),
        "train/sft_loss_last": float(steps[-1]["loss"]),
        "train/sft_token_accuracy": _mean(steps[-1:], "mean_token_accuracy"),
        "train/sft_tokens": _mean(steps[-1:], "num_tokens"),
    }


def _dpo_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    """Run means of TRL's per-step DPO stats (rewards: beta-scaled log-ratios vs the reference)."""
    steps = _step_logs(history)
    return {
        "train/dpo_loss_first": float(steps[0]["loss"]),
        "train/dpo_loss_last": float(steps[-1]["loss"]),
        "train/dpo_reward_margin": _mean(steps, "rewards/margins"),
        "train/dpo_reward_margin_last": _mean(steps[-1:], "rewards/margins"),
        "train/dpo_accuracy": _mean(steps, "rewards/accuracies"),
        "train/dpo_reward_chosen": _mean(steps, "rewards/chosen"),
        "train/dpo_reward_rejected": _mean(steps, "rewards/rejected"),
    }


def _finish(
    trainer: Any, model_dir: str | Path, out_dir: Path, metrics: dict[str, float]
) -> TrainResult:
    """Save adapter (LoRA), then the full model in the input folder's dtype, then the metrics.

    Under a multi-process launch (DDP) every rank holds the same weights; only the main one
    writes, and the others wait so nobody reads a half-written folder.
    """
    accelerator = trainer.accelerator
    model = accelerator.unwrap_model(trainer.model)
    is_lora = hasattr(model, "merge_and_unload")  # a PeftModel
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save(model, trainer.processing_class, model_dir, out_dir)
        _write_metrics(out_dir, metrics)
    accelerator.wait_for_everyone()
    adapter_dir = out_dir / "adapter" if is_lora else None
    return TrainResult(model_dir=out_dir / "model", adapter_dir=adapter_dir, metrics=metrics)


def _save(model: Any, tokenizer: Any, model_dir: str | Path, out_dir: Path) -> None:
    if hasattr(model, "merge_and_unload"):
        write_dir_atomic(out_dir / "adapter", model.save_pretrained)
        model = model.merge_and_unload()
    model = model.to("cpu", dtype=_saved_dtype(model_dir))

    def save_full(path: Path) -> None:
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)

    write_dir_atomic(out_dir / "model", save_full)


def _saved_dtype(model_dir: str | Path) -> torch.dtype:
    """Keep the folder format the run started with (a bf16 checkpoint stays bf16 on disk)."""
    dtype = getattr(AutoConfig.from_pretrained(str(model_dir)), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def _nothing_to_train(model_dir: str | Path, out_dir: Path, stage: str) -> TrainResult:
    metrics = {f"train/{stage}_rows": 0.0, f"train/{stage}_steps": 0.0}
    _write_metrics(_mkdir(out_dir), metrics)
    return TrainResult(model_dir=Path(model_dir), adapter_dir=None, metrics=metrics)


def _write_metrics(out_dir: Path, metrics: dict[str, float]) -> None:
    write_json_atomic(out_dir / METRICS_FILE, metrics)


@contextlib.contextmanager
def _scratch(out_dir: Path) -> Iterator[str]:
    """The trainer's scratch folder, at a fixed place so a resumed stage clears what a killed one
    left there (a random temp name would be orphaned beside the stage's output)."""
    tmp = out_dir / SCRATCH
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield str(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


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
