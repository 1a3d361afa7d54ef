"""TRL's fused LM head scores only the labelled positions on the CPU too, as it does on CUDA.

TRL 1.16 computes SFT and DPO log-probs through `add_fused_lm_head` (`trl/trainer/utils.py`): a
chunked kernel that never builds the [tokens, vocab] logits. On Triton devices it first keeps the
positions that carry a label ("compact"); elsewhere it scores every position, prompt and padding
included, because on Neuron a changing number of positions would recompile the tiles on every
batch. A CPU compiles nothing, so there the full scoring is pure waste: a quickstart row is two
thirds prompt, and the head was a third of a TRL step (profiled: SFT 0.70 s -> 0.51 s a step,
DPO 1.56 -> 1.17 s, same losses). The values are the same either way: TRL writes zeros on
ignored positions in both paths. `train`'s trainer builders install it; off the CPU it changes
nothing (TRL's own answer stands).
"""

from __future__ import annotations

import logging
from types import ModuleType

import torch

from mbt_online import patches
from mbt_online.versions import WrittenFor

log = logging.getLogger(__name__)


# the TRL releases whose `_use_triton` predicate this was written against and tested with
WRITTEN_FOR = WrittenFor(
    "trl",
    ">=1.16,<1.17",
    "the compact CPU LM head (training/compact_head.py)",
    "TRL's own _use_triton decides (TRAIN scores every position on the CPU)",
)


def install() -> bool:
    """Compact on the CPU (idempotent). False, with a warning, where this TRL has no fused head
    to steer or is outside `WRITTEN_FOR` (logged once): the run is then correct, only slower."""
    utils = _trl_utils()
    if getattr(utils, _PREDICATE, None) is None:
        log.warning("this TRL has no fused LM head to compact; TRAIN scores every position")
        return False
    if not WRITTEN_FOR.holds():
        return False
    patches.replace(utils, _PREDICATE, _compact)  # type: ignore[arg-type]
    return True


def restore() -> None:
    """TRL's own decision back (`scripts/bench_train.py` times both in one process)."""
    utils = _trl_utils()
    if utils is not None:
        patches.restore(utils, _PREDICATE)


def installed() -> bool:
    utils = _trl_utils()
    return utils is not None and getattr(utils, _PREDICATE, None) is _compact


# TRL's "compact the positions?" predicate, asked with the logits' device
_PREDICATE = "_use_triton"


def _compact(device: torch.device) -> bool:
    if device.type == "cpu":
        return True
    return patches.shipped(_trl_utils(), _PREDICATE)(device)  # type: ignore[arg-type]


def _trl_utils() -> ModuleType | None:
    try:
        from trl.trainer import utils
    except ImportError:
        return None
    return utils
