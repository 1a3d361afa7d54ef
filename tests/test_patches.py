"""The shared swap-and-restore of a library function (compact head, CPU sampler, CPU LoRA)."""

from __future__ import annotations

from types import ModuleType

from mbt_online import patches


def _library() -> ModuleType:
    lib = ModuleType("fake_library_for_test_patches")
    lib.kernel = lambda: "shipped"  # type: ignore[attr-defined]
    return lib


def test_replace_twice_still_restores_the_librarys_own():
    lib = _library()
    theirs = lib.kernel  # type: ignore[attr-defined]

    def ours() -> str:
        return "ours"

    patches.replace(lib, "kernel", ours)
    patches.replace(lib, "kernel", ours)  # an install repeated must not record ours as shipped
    assert lib.kernel is ours and patches.replaced(lib, "kernel")  # type: ignore[attr-defined]
    assert patches.shipped(lib, "kernel") is theirs
    patches.restore(lib, "kernel")
    assert lib.kernel is theirs and not patches.replaced(lib, "kernel")  # type: ignore[attr-defined]
    patches.restore(lib, "kernel")  # restoring again changes nothing
    assert lib.kernel is theirs and patches.shipped(lib, "kernel") is theirs  # type: ignore[attr-defined]


def test_replace_after_restore_swaps_again():
    """The benchmarks' pattern: restore, time the library's path, install ours again."""
    lib = _library()
    theirs = lib.kernel  # type: ignore[attr-defined]

    def ours() -> str:
        return "ours"

    patches.replace(lib, "kernel", ours)
    patches.restore(lib, "kernel")
    patches.replace(lib, "kernel", ours)
    assert lib.kernel() == "ours" and patches.shipped(lib, "kernel")() == "shipped"  # type: ignore[attr-defined]
    patches.restore(lib, "kernel")
    assert lib.kernel is theirs  # type: ignore[attr-defined]
