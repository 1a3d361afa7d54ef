"""TRAIN benchmark: TRL's SFT and DPO steps against a minimal PyTorch loop doing the same passes.

One process, the same threads (`train.threads` of the quickstart), the same model and the same
rows: the TRL trainers come from `mbt_online.training.trainer`'s public builders (`sft_trainer`,
`dpo_trainer`), and the minimal loop trains a fresh copy of the same model on the rows TRL itself
tokenized, in the same batches (right-padded, as TRL's collators pad), for the same number of
optimizer steps: forward, completion-only loss (logits only where a label is), backward, gradient
clipping, AdamW. For DPO the loop runs the policy on [chosen; rejected] and the frozen reference
on the same batch (or reads precomputed reference log-probs, after one reference pass over the
pairs), each row cut to `dpo.max_length` as TRL's collator cuts it, then the sigmoid loss plus the
chosen NLL when `dpo.sft_weight` asks for it. Ratios (TRL / minimal) > 1 are TRL's overhead;
`*_setup_s` is the trainer's construction (tokenization, for precompute the reference
pass), which the minimal loop does not repeat. The minimal SFT loop also runs on one thread
(`sft_threads_speedup`): on a model this small a second thread may not pay for itself.
The builders compact TRL's fused LM head to the labelled positions on the CPU
(`mbt_online.training.compact_head`); SFT and precomputed-reference DPO are also timed with the head
as TRL ships it and compact again, back to back (`*_shipped_head_train_s`,
`*_compact_head_train_s`, `*_compact_head_speedup`).

The rows are a round's: world questions, structured-teacher targets (SFT, DPO chosen) and the
unregulated student's traces (DPO rejected). Prints one JSON line.
Usage: `.venv/bin/python scripts/bench_train.py [--ci] [--model M]`.
"""

from __future__ import annotations

import gc
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_common as bc  # noqa: E402

TARGET_OVERHEAD = 2.0


@dataclass(frozen=True)
class Settings:
    sft_rows: int
    dpo_pairs: int
    batch_size: int


FULL = Settings(sft_rows=96, dpo_pairs=64, batch_size=16)
CI = Settings(sft_rows=8, dpo_pairs=8, batch_size=4)


# ---------------------------------------------------------------- rows


def round_rows(n: int) -> list[tuple[list[dict], str, str]]:
    """(prompt messages, teacher target, unregulated trace) for `n` world questions: the target is
    the quickstart teacher's rewrite of that trace, as in a round (prompt about two thirds)."""
    from mbt_online import prompts
    from mbt_online.sim import reasoner
    from mbt_online.teachers.contract import TeachRequest
    from mbt_online.teachers.llm import make_teacher

    cfg = bc.quickstart_config()
    writer = make_teacher(cfg)  # the quickstart's teacher and style
    out = []
    for i, ex in enumerate(bc.examples(n, seed=1)):
        rejected, _ = reasoner.unregulated_trace(ex, random.Random(i), cfg.bootstrap)
        request = TeachRequest(ex, cfg.teacher.mode, rejected)
        chosen = prompts.format_target(writer.teach([request])[0].trace or "", ex.answer)
        out.append((prompts.student_messages(ex), chosen, rejected))
    return out


# ---------------------------------------------------------------- minimal loop


def batches(rows: list[dict], size: int) -> list[list[dict]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def pad_right(seqs: list[list[int]], value: int):
    import torch

    width = max(map(len, seqs))
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs])


def sequence_logps(model: Any, ids: Any, attn: Any, labels: Any) -> Any:
    """Sum of the log-probs of the labelled tokens of each row (the next-token convention)."""
    import torch

    hidden = model.model(input_ids=ids, attention_mask=attn).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    mask = target != -100
    logits = model.lm_head(hidden[mask])  # labelled positions only, as the compact head
    logps = torch.log_softmax(logits.float(), dim=-1)
    picked = logps.gather(-1, target[mask].unsqueeze(-1)).squeeze(-1)
    sums = torch.zeros(ids.shape[0], dtype=picked.dtype).index_add(0, mask.nonzero()[:, 0], picked)
    return sums, mask.sum(-1)


def sft_batch(rows: list[dict], pad: int):
    ids = pad_right([r["input_ids"] for r in rows], pad)
    labels = pad_right([r["labels"] for r in rows], -100)
    attn = pad_right([[1] * len(r["input_ids"]) for r in rows], 0)
    return ids, attn, labels


def dpo_batch(rows: list[dict], pad: int, max_length: int | None):
    """[chosen; rejected] prompt+completion rows, labels on the completion only, each cut to
    `max_length` from the start (TRL's layout and its collator's `keep_start` truncation)."""
    seqs, labels = [], []
    for key in ("chosen_ids", "rejected_ids"):
        for r in rows:
            seqs.append((r["prompt_ids"] + r[key])[:max_length])
            labels.append(([-100] * len(r["prompt_ids"]) + r[key])[:max_length])
    attn = pad_right([[1] * len(s) for s in seqs], 0)
    return pad_right(seqs, pad), attn, pad_right(labels, -100)


def optimizer_step(model: Any, opt: Any, loss: Any, max_norm: float) -> None:
    import torch

    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)


def minimal_sft(model_dir: str, rows: list[dict], hp: Any, pad: int) -> float:
    """Seconds of the SFT steps: mean completion-token cross-entropy per batch."""
    import torch

    from mbt_online.sim.bootstrap import completion_loss  # logits on labelled positions only

    model = load(model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate)
    start = time.perf_counter()
    for batch in batches(rows, hp.batch_size):
        ids, attn, labels = sft_batch(batch, pad)
        loss = completion_loss(model, {"input_ids": ids, "attention_mask": attn, "labels": labels})
        optimizer_step(model, opt, loss, hp.max_grad_norm)
    return time.perf_counter() - start


def minimal_dpo(model_dir: str, rows: list[dict], hp: Any, pad: int, precompute: bool):
    """(reference-pass seconds, step seconds) of DPO with the reference in the loop or read from a
    pass made once before training."""
    import torch
    import torch.nn.functional as F

    model, ref = load(model_dir), load(model_dir).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate)
    groups = batches(rows, hp.batch_size)
    ref_s, ref_logps = 0.0, []
    if precompute:
        start = time.perf_counter()
        with torch.no_grad():
            ref_logps = [sequence_logps(ref, *dpo_batch(b, pad, hp.max_length))[0] for b in groups]
        ref_s = time.perf_counter() - start
    start = time.perf_counter()
    for i, batch in enumerate(groups):
        ids, attn, labels = dpo_batch(batch, pad, hp.max_length)
        logps, counts = sequence_logps(model, ids, attn, labels)
        if precompute:
            ref_lp = ref_logps[i]
        else:
            with torch.no_grad():
                ref_lp = sequence_logps(ref, ids, attn, labels)[0]
        chosen, rejected = logps.chunk(2)
        ref_chosen, ref_rejected = ref_lp.chunk(2)
        margin = (chosen - ref_chosen) - (rejected - ref_rejected)
        loss = -F.logsigmoid(hp.beta * margin).mean()
        if hp.sft_weight > 0:
            loss = loss + hp.sft_weight * (-chosen / counts.chunk(2)[0]).mean()
        optimizer_step(model, opt, loss, hp.max_grad_norm)
    return ref_s, time.perf_counter() - start


def load(model_dir: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


# ---------------------------------------------------------------- TRL


def timed_precompute() -> dict[str, float]:
    """Time spent in TRL's reference pass over the pairs (inside the trainer's constructor)."""
    from trl import DPOTrainer

    spent = {"s": 0.0}
    original = DPOTrainer._precompute_ref_logps

    def wrapper(self: Any, *args: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self, *args, **kw)
        finally:
            spent["s"] += time.perf_counter() - start

    DPOTrainer._precompute_ref_logps = wrapper
    return spent


def trl_run(build: Any) -> tuple[float, float, Any]:
    """(construction seconds, `train()` seconds, the trainer)."""
    from transformers.trainer_callback import PrinterCallback

    setup_s, trainer = bc.timed(build)
    trainer.remove_callback(PrinterCallback)
    train_s, _ = bc.timed(trainer.train)
    return setup_s, train_s, trainer


def padding_free(trainer: Any) -> Any:
    """The same SFT trainer with TRL's padding-free collator (rows flattened into one sequence,
    positions restarting per row; transformers' SDPA masks read the boundaries from them)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    trainer.padding_free = True
    trainer.data_collator = DataCollatorForLanguageModeling(
        pad_token_id=trainer.processing_class.pad_token_id, padding_free=True
    )
    return trainer


def shipped_head(trainer: Any) -> Any:
    """The trainer with TRL's own head: on the CPU it scores every position, prompt included."""
    from mbt_online.training import compact_head

    compact_head.restore()
    return trainer


def head_runs(build: Any) -> tuple[float, float]:
    """`train()` seconds with TRL's own head, then with the compact one, back to back (the first
    trainer of a process also pays for warm-up: the pair excludes it)."""
    from mbt_online.training import compact_head

    try:
        _, shipped_s, trainer = trl_run(lambda: shipped_head(build()))
    finally:
        compact_head.install()
    del trainer
    gc.collect()
    _, compact_s, trainer = trl_run(build)
    del trainer
    gc.collect()
    return shipped_s, compact_s


def train_config(s: Settings, precompute: bool) -> Any:
    """The quickstart's TRAIN settings, one epoch, the benchmark's batch size."""
    cfg = bc.quickstart_config().train
    sft = cfg.sft.model_copy(update={"epochs": 1.0, "batch_size": s.batch_size, "grad_accum": 1})
    dpo_update = {"epochs": 1.0, "batch_size": s.batch_size, "grad_accum": 1}
    if "precompute_ref_log_probs" in type(cfg.dpo).model_fields:
        dpo_update["precompute_ref_log_probs"] = precompute
    dpo = cfg.dpo.model_copy(update=dpo_update)
    return cfg.model_copy(update={"sft": sft, "dpo": dpo})


# ---------------------------------------------------------------- main


def main() -> int:
    ap = bc.base_parser(__doc__.splitlines()[0])
    args = ap.parse_args()
    s = CI if args.ci else FULL
    result: dict[str, Any] = {"bench": "train", **bc.machine()}
    with bc.scratch("bench-train-") as work:
        result.update(measure(args, s, work))
    bc.emit(bc.rounded(result), args.out)
    return 0


def measure(args: Any, s: Settings, work: Path) -> dict[str, Any]:
    import torch

    from mbt_online.training.trainer import dpo_dataset, sft_dataset, sft_trainer

    label, path = bc.resolve_model(args.model, args.ci, work)
    threads = bc.quickstart_config().train.threads
    if threads:
        torch.set_num_threads(threads)
    rows = round_rows(max(s.sft_rows, s.dpo_pairs))
    sft_rows = sft_dataset((p, c) for p, c, _ in rows[: s.sft_rows])
    pairs = dpo_dataset(rows[: s.dpo_pairs])
    out: dict[str, Any] = {
        "model": label,
        "threads": torch.get_num_threads(),
        "sft_rows": s.sft_rows,
        "dpo_pairs": s.dpo_pairs,
        "batch_size": s.batch_size,
        **bc.peaks(args.ci),
    }
    bc.log(f"bench_train: {label}, {s.sft_rows} SFT rows, {s.dpo_pairs} pairs")
    cfg = train_config(s, precompute=False)

    def sft(tag: str, wrap: Any = lambda t: t) -> Any:
        return trl_run(lambda: wrap(sft_trainer(path, sft_rows, cfg, 0, work / tag)))

    setup, train_s, trainer = sft("sft")
    tokenized = list(trainer.train_dataset)
    pad = trainer.processing_class.pad_token_id
    out.update(sft_steps=trainer.state.global_step, trl_sft_setup_s=setup, trl_sft_train_s=train_s)
    out["sft_tokens"] = sum(len(r["input_ids"]) for r in tokenized)
    del trainer
    gc.collect()
    _, out["trl_sft_padding_free_train_s"], trainer = sft("sft-pf", padding_free)
    del trainer
    shipped, compact = head_runs(lambda: sft_trainer(path, sft_rows, cfg, 0, work / "sft-head"))
    out.update(trl_sft_shipped_head_train_s=shipped, trl_sft_compact_head_train_s=compact)
    out["sft_compact_head_speedup"] = shipped / compact
    out["min_sft_s"] = minimal_sft(path, tokenized, cfg.sft, pad)
    # the same loop on one thread: whether the second core helps a model this size at all
    torch.set_num_threads(1)
    out["min_sft_1thread_s"] = minimal_sft(path, tokenized, cfg.sft, pad)
    torch.set_num_threads(out["threads"])
    out["sft_threads_speedup"] = out["min_sft_1thread_s"] / out["min_sft_s"]
    out["sft_overhead"] = out["trl_sft_train_s"] / out["min_sft_s"]
    out["sft_padding_free_vs_min"] = out["trl_sft_padding_free_train_s"] / out["min_sft_s"]
    out["sft_overhead_with_setup"] = (out["trl_sft_setup_s"] + out["trl_sft_train_s"]) / out[
        "min_sft_s"
    ]
    shape = bc.model_shape(path)
    # forward + backward = 3 forward passes over every row's tokens
    sft_flops = 3 * sum(shape.prefill_flops(len(r["input_ids"])) for r in tokenized)
    out.update(efficiency("sft", sft_flops, out, out["peak_fp32_gflops"]))
    gc.collect()
    out.update(dpo(path, pairs, s, work, shape, out["peak_fp32_gflops"]))
    out["dpo_padding_free"] = "unsupported: TRL 1.16 DPO falls back to padding"
    stage_trl = out["trl_sft_train_s"] + out["trl_dpo_train_s"]
    stage_min = out["min_sft_s"] + out["min_dpo_s"]
    out["train_overhead"] = stage_trl / stage_min
    setup = out["trl_sft_setup_s"] + out["trl_dpo_setup_s"]
    out["train_overhead_with_setup"] = (stage_trl + setup) / stage_min
    out["target_overhead"] = TARGET_OVERHEAD
    out["target_met"] = out["train_overhead"] <= TARGET_OVERHEAD
    return out


def efficiency(tag: str, flops: float, out: dict[str, Any], peak: float) -> dict[str, float]:
    """Model GFLOP/s of the minimal loop and of TRL for the same passes, and of the fp32 peak."""
    res: dict[str, float] = {}
    for side, key in (("min", f"min_{tag}_s"), ("trl", f"trl_{tag}_train_s")):
        rate = flops / out[key] / 1e9
        res[f"{side}_{tag}_gflops"] = rate
        res[f"{side}_{tag}_vs_fp32_peak"] = bc.fraction(rate, peak)
    return res


def dpo_flops(rows: list[dict], shape: bc.Shape, max_length: int | None) -> float:
    """Policy forward + backward (3 passes) and reference forward (1) over chosen and rejected,
    each as trained (cut to `max_length`)."""
    lengths = [
        len(r["prompt_ids"]) + len(r[key]) for r in rows for key in ("chosen_ids", "rejected_ids")
    ]
    return 4 * sum(shape.prefill_flops(min(n, max_length) if max_length else n) for n in lengths)


def dpo(
    path: str, pairs: Any, s: Settings, work: Path, shape: bc.Shape, peak: float
) -> dict[str, Any]:
    """DPO with the reference in the loop, then with precomputed reference log-probs."""
    from mbt_online.training.trainer import dpo_trainer

    out: dict[str, Any] = {}
    spent = timed_precompute()
    for tag, precompute in (("dpo", False), ("dpo_precomputed", True)):
        cfg = train_config(s, precompute)
        spent["s"] = 0.0
        setup, train_s, trainer = trl_run(
            lambda cfg=cfg, tag=tag: dpo_trainer(path, None, pairs, cfg, 0, work / tag)
        )
        rows = list(trainer.train_dataset)
        pad = trainer.processing_class.pad_token_id
        applied = bool(getattr(trainer, "precompute_ref_logps", False))
        out.update(
            {
                f"trl_{tag}_setup_s": setup,
                f"trl_{tag}_train_s": train_s,
                f"trl_{tag}_ref_pass_s": spent["s"],
                f"{tag}_steps": trainer.state.global_step,
            }
        )
        del trainer
        gc.collect()
        if precompute and not applied:
            out["dpo_precompute_supported"] = False  # the builder does not pass the setting yet
            continue
        ref_s, step_s = minimal_dpo(path, rows, cfg.dpo, pad, precompute)
        out[f"min_{tag}_s"] = step_s
        out[f"min_{tag}_ref_pass_s"] = ref_s
        trl_total = train_s + spent["s"]
        out[f"{tag}_overhead"] = trl_total / (step_s + ref_s)
        if not precompute:
            out.update(efficiency("dpo", dpo_flops(rows, shape, cfg.dpo.max_length), out, peak))
        gc.collect()
    out.setdefault("dpo_precompute_supported", True)
    cfg = train_config(s, precompute=True)  # the quickstart's DPO
    shipped, compact = head_runs(lambda: dpo_trainer(path, None, pairs, cfg, 0, work / "dpo-head"))
    out["trl_dpo_precomputed_shipped_head_train_s"] = shipped
    out["trl_dpo_precomputed_compact_head_train_s"] = compact
    out["dpo_compact_head_speedup"] = shipped / compact
    return out


if __name__ == "__main__":
    sys.exit(main())
