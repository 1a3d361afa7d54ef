"""The Hugging Face hub: models and data sets named by hub id, read through the hub cache.

A hub id (`Qwen/Qwen3-0.6B`, `hotpotqa/hotpot_qa`) is looked up in the cache first (`HF_HUB_CACHE`,
else `HF_HOME/hub`); only a miss goes to the network, and with `HF_HUB_OFFLINE=1` a miss is an
error that says how to fill the cache. The environment is read at call time, not at import:
`huggingface_hub.constants` freezes it when first imported, which a test's or a launcher's later
`HF_HOME` would not reach.

A shared cache is often read-only (a cluster's `HF_HOME` filled once by an admin) or full. Models
are only read from it. A data set is prepared (arrow files, a lock) in the datasets cache: when
that cannot be written, it is prepared in the user-level cache (`models.cache`, else a temp folder)
with one warning, the hub cache still only read; when no folder can be written, one error names
the folders and the cause.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

_TRUE = {"1", "ON", "YES", "TRUE"}
# owner/name as the hub spells it: letters, digits, - _ . ; one slash
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# seconds to wait for the hub to say whether an uncached id exists: a check, not a download
PROBE_TIMEOUT_S = 10.0
# what a folder that cannot be written answers: read-only, not ours, full, over quota
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)

log = logging.getLogger("mbt_online")
_warned: set[str] = set()  # datasets caches already said to be unwritable, once per process


class HubError(RuntimeError):
    """A hub id could not be used; `reason`: "offline" (not cached, offline mode), "unreachable"
    (not cached, the hub did not answer or has no such repository), "incomplete" (cached without
    the files a model needs), "download" (the download failed)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def is_hub_id(name: str) -> bool:
    """`owner/name` that is not an existing local path (a local folder always wins)."""
    return bool(_HUB_ID.match(name)) and not Path(name).expanduser().exists()


def offline() -> bool:
    """`HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) as huggingface_hub reads it, read now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE


def cache_dir() -> Path:
    """The hub cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def fetch_hint(repo_id: str) -> str:
    return f"run `mbt-online models fetch {repo_id}` where the hub is reachable"


def cached_model(repo_id: str) -> Path | None:
    """The cached snapshot folder of a model (revision `main`), or None when it is not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(repo_id, cache_dir=cache_dir(), local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None
    return Path(str(folder))


def check_model(repo_id: str) -> None:
    """Fail fast (seconds) when a model id can be neither read from the cache nor downloaded."""
    folder = cached_model(repo_id)
    if folder is not None:
        _require_model_files(repo_id, folder)
        return
    if offline():
        raise HubError(
            f"{repo_id!r} is not in the hub cache ({cache_dir()}) and HF_HUB_OFFLINE is set; "
            f"{fetch_hint(repo_id)}, or unset HF_HUB_OFFLINE",
            "offline",
        )
    _probe(repo_id, "model")


def model_folder(repo_id: str, *, download: bool = True) -> Path:
    """The model's snapshot folder: cached, else downloaded into the cache (unless offline)."""
    folder = cached_model(repo_id)
    if folder is None:
        check_model(repo_id)  # offline or unknown: the clear message, not a download traceback
        if not download:
            raise HubError(f"{repo_id!r} is not in the hub cache; {fetch_hint(repo_id)}", "offline")
        folder = download_model(repo_id)
    _require_model_files(repo_id, folder)
    return folder


def download_model(repo_id: str) -> Path:
    """snapshot_download into the hub cache (what `mbt-online models fetch <id>` does)."""
    from huggingface_hub import snapshot_download

    if offline():
        folder = cached_model(repo_id)
        if folder is None:
            raise HubError(
                f"cannot download {repo_id!r}: HF_HUB_OFFLINE is set and it is not cached "
                f"({cache_dir()})",
                "offline",
            )
        return folder
    try:
        return Path(str(snapshot_download(repo_id, cache_dir=cache_dir())))
    except Exception as exc:  # noqa: BLE001 - network, auth, disk: one message for the user
        raise HubError(
            f"downloading {repo_id!r} failed: {type(exc).__name__}: {exc}", "download"
        ) from exc


def check_dataset(name: str, config: str | None, split: str) -> None:
    """Fail fast when a hub data set cannot be loaded: offline, it must load from the cache."""
    if offline():
        load_dataset_split(name, config, split)  # reads the cache only; raises HubError if absent
        return
    if Path(name).expanduser().exists():
        return  # a local dataset folder (or script): load_dataset reads it at load time
    _probe(name, "dataset")


def load_dataset_split(name: str, config: str | None, split: str) -> Any:
    """One split of a data set through `datasets.load_dataset` (the cache first; offline, only);
    prepared elsewhere when the datasets cache cannot be written (read-only, full)."""
    import datasets

    cache = _datasets_cache()
    try:
        return datasets.load_dataset(name, config, split=split, cache_dir=cache)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
        cause = unwritable(exc)
        if cause is None:
            raise _load_error(name, config, split, exc) from exc
        where = cache or str(_default_datasets_cache())
    fallback, why = _writable_datasets_folder()
    if fallback is None:
        raise HubError(
            f"data set {name!r}: the datasets cache {where} cannot be written ({cause}), nor "
            f"{why}; free space there or set HF_DATASETS_CACHE to a writable folder (the hub "
            "cache itself is only read)",
            "cache",
        )
    if where not in _warned:
        _warned.add(where)
        log.warning(
            "the datasets cache %s cannot be written (%s): data sets are prepared in %s instead "
            "(the hub cache is only read); set HF_DATASETS_CACHE to choose the folder",
            where,
            cause,
            fallback,
        )
    try:
        return datasets.load_dataset(name, config, split=split, cache_dir=str(fallback))
    except Exception as exc:  # noqa: BLE001
        again = unwritable(exc)
        if again is None:
            raise _load_error(name, config, split, exc) from exc
        raise HubError(
            f"data set {name!r}: the datasets cache {where} cannot be written ({cause}), nor "
            f"{fallback} ({again}); free space there or set HF_DATASETS_CACHE to a writable folder",
            "cache",
        ) from exc


def unwritable(exc: BaseException) -> str | None:
    """The cause, when `exc` (or what it was raised from) is a write a folder refused."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in UNWRITABLE:
            return e.strerror or str(e)
        e = e.__cause__ or e.__context__
    return None


def _default_datasets_cache() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(home).expanduser() / "datasets"


def _writable_datasets_folder() -> tuple[Path | None, str]:
    """(a folder data sets can be prepared in, or None; what was tried): the user-level cache's
    `datasets`, else a new temp folder."""
    from mbt_online.models.cache import cache_root

    tried = []
    for folder in (cache_root() / "datasets", None):
        try:
            if folder is None:
                return Path(tempfile.mkdtemp(prefix="mbt-online-datasets-")), ""
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder) as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
            return folder, ""
        except OSError as e:
            tried.append(f"{folder or tempfile.gettempdir()} ({e.strerror or e})")
    return None, ", nor ".join(tried)


def _load_error(name: str, config: str | None, split: str, exc: BaseException) -> HubError:
    where = "in the cache" if offline() else "on the hub or in the cache"
    return HubError(
        f"data set {name!r} (config {config!r}, split {split!r}) could not be loaded {where}: "
        f"{type(exc).__name__}: {exc}",
        "offline" if offline() else "unreachable",
    )


def _datasets_cache() -> str | None:
    """`HF_DATASETS_CACHE` when set; else datasets' default (`HF_HOME/datasets`), read now."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return os.environ["HF_DATASETS_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]).expanduser() / "datasets")
    return None


def _require_model_files(repo_id: str, folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise HubError(
            f"the cached snapshot of {repo_id!r} ({folder}) has no config.json (an interrupted "
            f"download?); {fetch_hint(repo_id)}",
            "incomplete",
        )


def _probe(repo_id: str, kind: str) -> None:
    """Ask the hub whether `repo_id` exists, with a short timeout; a HubError when it does not."""
    hint = fetch_hint(repo_id) if kind == "model" else "check the name, or load it once online"
    from huggingface_hub import HfApi

    api = HfApi()
    info = api.model_info if kind == "model" else api.dataset_info
    try:
        info(repo_id, timeout=PROBE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - no answer, no repository, gated: all "cannot use"
        raise HubError(
            f"{kind} {repo_id!r} is not in the hub cache ({cache_dir()}) and the hub did not "
            f"confirm it ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"{hint}",
            "unreachable",
        ) from exc
