"""The benchmark scripts: their arithmetic, their one JSON line, the docs tables made of it.

The scripts' numbers are measured by hand (docs/performance.md); here the CI-sized runs check
that each script runs end to end on a tiny model and prints the keys the docs are generated from,
with ratios that are positive finite numbers. Nothing here times anything.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO

SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_common as bc  # noqa: E402
import bench_quickstart as bq  # noqa: E402
import gen_perf_docs as perf  # noqa: E402

ROLLOUT_KEYS = (
    "peak_fp32_gflops",
    "peak_bf16_gflops",
    "vllm_prefill_tokens_per_s",
    "vllm_decode_tokens_per_s",
    "vllm_prefill_vs_bf16_peak",
    "vllm_decode_vs_bf16_peak",
    "hf_prefill_tokens_per_s",
    "hf_decode_tokens_per_s",
    "engine_vs_generate",
    "engine_vs_generate_prefill",
    "engine_vs_generate_decode",
    "engine_vs_transformers_rollout",
    "k_prefill_cost_n",
    "k_prefill_cost_separate",
    "cut_decode_vllm_masker_s",
    "cut_decode_sort_free_s",
    "cut_sampling_speedup",
)
TRAIN_KEYS = (
    "trl_sft_train_s",
    "min_sft_s",
    "sft_threads_speedup",
    "sft_overhead",
    "sft_padding_free_vs_min",
    "trl_dpo_train_s",
    "min_dpo_s",
    "dpo_overhead",
    "dpo_precomputed_overhead",
    "trl_sft_shipped_head_train_s",
    "trl_sft_compact_head_train_s",
    "sft_compact_head_speedup",
    "trl_dpo_precomputed_shipped_head_train_s",
    "trl_dpo_precomputed_compact_head_train_s",
    "dpo_compact_head_speedup",
    "train_overhead",
)
GRPO_KEYS = (
    "project_rollout_s",
    "project_train_s",
    "project_seconds",
    "project_engine_start_s",
    "trl_generate_s",
    "trl_train_s",
    "trl_seconds",
    "speedup",
    "speedup_with_engine_start",
)
HANDOFF_KEYS = (
    "reload_s",
    "lora_swap_s",
    "restart_s",
    "request_s",
    "reload_net_s",
    "restart_net_s",
    "restart_vs_reload",
    "restart_vs_lora",
    "restart_vs_reload_net",
)


def _positive_finite(result: dict, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in result]
    assert not missing, f"missing keys {missing}"
    bad = {k: result[k] for k in keys if not (math.isfinite(result[k]) and result[k] > 0)}
    assert not bad, f"not positive finite: {bad}"


def _run_script(name: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "lines.jsonl"
    env = {**os.environ, "MBT_ONLINE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), "--ci", "--out", str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = bc.parse_json_line(proc.stdout)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [result]
    assert result["nproc"] == os.cpu_count() and result["model"] == "tiny"
    return result


# ---------------------------------------------------------------- arithmetic and output


def test_model_shape_counts_every_matmul_weight(tiny_model_dir):
    """2 FLOPs per weight of every linear layer, the (tied) LM head included, per token."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    shape = bc.model_shape(tiny_model_dir)
    assert shape.matmul_params == linear
    assert shape.token_flops(0) == 2 * linear
    c = model.config
    width = c.num_attention_heads * (c.head_dim or c.hidden_size // c.num_attention_heads)
    assert shape.token_flops(10) - shape.token_flops(0) == 4 * c.num_hidden_layers * width * 10
    assert shape.prefill_flops(3) == sum(shape.token_flops(i) for i in range(3))


def test_matmul_rate_is_a_positive_rate():
    rate = bc.matmul_gflops("float32", size=128, seconds=0.05)
    assert math.isfinite(rate) and rate > 0.01


def test_parse_json_line_takes_the_last_object_among_log_lines():
    text = 'INFO start\n{"a": 1}\nnoise {"b"\n{"bench": "x", "v": 2}\ntrailing log\n'
    assert bc.parse_json_line(text) == {"bench": "x", "v": 2}
    with pytest.raises(ValueError):
        bc.parse_json_line("no json here")


# ---------------------------------------------------------------- the quickstart's targets


def _round(r: int, acc: float, tokens: float, degen: float, incl: float) -> dict:
    return {
        "round": r,
        "eval/accuracy": acc,
        "eval/mean_tokens": tokens,
        "eval/degeneration_rate": degen,
        "eval/answer_inclusive_rate": incl,
    }


def test_quickstart_runs_in_the_callers_environment_not_the_benchmarks(tmp_path, monkeypatch):
    """bench_common's defaults (a 2 GiB KV cache, wandb off) are for the micro-benchmarks; the
    quickstart benchmark measures the job as `make quickstart` runs it."""
    monkeypatch.setitem(bq.CALLER_ENV, "MBT_BENCH_PROBE", "user")
    for key in (*bc.ENV_DEFAULTS, "MBT_ONLINE_CACHE"):
        monkeypatch.delitem(bq.CALLER_ENV, key, raising=False)
    env = bq.child_env(tmp_path, 3, keep_cache=False)
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"]  # set in this process by bench_common
    assert not set(bc.ENV_DEFAULTS) & set(env)
    assert env["MBT_BENCH_PROBE"] == "user"
    assert env["MBT_ONLINE_CACHE"] == str(tmp_path / "cache-3")
    assert "MBT_ONLINE_CACHE" not in bq.child_env(tmp_path, 3, keep_cache=True)


def test_quickstart_targets_read_round_zero_and_the_last_round():
    rows = [_round(0, 0.60, 150.0, 0.20, 0.30), _round(1, 0.7, 120, 0.1, 0.2)]
    rows.append(_round(3, 0.80, 80.0, 0.01, 0.05))
    t = bq.learning_targets(rows)
    assert t["rounds"] == 3 and t["accuracy_gain"] == pytest.approx(0.20)
    assert t["tokens_change"] == pytest.approx(80 / 150 - 1, abs=1e-4)
    assert all(t["met"].values())


def test_quickstart_targets_name_each_miss():
    # the documented seed-1 run of the old config: tokens -32%, round-0 degeneration 9%
    rows = [_round(0, 0.63, 127.395, 0.09, 0.325), _round(3, 0.85, 85.975, 0.01, 0.08)]
    met = bq.learning_targets(rows)["met"]
    assert met == {
        "round0_degeneration": False,
        "round0_answer_inclusive": True,
        "accuracy_gain": True,
        "tokens_change": False,
        "final_degeneration": True,
    }
    run = {"exit_code": 0, "wall_seconds": 250.0, "peak_rss_gib": 3.0, "targets": {"met": met}}
    assert not bq.all_met(run)
    run["targets"]["met"] = dict.fromkeys(met, True)
    assert bq.all_met(run)
    assert not bq.all_met({**run, "wall_seconds": 301.0})
    assert not bq.all_met({"exit_code": 1, "wall_seconds": 10.0, "peak_rss_gib": 1.0})


def test_quickstart_metrics_keep_the_last_row_of_a_repeated_round(tmp_path):
    lines = [_round(0, 0.5, 100, 0.2, 0.2), _round(1, 0.6, 90, 0.1, 0.1), _round(1, 0.7, 80, 0, 0)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows = bq.read_metrics(tmp_path)
    assert [r["round"] for r in rows] == [0, 1] and rows[1]["eval/accuracy"] == 0.7


# ---------------------------------------------------------------- the docs/performance.md tables


def _handoff(model: str, reload_s: float) -> dict:
    return {
        "bench": "handoff",
        "model": model,
        "dtype": "float32",
        "nproc": 2,
        "load_1min": 0.5,
        "contended": False,
        "reload_s": reload_s,
        "lora_swap_s": 0.5,
        "restart_s": 4.0,
        "restart_vs_reload": 4.0 / reload_s,
        "restart_vs_lora": 8.0,
        "request_s": 0.05,
        "restart_vs_reload_net": 3.95 / (reload_s - 0.05),
    }


def test_perf_section_shows_the_newest_line_per_model():
    lines = [_handoff("quickstart", 0.4), _handoff("smollm2", 0.2), _handoff("quickstart", 0.1)]
    section = perf.render(lines)
    rows = [r for r in section.splitlines() if r.startswith("| quickstart")]
    assert len(rows) == 1 and "0.10 s" in rows[0] and "40.00x (79.00x)" in rows[0]
    assert "| 0.05 s |" in rows[0]  # the request alone, subtracted for the net ratio
    assert "| smollm2 (float32) | 0.20 s" in section
    assert section.count("No result recorded yet.") == 3  # rollout, train and quickstart


def test_perf_section_names_each_quickstart_run_and_its_misses():
    met = dict.fromkeys(["round0_degeneration", "accuracy_gain", "tokens_change"], True)
    targets = {"round0_degeneration": 0.335, "round0_answer_inclusive": 0.5, "accuracy_gain": 0.4}
    targets |= {"tokens_change": -0.46, "final_degeneration": 0.04}
    run = {"seed": 0, "exit_code": 0, "wall_seconds": 401.0, "peak_rss_gib": 3.5}
    summary = {"bench": "quickstart", "model": "bootstrap-student", "nproc": 2, "load_1min": 1.0}
    summary |= {"target_seconds": 300.0, "target_gib": 4.0, "runs": []}
    summary["runs"] = [
        {**run, "targets": {**targets, "met": {**met, "final_degeneration": False}}},
        {**run, "seed": 1, "wall_seconds": 290.0, "targets": {**targets, "met": {**met}}},
        {**run, "seed": 2, "wall_seconds": 290.0, "peak_rss_gib": 4.4, "targets": {"met": met}},
    ]
    rows = [
        r
        for r in perf.render([summary]).splitlines()
        if r.startswith("| 0 ") or r.startswith("| 1 ")
    ]
    assert len(rows) == 2
    assert "| 401 s |" in rows[0] and "missed: time, final_degeneration" in rows[0]
    assert "| 33.5%, 50.0% | 40.0 points, -46.0%, 4.0% |" in rows[0]
    assert "| met |" in rows[1]
    assert "missed: memory |" in perf.render([summary])
    summary["runs"][1]["bootstrap_seed"] = 3  # a run on its own bootstrap student says which
    assert "| 1 (bootstrap.seed 3) | 290 s |" in perf.render([summary])


def _grpo(model: str, project_s: float, trl_s: float) -> dict:
    return {
        "bench": "grpo",
        "model": model,
        "dtype": "float32",
        "nproc": 2,
        "load_1min": 0.5,
        "contended": False,
        "threads": 2,
        "questions": 32,
        "samples": 3,
        "max_tokens": 256,
        "project_engine_start_s": 9.0,
        "project_rollout_s": project_s - 6.0,
        "project_score_s": 0.05,
        "project_train_s": 5.95,
        "project_seconds": project_s,
        "project_steps": 8,
        "project_train_rows": 96,
        "project_dropped_groups": 5,
        "project_trained_groups": "all",
        "project_generated_tokens": 12000,
        "trl_seconds": trl_s,
        "trl_generate_s": trl_s - 8.0,
        "trl_steps": 8,
        "trl_train_rows": 96,
        "trl_generated_tokens": 11000,
        "speedup": trl_s / project_s,
        "speedup_with_engine_start": trl_s / (project_s + 9.0),
    }


def test_perf_section_shows_the_grpo_table_only_once_a_line_exists():
    """The GRPO table is newer than docs/performance.md's text: no line, no table (so `--check`
    passes before its first run); with lines, the newest per model."""
    assert "bench_grpo.py" not in perf.render([_handoff("quickstart", 0.4)])
    section = perf.render([_grpo("quickstart", 20.0, 50.0), _grpo("quickstart", 10.0, 40.0)])
    rows = [r for r in section.splitlines() if r.startswith("| quickstart (float32) | 32 x 3")]
    assert len(rows) == 1
    assert "| 4.0 + 0.05 + 6.0 = 10.0 s (9.0 s) | 40.0 s (32.0 s) | 4.00x (2.11x) |" in rows[0]
    assert "| 8 / 8, 96 / 96 (5 of 32; all) | 12,000 / 11,000 |" in rows[0]


def test_perf_section_replaces_only_what_lies_between_the_markers():
    text = f"# T\nbefore\n{perf.BEGIN}\nold table\n{perf.END}\nafter\n"
    out = perf.replace_section(text, "new table")
    assert out == f"# T\nbefore\n{perf.BEGIN}\nnew table\n{perf.END}\nafter\n"
    assert perf.replace_section(out, "new table") == out
    with pytest.raises(ValueError):
        perf.replace_section("# no markers\n", "x")


def test_perf_doc_tables_are_current():
    """docs/performance.md's tables are generated: run scripts/gen_perf_docs.py after a run."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "gen_perf_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------- the scripts, CI-sized


@pytest.mark.slow
def test_bench_rollout_ci(tmp_path):
    result = _run_script("bench_rollout.py", tmp_path)
    _positive_finite(result, ROLLOUT_KEYS)
    assert result["batch"] == result["prompts"] * result["samples"]
    assert set(result["targets_met"]) == set(result["targets"])
    # float32 logits: the sort-free masker draws exactly vLLM's tokens
    assert result["cut_samples_equal"] is True and result["cut_same_completions"] == 1.0


@pytest.mark.slow
def test_bench_train_ci(tmp_path):
    result = _run_script("bench_train.py", tmp_path)
    _positive_finite(result, TRAIN_KEYS)
    assert result["dpo_precompute_supported"] is True
    assert result["sft_steps"] == math.ceil(result["sft_rows"] / result["batch_size"])


@pytest.mark.slow
def test_bench_handoff_ci(tmp_path):
    result = _run_script("bench_handoff.py", tmp_path)
    _positive_finite(result, HANDOFF_KEYS)
    # the JSON line rounds to 4 decimals: a 0.01 s reload carries up to 0.5% of rounding
    assert result["restart_vs_reload"] == pytest.approx(
        result["restart_s"] / result["reload_s"], rel=1e-2
    )
    # net times: the timed span less the request alone, which a restart pays for as well
    for kind in ("reload", "restart"):
        expected = max(result[f"{kind}_s"] - result["request_s"], 1e-3)
        assert result[f"{kind}_net_s"] == pytest.approx(expected, abs=2e-4)
    assert result["restart_net_s"] < result["restart_s"]
    assert result["restart_vs_reload_net"] == pytest.approx(
        result["restart_net_s"] / result["reload_net_s"], rel=2e-2
    )
    assert result["target_met"] == (result["restart_vs_reload_net"] >= 10.0)
    # on the CPU the LoRA swap is timed again through vLLM's own kernels, on the same engine
    _positive_finite(result, ("lora_swap_vllm_kernels_s", "lora_kernel_speedup"))
    assert result["lora_kernel_speedup"] == pytest.approx(
        result["lora_swap_vllm_kernels_s"] / result["lora_swap_s"], rel=2e-2
    )


@pytest.mark.slow
def test_bench_grpo_ci(tmp_path):
    """One GRPO round on the engine against TRL sampling for itself, tiny: both timed, the ratio
    theirs, the same optimizer steps over the same questions and prompt tokens."""
    result = _run_script("bench_grpo.py", tmp_path)
    _positive_finite(result, GRPO_KEYS)
    assert (result["questions"], result["samples"], result["max_tokens"]) == (4, 2, 16)
    # the JSON line rounds to 4 decimals: sub-second tiny timings carry some rounding
    assert result["speedup"] == pytest.approx(
        result["trl_seconds"] / result["project_seconds"], rel=2e-2
    )
    assert result["project_seconds"] == pytest.approx(
        result["project_rollout_s"] + result["project_score_s"] + result["project_train_s"],
        abs=5e-4,
    )
    assert result["steps_match"] is True and result["project_steps"] == result["trl_steps"] >= 1
    per_step = result["per_device_train_batch_size"] // result["samples"]
    assert result["trl_steps"] == result["questions"] // per_step
    assert result["project_train_rows"] == result["trl_train_rows"] == result["trl_completions"]
    assert result["project_completions"] == result["questions"] * result["samples"]
    assert result["project_trained_groups"] == "all"
    assert 0 <= result["project_dropped_groups"] <= result["questions"]
    assert result["same_prompt_ids"] is True
    assert result["project_generated_tokens"] > 0 and result["trl_generated_tokens"] > 0
