"""GPU smoke test: the GPU path end to end in under 9 minutes on one GPU, one JSON line of results.

    python scripts/gpu_smoke.py              # on a GPU machine; exit 1 when any check fails
    python scripts/gpu_smoke.py --cpu-check  # the same plumbing at toy sizes on a CPU (CI)

Part 1 (no vLLM): a random-initialised student built from Qwen3-0.6B's config (written below, no
download; `--layers` shrinks it) with a BPE tokenizer trained on the embedded world, saved in bf16.
One round of the embedded world runs through the CLI with `runtime.mode=staged` (TRAIN in the
staged child process) and `engine.backend=transformers`: SFT then DPO, sized for at least 20 SFT
and 10 DPO optimizer steps. Checked: the run finishes with round 0 and 1 metrics, the TRAIN child
ran (its child.log), the steps in `log_history.jsonl` match the rows and batch sizes, and the
child's peak memory (`train/peak_memory_gib`) is within 15% of `training/memory.py`'s estimate.

Part 2 (only where vLLM imports): a round with the vLLM engine, `engine.between_stages=sleep` on a
GPU (vLLM's sleep mode needs one; `stop` in --cpu-check): rollout 256 prompts x 4 samples, the
engine put to sleep, TRAIN in the child, the engine woken and reloaded from the new model, greedy
evaluation. A fresh engine on the round's model folder must then give the same greedy evaluation,
and (GPU) give back most of its memory when put to sleep and serve the same output once woken and
reloaded.

Every check is recorded as {"ok": bool, ...numbers}; the last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Qwen3-0.6B's config.json (Qwen/Qwen3-0.6B on the hub), minus the token ids the tokenizer sets.
QWEN3_0_6B = dict(
    architectures=["Qwen3ForCausalLM"],
    model_type="qwen3",
    vocab_size=151936,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    hidden_act="silu",
    max_position_embeddings=40960,
    rms_norm_eps=1e-6,
    rope_theta=1_000_000,
    attention_bias=False,
    attention_dropout=0.0,
    tie_word_embeddings=True,
    use_cache=True,
)
MEMORY_TOLERANCE = 0.15
GIB = 2**30


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cpu-check", action="store_true", help="toy sizes on a CPU (plumbing only)")
    p.add_argument("--work-dir", type=Path, default=None, help="where models and runs go")
    p.add_argument("--layers", type=int, default=None, help="decoder layers (default: 28 = 0.6B)")
    p.add_argument("--skip-vllm", action="store_true", help="part 1 only")
    p.add_argument("--skip-part1", action="store_true", help="part 2 only")
    p.add_argument("--eager", action="store_true", help="vLLM without CUDA graphs (faster start)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# the student


def world_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE trained on the embedded world's texts (what the bootstrap student uses)."""
    from mbt_online.config import load_config
    from mbt_online.sim import bootstrap, tiny_model

    inputs = bootstrap.student_inputs(load_config(None))
    return tiny_model.build_tokenizer(inputs.corpus, vocab_size=vocab_size)


def build_student(out: Path, *, cpu: bool, layers: int | None) -> Path:
    """Random-initialised Qwen3-0.6B (bf16), or a 2-layer toy of the same architecture on a CPU."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tok = world_tokenizer(2000)
    shape = dict(QWEN3_0_6B)
    if cpu:  # toy sizes: the same code path, seconds per step on a CPU
        shape.update(vocab_size=len(tok), hidden_size=64, intermediate_size=128, head_dim=32)
        shape.update(num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2)
    if layers is not None:
        shape["num_hidden_layers"] = layers
    ids = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    config = Qwen3Config(**shape, **ids, torch_dtype="bfloat16")
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------
# running the CLI


def run_cli(overrides: dict[str, Any], log: Path, timeout: float) -> int:
    """`mbt-online train` in a child process (the orchestrator the user runs), output to `log`."""
    argv = [
        sys.executable,
        "-m",
        "mbt_online",
        "train",
        *[f"{k}={v}" for k, v in overrides.items()],
    ]
    with open(log, "w", encoding="utf-8") as sink:
        try:
            return subprocess.run(
                argv, stdout=sink, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return 124


def tail(path: Path, lines: int = 15) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []


def base_overrides(work: Path, name: str, model: Path, cpu: bool) -> dict[str, Any]:
    return {
        "run.name": name,
        "run.runs_dir": str(work / "runs"),
        "student.model": str(model),
        "student.dtype": "float32" if cpu else "bfloat16",
        "student.max_model_len": 1024,
        "loop.rounds": 1,
        "runtime.mode": "staged",
        "tracking.wandb_mode": "disabled",
        "train.method": "full",
        "train.dpo.precompute_ref_log_probs": "true",  # no reference beside the policy in TRAIN
        "train.sft.epochs": 1,
        "train.dpo.epochs": 1,
    }


# ---------------------------------------------------------------------------------------------
# part 1: staged TRAIN with the transformers backend


def stage_steps(history: Path) -> dict[str, int]:
    """The last optimizer step each stage logged (`log_history.jsonl`: one row per TRL event)."""
    steps: dict[str, int] = {}
    for line in history.read_text().splitlines():
        row = json.loads(line)
        steps[row["stage"]] = max(steps.get(row["stage"], 0), int(row.get("step", 0)))
    return steps


def longest_tokens(model: Path, build: Path) -> tuple[int, int]:
    """Longest SFT row and longest DPO pair side (prompt + completion) in tokens."""
    from transformers import AutoTokenizer

    from mbt_online.rundir import load_rows

    tok = AutoTokenizer.from_pretrained(model)

    def n(text: Any) -> int:
        if isinstance(text, list):  # chat messages
            text = "".join(m["content"] for m in text)
        return len(tok(str(text), add_special_tokens=False)["input_ids"])

    sft = [n(r["prompt"]) + n(r["completion"]) for r in load_rows(build / "sft")]
    dpo = [n(r["prompt"]) + max(n(r["chosen"]), n(r["rejected"])) for r in load_rows(build / "dpo")]
    return max(sft, default=0), max(dpo, default=0)


def memory_check(model: Path, run_dir: Path, metrics: dict, sft_batch: int, dpo_batch: int):
    """The child's peak (over SFT and DPO) against `training/memory.py`'s estimate for full
    fine-tuning at each stage's longest micro batch; DPO adds its frozen bf16 reference copy
    (2 bytes per parameter), which the estimate does not model."""
    from mbt_online.training.memory import estimate, shape_of

    sft_len, dpo_len = longest_tokens(model, run_dir / "round-1" / "build")
    shape = shape_of(str(model))
    assert shape is not None, f"no shape for {model}"
    sft = estimate(shape, method="full", tokens=sft_len * sft_batch).total
    dpo = estimate(shape, method="full", tokens=2 * dpo_len * dpo_batch).total  # chosen+rejected
    est_gib = max(sft, dpo + 2 * shape.params()) / GIB  # bytes
    peak = metrics.get("train/peak_memory_gib")
    rel = None if peak is None else abs(peak - est_gib) / est_gib
    return {
        "ok": rel is not None and rel <= MEMORY_TOLERANCE,
        "peak_gib": peak,
        "estimate_gib": round(est_gib, 3),
        "relative_error": None if rel is None else round(rel, 3),
        "longest_tokens": {"sft": sft_len, "dpo": dpo_len},
    }


def part1(work: Path, model: Path, cpu: bool, deadline: float) -> dict[str, Any]:
    # a random student gets every question wrong: about 2 SFT rows and 1 pair per question
    questions, sft_batch, dpo_batch = (6, 1, 2) if cpu else (24, 1, 1)
    overrides = base_overrides(work, "smoke-transformers", model, cpu) | {
        "engine.backend": "transformers",
        "data.train.limit": questions,
        "world.questions": max(64, 2 * questions),
        "data.eval.limit": 4 if cpu else 16,
        "rollout.samples": 2,
        "rollout.max_tokens": 32 if cpu else 256,
        "eval.sampling.max_tokens": 32 if cpu else 256,
        "train.sft.batch_size": sft_batch,
        "train.sft.grad_accum": 1,
        "train.dpo.batch_size": dpo_batch,
        "train.dpo.grad_accum": 1,
        "train.dpo.margin": 0.0,
    }
    log = work / "part1.log"
    started = time.monotonic()
    rc = run_cli(overrides, log, timeout=max(30.0, deadline - time.monotonic()))
    out: dict[str, Any] = {"seconds": round(time.monotonic() - started, 1), "exit": rc}
    run_dir = work / "runs" / "smoke-transformers"
    train_dir = run_dir / "round-1" / "train"
    out["run_finished"] = {"ok": rc == 0, **({} if rc == 0 else {"log_tail": tail(log)})}
    if rc != 0:
        return out
    from mbt_online.rundir import read_metrics

    rounds = [row["round"] for row in read_metrics(run_dir)]
    out["round_metrics"] = {"ok": rounds == [0, 1], "rounds": rounds}
    out["staged_child_ran"] = {"ok": (train_dir / "child.log").exists()}
    metrics = json.loads((train_dir / "train_metrics.json").read_text())
    steps = stage_steps(train_dir / "log_history.jsonl")
    sft_rows, pairs = int(metrics["train/sft_rows"]), int(metrics["train/dpo_pairs"])
    want = (1, 1) if cpu else (20, 10)  # one epoch, no accumulation: a step per micro batch
    expected = (math.ceil(sft_rows / sft_batch), math.ceil(pairs / dpo_batch))
    got = (steps.get("sft", 0), steps.get("dpo", 0))
    out["train_steps"] = {
        "ok": got == expected and got[0] >= want[0] and got[1] >= want[1],
        "sft_steps": got[0],
        "dpo_steps": got[1],
        "sft_rows": sft_rows,
        "dpo_pairs": pairs,
    }
    mem = memory_check(model, run_dir, metrics, sft_batch, dpo_batch)
    if cpu:  # a process's RSS is not what the GPU estimate models: reported, not checked
        mem = {**mem, "ok": mem["peak_gib"] is not None, "note": "CPU RSS, not compared"}
    out["peak_memory"] = mem
    return out


# ---------------------------------------------------------------------------------------------
# part 2: vLLM, asleep through TRAIN


def vllm_importable() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


def device_used_gib() -> float | None:
    """Memory used on GPU 0 (NVML: no CUDA context in this process), None without a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return pynvml.nvmlDeviceGetMemoryInfo(handle).used / GIB
    except Exception:
        return None


def eval_completions(rows: list[dict]) -> dict[tuple, str]:
    return {(r.get("seed"), r["example_id"], r["sample"]): r["completion"] for r in rows}


def part2(work: Path, model: Path, cpu: bool, eager: bool, deadline: float) -> dict[str, Any]:
    prompts, samples = (8, 2) if cpu else (256, 4)
    release = "stop" if cpu else "sleep"  # vLLM's sleep mode needs a GPU
    overrides = base_overrides(work, "smoke-vllm", model, cpu) | {
        "engine.backend": "vllm",
        "engine.between_stages": release,
        "engine.handoff": "reload",
        "data.train.limit": prompts,
        "world.questions": max(64, prompts + 32),
        "data.eval.limit": 4 if cpu else 32,
        "rollout.samples": samples,
        "rollout.max_tokens": 32 if cpu else 128,
        "eval.sampling.temperature": 0,
        "eval.sampling.samples": 1,
        "eval.sampling.max_tokens": 32 if cpu else 128,
        "train.sft.batch_size": 8,
        "train.dpo.batch_size": 8,
    }
    if eager:
        overrides["engine.enforce_eager"] = "true"
    log = work / "part2.log"
    started = time.monotonic()
    rc = run_cli(overrides, log, timeout=max(30.0, deadline - time.monotonic()))
    out: dict[str, Any] = {"seconds": round(time.monotonic() - started, 1), "exit": rc}
    run_dir = work / "runs" / "smoke-vllm"
    out["run_finished"] = {"ok": rc == 0, **({} if rc == 0 else {"log_tail": tail(log)})}
    if rc != 0:
        return out
    run_log = (run_dir / "run.log").read_text(errors="replace")
    word = "stopped" if release == "stop" else "asleep"
    rollout_rows = len(_rows(run_dir / "round-1" / "rollout"))
    out["rollout"] = {"ok": rollout_rows == prompts * samples, "rows": rollout_rows}
    # the woken engine serves the trained weights: greedy eval moved off round 0's (GPU: checked)
    rounds = [eval_completions(_rows(run_dir / f"round-{r}" / "eval")) for r in (0, 1)]
    changed = sum(a != b for a, b in zip(rounds[0].values(), rounds[1].values(), strict=True))
    out["trained_weights_served"] = {"ok": cpu or changed > 0, "changed_completions": changed}
    out["released_for_train"] = {"ok": f"engine: {word} for TRAIN" in run_log, "mode": release}
    out.update(fresh_engine_checks(run_dir, release))
    return out


def _rows(path: Path) -> list[dict]:
    from mbt_online.rundir import load_rows

    return load_rows(path)


def fresh_engine_checks(run_dir: Path, release: str) -> dict[str, Any]:
    """A fresh engine on round 1's model: the same greedy evaluation as the loop's woken one; on a
    GPU, its sleep frees memory and a wake + reload of the same folder serves the same output."""
    from mbt_online.config import load_config
    from mbt_online.generation.backends import make_generator
    from mbt_online.generation.rollout import evaluate_rows
    from mbt_online.rundir import RunState
    from mbt_online.tasks import mixture

    cfg = load_config(run_dir / "config.yaml")
    model = RunState.load(run_dir).models["1"]
    _, eval_examples = mixture.load_data(cfg)
    loop_eval = eval_completions(_rows(run_dir / "round-1" / "eval"))
    before = device_used_gib()
    engine = make_generator(cfg, model)
    try:
        fresh = eval_completions(evaluate_rows(engine, eval_examples, cfg, 1))
        out: dict[str, Any] = {
            "greedy_eval_equals_fresh_engine": {
                "ok": fresh == loop_eval and len(fresh) > 0,
                "compared": len(fresh),
                "differing": sum(fresh.get(k) != v for k, v in loop_eval.items()),
            }
        }
        if release == "sleep":
            awake = device_used_gib()
            engine.release("sleep")
            asleep = device_used_gib()
            engine.handoff("reload", model)  # wake the weights, reload the folder, wake the cache
            again = eval_completions(evaluate_rows(engine, eval_examples, cfg, 1))
            held = None if None in (before, awake) else awake - before
            freed = None if None in (awake, asleep) else awake - asleep
            out["sleep_frees_memory"] = {
                "ok": held is not None and freed is not None and freed >= 0.5 * held,
                "engine_gib": None if held is None else round(held, 2),
                "freed_gib": None if freed is None else round(freed, 2),
            }
            out["woken_engine_same_output"] = {"ok": again == fresh}
    finally:
        engine.close()
    return out


# ---------------------------------------------------------------------------------------------


def failed_checks(result: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of every check whose "ok" is false."""
    bad = []
    for key, value in result.items():
        if isinstance(value, dict):
            if value.get("ok") is False:
                bad.append(prefix + key)
            bad += failed_checks({k: v for k, v in value.items() if k != "ok"}, f"{prefix}{key}.")
    return bad


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    # the whole script within 9 minutes on a GPU; a shared CPU's toy run only has to finish
    budget = 30 * 60 if args.cpu_check else 9 * 60
    deadline = started + budget - 20
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="mbt-gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"mode": "cpu-check" if args.cpu_check else "gpu", "work": str(work)}
    try:
        if not args.cpu_check and not _cuda():
            result["cuda"] = {"ok": False, "error": "no CUDA device (use --cpu-check on a CPU)"}
        else:
            model = build_student(work / "student", cpu=args.cpu_check, layers=args.layers)
            if not args.skip_part1:
                result["part1"] = part1(work, model, args.cpu_check, deadline)
            if args.skip_vllm or not vllm_importable():
                result["part2"] = "skipped: " + ("--skip-vllm" if args.skip_vllm else "no vLLM")
            else:
                result["part2"] = part2(work, model, args.cpu_check, args.eager, deadline)
    except Exception as err:  # the JSON line still comes, with the error as a failed check
        result["error"] = {"ok": False, "type": type(err).__name__, "message": str(err)[:500]}
    result["seconds"] = round(time.monotonic() - started, 1)
    if not args.cpu_check:
        result["within_9_minutes"] = {"ok": result["seconds"] <= 9 * 60}
    result["failed"] = failed_checks(result)
    print(json.dumps(result, default=str))
    return 1 if result["failed"] else 0


def _cuda() -> bool:
    from mbt_online.hardware import cuda_present

    return cuda_present()


if __name__ == "__main__":
    sys.exit(main())
