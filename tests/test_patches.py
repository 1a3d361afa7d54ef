"""The shared swap-and-restore of a library function (the heads, the CPU sampler, LoRA)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

from mbt_online import patches


def _ours() -> str:
    return "ours"


@pytest.fixture
def lib() -> Iterator[ModuleType]:
    module = ModuleType("fake_library_for_test_patches")
    module.kernel = lambda: "shipped"  # type: ignore[attr-defined]
    yield module
    patches.restore(module, "kernel")


def test_replace_twice_still_restores_the_librarys_own(lib):
    theirs: Callable[[], str] = lib.kernel
    patches.replace(lib, "kernel", _ours)
    patches.replace(lib, "kernel", _ours)  # an install repeated must not record ours as shipped
    assert lib.kernel is _ours and patches.replaced(lib, "kernel")
    assert patches.shipped(lib, "kernel") is theirs
    patches.restore(lib, "kernel")
    assert lib.kernel is theirs and not patches.replaced(lib, "kernel")
    patches.restore(lib, "kernel")  # restoring again changes nothing
    assert lib.kernel is theirs and patches.shipped(lib, "kernel") is theirs


def test_replace_after_restore_swaps_again(lib):
    """The benchmarks' pattern: restore, time the library's path, install ours again."""
    theirs = lib.kernel
    patches.replace(lib, "kernel", _ours)
    patches.restore(lib, "kernel")
    patches.replace(lib, "kernel", _ours)
    assert lib.kernel() == "ours" and patches.shipped(lib, "kernel")() == "shipped"
    patches.restore(lib, "kernel")
    assert lib.kernel is theirs
