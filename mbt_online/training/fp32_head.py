"""TRL's SFT and DPO trainers project the LM head in float32 under bf16 autocast, as GRPO can.

TRL 1.16 scores SFT and DPO through `add_fused_lm_head` (`trl/trainer/utils.py`), whose
`cast_lm_head_to_fp32` runs the head outside autocast on float32 hidden states. Only GRPO exposes
it (`GRPOConfig.cast_lm_head_to_fp32`); the SFT and DPO trainers call the function with its
default, so under bf16 autocast their log-probs come from bfloat16 logits (8 bits of mantissa).
DPO's loss is a difference of two summed log-probs per pair, each over a hundred or more tokens,
which that rounding blurs. The body keeps autocast's speed; the head is one matmul per token.
Measured on the quickstart (docs/results.md): bf16 TRAIN with this head learned as float32
TRAIN did (round 3: 1.0% degeneration) where the bf16 head left 2.0%. Without autocast it
changes nothing: the head is float32 already. `train`'s trainer builders install it as
`train.fp32_lm_head` says.
"""

from __future__ import annotations

import functools
import inspect
import logging
from types import ModuleType

from mbt_online import patches
from mbt_online.versions import WrittenFor

log = logging.getLogger(__name__)

_NAME = "add_fused_lm_head"  # what each trainer module imported from trl.trainer.utils
# the TRL releases whose SFT / DPO trainers' fused head this was written against and tested with
WRITTEN_FOR = WrittenFor(
    "trl",
    ">=1.16,<1.17",
    "the float32 LM head of SFT and DPO (training/fp32_head.py)",
    "TRL's own add_fused_lm_head runs (the head in bf16 under bf16 autocast)",
)


def install() -> bool:
    """The float32 head in both trainers (idempotent). False, with a warning, where this TRL has no
    `cast_lm_head_to_fp32` to set or is outside `WRITTEN_FOR` (logged once): bf16 TRAIN then
    scores with bfloat16 logits."""
    modules = _trainer_modules()
    if not modules or not _supports_cast(patches.shipped(modules[0], _NAME)):
        log.warning("this TRL's fused LM head has no cast_lm_head_to_fp32; the head runs in bf16")
        return False
    if not WRITTEN_FOR.holds():
        return False
    for module in modules:
        shipped = patches.shipped(module, _NAME)
        patches.replace(module, _NAME, functools.partial(shipped, cast_lm_head_to_fp32=True))
    return True


def restore() -> None:
    """TRL's own head back (`train.fp32_lm_head=false`)."""
    for module in _trainer_modules():
        patches.restore(module, _NAME)


def installed() -> bool:
    return any(patches.replaced(module, _NAME) for module in _trainer_modules())


def _supports_cast(fn: object) -> bool:
    return callable(fn) and "cast_lm_head_to_fp32" in inspect.signature(fn).parameters


def _trainer_modules() -> list[ModuleType]:
    try:
        from trl.trainer import dpo_trainer, sft_trainer
    except ImportError:
        return []
    return [m for m in (sft_trainer, dpo_trainer) if hasattr(m, _NAME)]
