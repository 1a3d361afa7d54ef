"""Shared pieces of the benchmark scripts (`bench_rollout`, `bench_train`, `bench_handoff`).

Every benchmark measures its ratios side by side in ONE process, on the same cores, and prints one
JSON line: the numbers a hand run puts in a closing note and `gen_perf_docs.py` turns into the
tables of docs/performance.md. The hardware yardstick is the matmul rate this module measures on
the spot (torch GEMM, fp32 and bf16, at the thread count the work itself uses), so a fraction of
"peak" means a fraction of what these cores do on this day, not a datasheet number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The caller's environment as it was before the defaults below: a benchmark of the main job
# (bench_quickstart) runs it in this one, as the user would, not in the benchmarks' own.
CALLER_ENV = dict(os.environ)

# Set before vLLM, HF or wandb load: the CPU vLLM build needs a KV-cache size, worker processes
# cost ~20 s a start, and a benchmark never reaches a hub.
ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_MODE": "disabled",
}
for _key, _value in ENV_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

SMOLLM2 = "smollm2-135m-instruct"
CONTENDED_LOAD = 2.5  # 1-minute load average above which a 2-core machine's ratios are skewed
MODEL_CHOICES = ("quickstart", SMOLLM2, "tiny")


# ---------------------------------------------------------------- output


def emit(result: dict[str, Any], out: str | None = None) -> None:
    """Print the benchmark's one JSON line on stdout (and append it to `out` when given)."""
    line = json.dumps(result, sort_keys=False)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    print(line, flush=True)


def parse_json_line(text: str) -> dict[str, Any]:
    """The last line of `text` that is a JSON object: a script's result among any log lines."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON line in the output")


def machine() -> dict[str, Any]:
    """Where and under what load the numbers were taken: a ratio measured while other jobs share
    two cores is skewed, so the load is part of the result, not a footnote."""
    load = os.getloadavg()[0]
    return {
        "nproc": os.cpu_count(),
        "load_1min": round(load, 2),
        "contended": load > CONTENDED_LOAD,
    }


def base_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--ci", action="store_true", help="tiny settings that finish in seconds")
    ap.add_argument(
        "--model",
        default=None,
        help=f"{', '.join(MODEL_CHOICES)} or a model folder (default: quickstart; tiny with --ci)",
    )
    ap.add_argument("--out", default=None, help="also append the JSON line to this file")
    return ap


# ---------------------------------------------------------------- hardware yardstick


def matmul_gflops(dtype: str, size: int = 1024, seconds: float = 1.0) -> float:
    """Best observed GEMM rate (GFLOP/s) of torch at the current thread count: size^3 matmuls
    repeated for about `seconds`, best of the timed repetitions (a warm-up call first)."""
    import torch

    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dt)
    b = torch.randn(size, size, generator=gen).to(dt)
    torch.mm(a, b)
    best = math.inf
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return 2 * size**3 / best / 1e9


def peaks(ci: bool) -> dict[str, float]:
    """fp32 and bf16 matmul GFLOP/s on these cores, with the threads torch uses now."""
    import torch

    size, seconds = (256, 0.1) if ci else (1024, 1.0)
    best = {"float32": 0.0, "bfloat16": 0.0}
    for _ in range(3):  # alternated, best of each: a burst of other work hits both alike
        for dtype in best:
            best[dtype] = max(best[dtype], matmul_gflops(dtype, size, seconds))
    return {
        "threads": torch.get_num_threads(),
        "peak_fp32_gflops": round(best["float32"], 1),
        "peak_bf16_gflops": round(best["bfloat16"], 1),
    }


# ---------------------------------------------------------------- model arithmetic


@dataclass(frozen=True)
class Shape:
    """What a Llama-family forward pass costs per token, from the model's config."""

    matmul_params: int  # weights of every linear, the LM head included, embeddings lookups not
    layers: int
    attn_width: int  # query heads x head size: the width of QK^T and AV

    def token_flops(self, context: int) -> float:
        """FLOPs of one token attending to `context` earlier positions: 2 per matmul weight plus
        2 x 2 x layers x attn_width x context for the score and value products."""
        return 2.0 * self.matmul_params + 4.0 * self.layers * self.attn_width * context

    def prefill_flops(self, prompt_len: int) -> float:
        """A causal prefill of `prompt_len` tokens (token i attends to i positions)."""
        pairs = prompt_len * (prompt_len - 1) / 2
        return 2.0 * self.matmul_params * prompt_len + 4.0 * self.layers * self.attn_width * pairs


def model_shape(model_dir: str | Path) -> Shape:
    """The `Shape` of a saved Llama-family model (both benchmark students are Llamas)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(model_dir))
    d, heads, layers = c.hidden_size, c.num_attention_heads, c.num_hidden_layers
    head_dim = getattr(c, "head_dim", None) or d // heads
    kv = getattr(c, "num_key_value_heads", None) or heads
    per_layer = d * heads * head_dim * 2 + d * kv * head_dim * 2 + 3 * d * c.intermediate_size
    return Shape(
        matmul_params=layers * per_layer + d * c.vocab_size,
        layers=layers,
        attn_width=heads * head_dim,
    )


def context_len(model_dir: str | Path, wanted: int = 2048) -> int:
    """`wanted`, or less when the model's positions end sooner (the bootstrap student: 1024)."""
    from transformers import AutoConfig

    limit = getattr(AutoConfig.from_pretrained(str(model_dir)), "max_position_embeddings", None)
    return min(wanted, limit) if limit else wanted


def fraction(gflops: float, peak: float) -> float:
    return round(gflops / peak, 4) if peak > 0 else float("nan")


# ---------------------------------------------------------------- models and data


def resolve_model(name: str | None, ci: bool, work: Path) -> tuple[str, str]:
    """(label, folder): the quickstart's bootstrap student, SmolLM2 from its wheel, a tiny random
    Llama built on the spot (CI), or a folder. The quickstart student is built on first use
    (about two minutes) and cached; the others are cached already or cheap."""
    name = name or ("tiny" if ci else "quickstart")
    if name == "tiny":
        return name, str(tiny_model(work / "tiny"))
    if name == "quickstart":
        from mbt_online.models.pretrained import resolve_student

        return name, resolve_student(quickstart_config())
    if name == SMOLLM2:
        from mbt_online.models.pretrained import fetch

        return name, str(fetch(SMOLLM2))
    if Path(name).is_dir():
        # a cached bootstrap student (same architecture as the quickstart's, other weights)
        bootstrap = (Path(name) / "bootstrap.json").is_file()
        return "bootstrap-student" if bootstrap else Path(name).name, str(Path(name).resolve())
    raise SystemExit(f"--model: {name!r} is not one of {MODEL_CHOICES} nor a folder")


def model_dtype(label: str, requested: str | None) -> str:
    """The dtype a run serves this model in: SmolLM2's shipped CPU configs use bf16, the
    quickstart fp32."""
    if requested:
        return requested
    return "bfloat16" if label == SMOLLM2 else "float32"


def tiny_model(out: Path) -> Path:
    """A 2-layer, hidden-64 Llama with a BPE tokenizer trained on world prompts (as the tests')."""
    from mbt_online.sim.tiny_model import build_tiny_student

    if (out / "config.json").is_file():
        return out
    texts = [m["content"] for chat in chats(40) for m in chat]
    return build_tiny_student(out, texts, hidden_size=64, layers=2, seed=0)


def quickstart_config(overrides: list[str] | None = None):
    from mbt_online.config import load_config

    return load_config("quickstart", overrides)


def examples(n: int, seed: int = 0) -> list[Any]:
    """`n` training-side questions of the quickstart's synthetic world (fresh worlds, so never a
    run's own): the prompts every benchmark feeds both sides of a comparison."""
    from mbt_online.tasks import world

    cfg = quickstart_config()
    out: list[Any] = []
    i = 0
    while len(out) < n:
        w_seed = 900_000 + 1000 * seed + i
        w = world.generate_world(w_seed, cfg.world, "train")
        out += world.make_examples(w, min(50, n - len(out)), w_seed, cfg.world)
        i += 1
    return out[:n]


def chats(n: int, seed: int = 0) -> list[list[dict]]:
    """The student's chat prompts for `examples(n, seed)`."""
    from mbt_online import prompts

    return [prompts.student_messages(ex) for ex in examples(n, seed)]


# ---------------------------------------------------------------- timing and scratch


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


@contextmanager
def scratch(prefix: str):
    """A temporary folder removed afterwards (model copies, trainer output)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def rounded(result: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in result.items()}


def log(msg: str) -> None:
    """Progress on stderr: stdout is kept for the one JSON line."""
    print(msg, file=sys.stderr, flush=True)
