"""A stage's model folder, written safely whatever shards the weights, and its checkpoints.

Under DDP every rank holds the whole model; under FSDP or ZeRO-3 each holds a shard, and
`unwrap_model(...).save_pretrained` on rank 0 would write its shard alone (the "empty saves under
ZeRO-3" users report). So every rank first takes part in gathering the full state dict
(`gather_state_dict`, a collective), then rank 0 alone writes the folder while the others wait.
A LoRA adapter is written from the gathered dict and merged into a fresh CPU copy of the base
(`merge_on_cpu`): no sharded module is ever merged in place.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.trainer_callback import TrainerCallback

from mbt_online.rundir.atomic import write_dir_atomic
from mbt_online.versions import WrittenFor

SCRATCH = "trainer-scratch"  # TRL output_dir without checkpoints; cleared at start and end
CHECKPOINTS = "checkpoints"  # TRL output_dir with train.save_steps; kept until the stage ends
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: its presence = complete


def dist_state() -> Any:
    """accelerate's process state, created as the trainer will create it (CPU runs ask for the
    CPU, which makes a torchrun / `accelerate launch` world gloo-distributed): a barrier before
    the first trainer exists, and the rank."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_fsdp2(model: torch.nn.Module) -> bool:
    """Sharded by torch's `fully_shard` (FSDP2): its parameters are DTensors."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def gather_state_dict(model: torch.nn.Module, accelerator: Any = None) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict for rank 0 to write; call on EVERY rank (it is a
    collective when sharded). Other ranks may get an empty dict.

    accelerate's FSDP (1 and 2) and DeepSpeed paths gather through `get_state_dict` (ZeRO-3 needs
    `zero3_save_16bit_model: true` in its accelerate config); a model `fully_shard`-ed outside
    accelerate through torch's own full-state-dict API (to the CPU); anything else is whole.
    """
    from accelerate.utils import DistributedType

    kind = getattr(accelerator, "distributed_type", None)
    if kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return accelerator.get_state_dict(model)
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    if is_fsdp2(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=options)
    # whole on every rank: only rank 0 needs it, where it stays (the writer casts it to the CPU)
    return model.state_dict() if _is_rank0(accelerator) else {}


def _is_rank0(accelerator: Any) -> bool:
    import torch.distributed as dist

    if accelerator is not None:
        return bool(accelerator.is_main_process)
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def write_model(
    model: Any, state: dict[str, torch.Tensor], tokenizer: Any, model_dir: str | Path, out: Path
) -> Path | None:
    """Rank 0 only: `out/model` (merged weights + tokenizer, in the input folder's dtype) from the
    gathered `state`, and `out/adapter` when `model` is a PeftModel. Returns the adapter folder."""
    dtype = saved_dtype(model_dir)
    if hasattr(model, "peft_config"):
        adapter = write_dir_atomic(
            out / "adapter", lambda path: model.save_pretrained(path, state_dict=state)
        )
        merged = merge_on_cpu(model_dir, adapter).to(dtype=dtype)
        _write_folder(out / "model", merged, merged.state_dict(), tokenizer)
        return adapter
    _write_folder(out / "model", model, _cast(state, dtype, model), tokenizer)
    return None


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype, model: Any) -> dict:
    """The state in the folder's dtype, tied weights (an embedding shared with the output layer)
    one tensor again: casting, or a sharded gather, makes them separate copies, and the folder
    would hold a second copy of the embedding beside a config that says it is tied."""
    full = {
        k: v.to("cpu", dtype=dtype if v.is_floating_point() else None) for k, v in state.items()
    }
    for target, source in (getattr(model, "all_tied_weights_keys", None) or {}).items():
        if target in full and source in full:
            full[target] = full[source]
    return full


def _write_folder(out: Path, model: Any, state: dict[str, torch.Tensor], tokenizer: Any) -> None:
    def save(path: Path) -> None:
        model.save_pretrained(path, state_dict=state)
        tokenizer.save_pretrained(path)

    write_dir_atomic(out, save)


def merge_on_cpu(model_dir: str | Path, adapter_dir: Path) -> torch.nn.Module:
    """The base (fp32, on the CPU, as the policy was loaded) with the adapter merged in: the same
    numbers as merging the trained PeftModel in place, without touching sharded modules."""
    from peft import PeftModel

    with _without_zero3_init():
        base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


# transformers' private DeepSpeed config reference that `_without_zero3_init` saves and restores
ZERO3_SWITCH = WrittenFor(
    "transformers",
    ">=5.16.1,<5.20",
    "the ZeRO-3 switch turned off around the LoRA merge (training/saving.py)",
    "transformers' DeepSpeed config is left as it is (under ZeRO-3 rank 0's merge loads "
    "partitioned)",
)


@contextlib.contextmanager
def _without_zero3_init() -> Iterator[None]:
    """Under ZeRO-3 transformers loads every model partitioned (`zero.Init`, a collective): rank 0
    loading the base alone would wait for the other ranks forever. Off for the block (only with
    a transformers in `ZERO3_SWITCH`'s range, and only where a DeepSpeed config is set)."""
    from transformers.integrations import deepspeed

    if not deepspeed.is_deepspeed_zero3_enabled() or not ZERO3_SWITCH.holds():
        yield
        return
    saved = deepspeed._hf_deepspeed_config_weak_ref
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        deepspeed._hf_deepspeed_config_weak_ref = saved


def saved_dtype(model_dir: str | Path) -> torch.dtype:
    """Keep the folder format the run started with (a bf16 checkpoint stays bf16 on disk)."""
    dtype = getattr(AutoConfig.from_pretrained(str(model_dir)), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


# ---------------------------------------------------------------- the trainer's folder


def last_checkpoint(folder: Path) -> Path | None:
    """The newest COMPLETE `checkpoint-<step>` (its trainer state is written last, so one a kill
    cut short has none and is passed over)."""
    found = []
    for path in folder.glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and (path / TRAINER_STATE).is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


class StopAtCheckpoint(TrainerCallback):
    """A preemption safe point inside TRAIN: once a checkpoint is complete on disk, a stop asked
    for (SIGUSR1 / SIGTERM, or the staged child's STOP file: `preemption`) raises `Preempted`;
    the checkpoint stays, and the resumed stage continues from it. Across ranks the flags are
    combined first (every rank saves at the same step), so all stop together or none does: one
    rank leaving alone would leave the others waiting in a collective."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        from mbt_online import preemption

        where = f"{self.stage} step {state.global_step + 1}"
        if _any_rank(preemption.requested() is not None):
            raise preemption.Preempted(where, preemption.requested() or "a stop on another rank")


def _any_rank(flag: bool) -> bool:
    """`flag` OR-ed over the ranks of an initialised process group (the flag alone otherwise)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    device = dist_state().device if "nccl" in str(dist.get_backend()) else torch.device("cpu")
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


@contextlib.contextmanager
def trainer_dir(out_dir: Path, save_steps: int | None, state: Any) -> Iterator[Path]:
    """TRL's output folder for a stage, at a fixed place under the round's train folder.

    Without checkpoints it is scratch: cleared before (what a killed stage left) and after. With
    `train.save_steps` it persists across a kill, so the resumed stage finds its checkpoints; it is
    removed once the stage has written its model. Only rank 0 deletes; everyone waits for it.
    """
    folder = out_dir / (CHECKPOINTS if save_steps else SCRATCH)
    if state.is_main_process and not save_steps:
        shutil.rmtree(folder, ignore_errors=True)
    state.wait_for_everyone()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        # no barrier here: the other ranks may not have failed and would never arrive
        if state.is_main_process and not save_steps:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    state.wait_for_everyone()
    if state.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)
