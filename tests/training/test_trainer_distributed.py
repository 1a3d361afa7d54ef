"""Training across processes on the CPU (gloo): DDP through `accelerate launch` with the shipped
DDP config, and torch's FSDP2 (`fully_shard`) with the trainer's sharded save.

Both start real processes (tests/_train_worker.py is each rank) and take 20-60 s: marked slow.

What the launchers do on a CPU (accelerate 1.15, checked here and in `test_accelerate_fsdp_...`):
`accelerate launch --cpu --num_processes 2` starts ONE process (its CPU path is mpirun's);
`--multi_gpu` / a MULTI_GPU or FSDP config file starts two through torchrun, and they form a
gloo world only when the Accelerator is asked for the CPU (`TrainingArguments(use_cpu=True)`,
which the trainer sets without CUDA). accelerate's FSDP plugin then does NOT shard: FSDP is only
taken for GPU-like distributed types, so a CPU run with an FSDP config is plain data parallel.
The sharded save is therefore tested under torch's own FSDP2 (torchrun, gloo).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_worker import pairs, rows, train_config
from safetensors.torch import load_file

from mbt_online.contracts import TrainJob

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parents[1] / "support" / "_train_worker.py"
ACCELERATE = Path(sys.executable).parent / "accelerate"
CONFIGS = ROOT / "mbt_online" / "configs" / "accelerate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("WORLD_SIZE", None)
    return env


def _launch(config: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(CONFIGS / f"{config}.yaml"),
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--machine_rank",
        "0",
        "--main_process_port",
        str(free_port()),
        "--mixed_precision",
        "no",
        "--num_cpu_threads_per_process",
        "1",
        *args,
    ]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_port", str(free_port()), *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def _ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]


def _writers(out: Path) -> dict[int, int]:
    """rank -> number of model folders it wrote (from the worker's spy files)."""
    return {int(p.stem.split("-")[1]): len(p.read_text().split()) for p in out.glob("writes-*.txt")}


@pytest.mark.slow
def test_two_cpu_ranks_train_like_one_process_at_twice_the_batch(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """DDP over 2 gloo ranks at per-device batch 4 (global 8, so grad_accum 1) against one
    process at batch 8: the same first step, rank 0 the only writer, one loadable folder."""
    from transformers import AutoModelForCausalLM

    from mbt_online.training.trainer import TrlTrainer

    out = tmp_path / "ddp"
    proc = _launch("ddp", str(WORKER), "ddp", str(tiny_model_dir), str(out), "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = _ranks(out)
    assert (r0["world"], r1["world"], r0["backend"]) == (2, 2, "gloo")
    assert _writers(out) == {0: 2}  # the SFT and the DPO model, by rank 0 alone
    assert r0["model"] == r1["model"] == str(out / "train" / "dpo" / "model")
    assert r0["metrics"]["train/sft_steps"] == r1["metrics"]["train/sft_steps"] == 2.0

    one = tmp_path / "one"
    job = TrainJob(str(tiny_model_dir), sft=rows(), pairs=pairs(), out_dir=one, seed=0)
    single = TrlTrainer(train_config(8, global_batch=8)).train(job).metrics
    assert r0["metrics"]["train/sft_loss_first"] == pytest.approx(
        single["train/sft_loss_first"], abs=1e-4
    )
    assert r0["metrics"]["train/sft_loss_first"] != pytest.approx(
        r0["metrics"]["train/sft_loss_last"], abs=1e-3
    )  # training moved: the comparison is not of two untrained models
    assert r0["metrics"]["train/dpo_steps"] == single["train/dpo_steps"] == 2.0

    saved = AutoModelForCausalLM.from_pretrained(str(out / "train" / "dpo" / "model"))
    start = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    moved = [
        not torch.equal(a, b)
        for a, b in zip(saved.state_dict().values(), start.state_dict().values(), strict=True)
    ]
    assert any(moved)
    history = [
        json.loads(x) for x in (out / "train" / "log_history.jsonl").read_text().split("\n") if x
    ]
    assert [(h["stage"], h["step"]) for h in history if "loss" in h] == [
        ("sft", 1),
        ("sft", 2),
        ("dpo", 1),
        ("dpo", 2),
    ]


@pytest.mark.slow
def test_a_stop_seen_by_one_rank_stops_every_rank_at_the_same_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "stop"
    proc = _launch("ddp", str(WORKER), "stop", str(tiny_model_dir), str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["stopped"] for r in _ranks(out)] == ["sft step 2", "sft step 2"]
    assert (out / "sft" / "checkpoints" / "checkpoint-1" / "trainer_state.json").is_file()
    assert not (out / "sft" / "model").exists()


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_fsdp2_shards_train_and_rank0_writes_the_gathered_model(
    tiny_model_dir: Path, tmp_path: Path, lora: bool
) -> None:
    """torch FSDP2 on 2 gloo ranks: the trainer's gather + write yields a folder whose weights
    are each parameter's full (unsharded) value and whose outputs equal the sharded model's;
    LoRA: the adapter and the CPU-merged model."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "fsdp2"
    proc = _torchrun(str(WORKER), "fsdp2", str(tiny_model_dir), str(out), "1" if lora else "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = _ranks(out)
    assert (r0["world"], r1["world"]) == (2, 2)
    assert r0["n_state"] > 0 and r1["n_state"] == 0  # full state dict on rank 0 only
    assert _writers(out) == {0: 1}
    ref = torch.load(out / "reference.pt")
    model = AutoModelForCausalLM.from_pretrained(str(out / "model")).eval()
    ids = _ids(tiny_model_dir)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, ref["logits"], atol=1e-5, rtol=0)
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    saved = load_file(str(out / "model" / "model.safetensors"))
    assert saved.keys() == start.keys()
    if lora:
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
        adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
        lora_b = {k: v for k, v in ref["full"].items() if "lora_B" in k}
        assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # trained
        assert len(adapter) == len([k for k in ref["full"] if "lora_" in k])
    else:
        for name, value in ref["full"].items():
            if name in saved:
                assert torch.equal(saved[name], value), name
        assert not torch.equal(
            saved["model.layers.0.mlp.up_proj.weight"], start["model.layers.0.mlp.up_proj.weight"]
        )


def _ids(model_dir: Path) -> torch.Tensor:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return tok("The capital of France is Paris.", return_tensors="pt")["input_ids"]


@pytest.mark.slow
def test_accelerate_fsdp_config_on_cpu_is_data_parallel_not_sharded(tmp_path: Path) -> None:
    """The finding the module docstring states, kept true: with the shipped FSDP2 config on a
    CPU, accelerate starts 2 gloo ranks but takes them as MULTI_CPU (no FSDP plugin)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, pathlib, sys\n"
        "from accelerate import Accelerator\n"
        "a = Accelerator(cpu=True)\n"
        "seen = [a.process_index, a.num_processes, a.distributed_type.value]\n"
        "pathlib.Path(sys.argv[1], f'seen-{a.process_index}.json').write_text(json.dumps(seen))\n"
    )
    proc = _launch("fsdp2", str(probe), str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = sorted(json.loads(p.read_text()) for p in tmp_path.glob("seen-*.json"))
    assert seen == [[0, 2, "MULTI_CPU"], [1, 2, "MULTI_CPU"]]
