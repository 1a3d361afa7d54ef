"""A library's function swapped for ours, and the library's own kept to put back.

Four modules replace a name inside a library module: TRL's "compact the positions?" predicate
(`training/compact_head.py`), the fused head TRL's SFT and DPO trainers add
(`training/fp32_head.py`), vLLM's CPU top-k/top-p (`vllm_cpu_sampler.py`) and vLLM's CPU LoRA
kernels (`vllm_cpu_lora.py`). Each must keep the library's object: to fall back to it or put it
back, and because the benchmarks time both in one process (`restore`, then `replace` again). One
table keeps it, keyed by module and name, so installing twice never records our own function as
the shipped one.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

_SHIPPED: dict[tuple[str, str], Any] = {}


def replace(module: ModuleType, name: str, ours: Any) -> None:
    """`module.name = ours`, the library's object kept the first time (idempotent)."""
    _SHIPPED.setdefault((module.__name__, name), getattr(module, name))
    setattr(module, name, ours)


def restore(module: ModuleType, name: str) -> None:
    """The library's object back in `module.name`; nothing to do where it was never replaced."""
    key = (module.__name__, name)
    if key in _SHIPPED:
        setattr(module, name, _SHIPPED.pop(key))


def shipped(module: ModuleType, name: str) -> Any:
    """The library's own `module.name`, replaced or not."""
    return _SHIPPED.get((module.__name__, name), getattr(module, name, None))


def replaced(module: ModuleType, name: str) -> bool:
    return (module.__name__, name) in _SHIPPED
