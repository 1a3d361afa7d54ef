"""One rank of the multi-process training tests (tests/test_distributed.py, test_train.py).

Run by `accelerate launch` (DDP through the shipped config), torchrun (FSDP2) or plain python
(the checkpoint kill). Each mode writes what its rank saw to `<out>/rank-<r>.json`, and records
every call of the model writer, so a test can tell which ranks wrote the model folder.

    python _train_worker.py ddp   MODEL_DIR OUT_DIR PER_DEVICE_BATCH
    python _train_worker.py stop  MODEL_DIR OUT_DIR
    python _train_worker.py fsdp2 MODEL_DIR OUT_DIR LORA(0|1)
    python _train_worker.py sft   MODEL_DIR OUT_DIR SAVE_STEPS [KILL_AT_STEP]
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def rows(n: int = 16):
    """`n` distinct SFT rows (the same in every rank)."""
    from mbt_online.training.trainer import sft_dataset

    cities = ["Paris", "Berlin", "Madrid", "Rome", "Vienna", "Lisbon", "Prague", "Dublin"]
    items = []
    for i in range(n):
        city = cities[i % len(cities)]
        question = [{"role": "user", "content": f"Question {i}: which city is the capital?"}]
        items.append((question, f"<think>\nIt is {city}.\n</think>\n\n<answer>{city}</answer>"))
    return sft_dataset(items)


def pairs(n: int = 8):
    from mbt_online.training.trainer import dpo_dataset

    q = [{"role": "user", "content": "Which city is the capital of France?"}]
    return dpo_dataset(
        [
            (q, f"<answer>Paris {i}</answer>", f"Maybe {i}. Maybe. <answer>Rome</answer>")
            for i in range(n)
        ]
    )


def train_config(batch: int, global_batch: int | None, method: str = "full"):
    from mbt_online.config import TrainConfig

    cfg = TrainConfig(method=method, threads=1)
    cfg.lora.r, cfg.lora.alpha = 8, 16
    cfg.sft.learning_rate, cfg.sft.epochs, cfg.sft.warmup_ratio = 3e-3, 1.0, 0.0
    cfg.sft.batch_size, cfg.sft.global_batch_size, cfg.sft.max_grad_norm = batch, global_batch, 1.0
    cfg.dpo.learning_rate, cfg.dpo.epochs = 1e-3, 1.0
    cfg.dpo.batch_size, cfg.dpo.global_batch_size = batch // 2, global_batch and global_batch // 2
    return cfg


def spy_on_writer(out: Path, rank: int) -> None:
    """Record each rank's calls of the model writer (the real one still runs)."""
    import mbt_online.training.steps as train  # `finish` writes every step's model

    real = train.write_model

    def recorded(*args, **kw):
        with open(out / f"writes-{rank}.txt", "a") as f:
            f.write("model\n")
        return real(*args, **kw)

    train.write_model = recorded


def ddp(model_dir: str, out: Path, batch: int) -> None:
    """TrlTrainer.train (SFT then DPO) under the launch's world: global batch = 2 x per-device."""
    from mbt_online.contracts import TrainJob
    from mbt_online.training.trainer import TrlTrainer

    rank = int(os.environ.get("RANK", "0"))
    spy_on_writer(out, rank)
    cfg = train_config(batch, global_batch=8)
    job = TrainJob(start_model=model_dir, sft=rows(), pairs=pairs(), out_dir=out / "train", seed=0)
    trained = TrlTrainer(cfg).train(job)
    import torch.distributed as dist

    info = {
        "rank": rank,
        "world": dist.get_world_size() if dist.is_initialized() else 1,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "model": trained.model,
        "metrics": trained.metrics,
    }
    (out / f"rank-{rank}.json").write_text(json.dumps(info))


def stop(model_dir: str, out: Path) -> None:
    """DDP SFT with a checkpoint every step and a stop requested in rank 1 only: every rank must
    stop at the same checkpoint (none left waiting in a collective)."""
    from mbt_online import preemption
    from mbt_online.training.trainer import train_sft

    rank = int(os.environ.get("RANK", "0"))
    cfg = train_config(4, global_batch=8)
    cfg.save_steps = 1
    if rank == 1:
        preemption.request("SIGUSR1")
    try:
        train_sft(model_dir, rows(), out / "sft", cfg, seed=0)
        info = {"rank": rank, "stopped": None}
    except preemption.Preempted as e:
        info = {"rank": rank, "stopped": e.where}
    (out / f"rank-{rank}.json").write_text(json.dumps(info))


def fsdp2(model_dir: str, out: Path, lora: bool) -> None:
    """Torch FSDP2 on CPU / gloo: shard the tiny model, train 3 steps, gather and save with the
    trainer's own functions (`gather_state_dict` + `write_model`)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mbt_online.training.saving import gather_state_dict, write_model

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    layers = [m for m in model.modules() if type(m).__name__ == "LlamaDecoderLayer"]
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = tok("The capital of France is Paris.", return_tensors="pt")["input_ids"]
    for _ in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    # an independent gather: each DTensor's full value (collective on every rank)
    full = {n: p.full_tensor().detach().clone() for n, p in model.named_parameters()}
    state = gather_state_dict(model)
    with torch.no_grad():
        logits = model(input_ids=ids).logits  # the sharded model's own output, for comparison
    if rank == 0:
        with open(out / f"writes-{rank}.txt", "a") as f:
            f.write("model\n")
        write_model(model, state, tok, model_dir, out)
        torch.save({"logits": logits, "full": full}, out / "reference.pt")
    dist.barrier()
    info = {"rank": rank, "world": dist.get_world_size(), "n_state": len(state)}
    (out / f"rank-{rank}.json").write_text(json.dumps(info))
    dist.destroy_process_group()


def sft(model_dir: str, out: Path, save_steps: int, kill_at: int | None) -> None:
    """One process, SFT with checkpoints every `save_steps`; SIGKILLed when step `kill_at` starts
    (a checkpoint before it is on disk), as a preempted node would be. Records the global step
    this process's first training step started from (0 unless it resumed)."""
    from transformers import Trainer

    from mbt_online.training.trainer import train_sft

    real, started = Trainer.training_step, []

    def step(self, *args, **kw):
        started.append(self.state.global_step)
        if kill_at is not None and self.state.global_step >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *args, **kw)

    Trainer.training_step = step
    cfg = train_config(batch=2, global_batch=None)
    cfg.sft.epochs, cfg.save_steps = 2.0, save_steps
    res = train_sft(model_dir, rows(), out / "sft", cfg, seed=0)
    info = {"metrics": res.metrics, "history": res.history, "first_step": started[0]}
    (out / "rank-0.json").write_text(json.dumps(info))


if __name__ == "__main__":
    mode, model_dir, out_dir = sys.argv[1:4]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if mode == "ddp":
        ddp(model_dir, out, int(sys.argv[4]))
    elif mode == "stop":
        stop(model_dir, out)
    elif mode == "fsdp2":
        fsdp2(model_dir, out, sys.argv[4] == "1")
    elif mode == "sft":
        sft(model_dir, out, int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else None)
    else:
        raise SystemExit(f"unknown mode {mode}")
