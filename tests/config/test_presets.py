"""GPU presets and hardware overlays, layered `--config` files, memory estimates, `--dry-run`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from mbt_online.config import CONFIG_DIR, ConfigError, load_config, merge_configs
from mbt_online.config.learning import grad_accum_for
from mbt_online.training.memory import (
    GB,
    KNOWN_SHAPES,
    ModelShape,
    activation_bytes,
    estimate,
    shape_of,
    table,
)

PRESETS = sorted(CONFIG_DIR.glob("gpu/qwen3-*.yaml"))
OVERLAYS = sorted(CONFIG_DIR.glob("gpu/hw-*.yaml"))
SIZES = {"0.6b": "0.6B", "1.7b": "1.7B", "4b": "4B", "8b": "8B"}


def test_the_presets_and_overlays_ship():
    assert [p.stem for p in PRESETS] == [f"qwen3-{s}" for s in sorted(SIZES)]
    assert [p.stem for p in OVERLAYS] == ["hw-1gpu", "hw-8gpu"]


@pytest.mark.parametrize("path", PRESETS + OVERLAYS, ids=lambda p: p.stem)
def test_each_preset_and_overlay_validates_alone(path):
    load_config(path)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.stem)
@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_each_preset_validates_with_each_overlay(preset, overlay):
    cfg = load_config([preset, overlay])
    base = load_config(preset)
    assert cfg.student == base.student and cfg.data == base.data  # the overlay keeps the model
    assert cfg.train.sft.learning_rate == 1e-4 and cfg.train.sft.lr_scheduler == "cosine"
    world = 8 if overlay.stem == "hw-8gpu" else 1
    accum = grad_accum_for(cfg.train.sft, world, "train.sft")
    assert cfg.train.sft.batch_size * accum * world == 128


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_presets_carry_the_papers_settings(preset):
    cfg = load_config(preset)
    size = preset.stem.removeprefix("qwen3-")
    assert cfg.student.model == f"Qwen/Qwen3-{SIZES[size]}"
    assert cfg.student.dtype == "bfloat16"
    for s in (cfg.rollout, cfg.eval.sampling):
        assert (s.temperature, s.top_p, s.top_k) == (0.6, 0.95, 20)
    sft = cfg.train.sft
    assert (sft.learning_rate, sft.warmup_ratio, sft.epochs, sft.max_grad_norm) == (
        1e-4,
        0.1,
        1,
        0.3,
    )
    accum = grad_accum_for(sft, 1, "train.sft")
    assert cfg.train.method == "full" and sft.batch_size * accum == 128


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_headers_hold_the_estimators_table(preset):
    """The table in each header is what tools/memory.py computes (no drift after a change)."""
    cfg = load_config(preset)
    header = [line.removeprefix("#   ") for line in preset.read_text().splitlines()]
    shape = KNOWN_SHAPES[cfg.student.model]
    rows = table(shape, cfg.train.sft.max_length, cfg.train.lora.r)
    start = header.index(rows[0])
    assert header[start : start + len(rows)] == rows


def test_paper_sweep_covers_every_size():
    from mbt_online.sweeps.spec import expand, load_sweep, member_config

    path = CONFIG_DIR / "sweeps/paper-qwen3.yaml"
    members = expand(path)
    names = [m.name for m in members]
    assert len(names) == 60
    for m in members:  # every run validates on its size
        cfg = member_config(load_sweep(path), m, CONFIG_DIR)
        assert cfg.student.model.lower().endswith(m.name.rsplit("_", 1)[1])
        rl = m.name.split("_")[0] in RL_ROWS
        assert cfg.train.grpo.enabled is rl
        if rl:  # the paper's RL rows: SFT then GRPO, or GRPO alone
            assert cfg.train.sft.enabled is (m.name.split("_")[0] != "grpo")
            assert cfg.rollout.samples == 8 and not cfg.train.dpo.enabled
    controls = ("self-distill-paper", "teacher-distill", "distill-r", "direct-r")
    rows = (
        "base",
        "metacog",
        "self-distill",
        *controls,
        "mbt-s",
        "mbt-r",
        "mbt-r-online",
        *RL_ROWS,
    )
    for row in rows:
        assert {f"{row}_{size}" for size in SIZES} <= set(names)


RL_ROWS = ("grpo", "self-distill-grpo", "teacher-distill-grpo", "mbt-s-grpo", "mbt-r-grpo")


# ---------------------------------------------------------------------------------------------
# layered --config files


def test_later_config_files_override_earlier_ones(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("run: {name: a, seed: 3}\ntrain: {sft: {batch_size: 2, grad_accum: 4}}\n")
    b.write_text("run: {name: b}\ntrain: {sft: {grad_accum: 8}}\n")
    cfg = load_config([a, b], ["train.sft.batch_size=5"])
    assert (cfg.run.name, cfg.run.seed) == ("b", 3)  # a section merges key by key
    assert (cfg.train.sft.batch_size, cfg.train.sft.grad_accum) == (5, 8)
    assert load_config([b, a]).run.name == "a"
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([a, tmp_path / "missing.yaml"])


def test_merge_replaces_lists_and_values():
    base = {"data": {"eval_more": [{"limit": 1}], "train": {"limit": 2, "offset": 1}}}
    top = {"data": {"eval_more": [], "train": {"limit": 3}}}
    assert merge_configs(base, top) == {
        "data": {"eval_more": [], "train": {"limit": 3, "offset": 1}}
    }
    assert base["data"]["train"]["limit"] == 2  # inputs untouched


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mbt_online", *args], capture_output=True, text=True
    )


def test_repeated_config_flag_layers_files():
    out = cli("config", "show", "-c", "gpu/qwen3-0.6b", "-c", "gpu/hw-1gpu")
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["student"]["model"] == "Qwen/Qwen3-0.6B" and cfg["train"]["method"] == "lora"


# ---------------------------------------------------------------------------------------------
# train --dry-run


@pytest.mark.parametrize(
    ("overlay", "method", "accum", "world", "total_gb"),
    [("hw-1gpu", "lora", 128, 1, 34.7), ("hw-8gpu", "full", 16, 8, 74.1)],
)
def test_dry_run_prints_runtime_and_memory(tmp_path, overlay, method, accum, world, total_gb):
    run_dir = tmp_path / "run"
    out = cli(
        "train",
        "--dry-run",
        "-c",
        "gpu/qwen3-4b",
        "-c",
        f"gpu/{overlay}",
        "--run-dir",
        str(run_dir),
    )
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)  # the plan is YAML comments below the resolved config
    # the accumulation is derived from the preset's global batch and the world, never pinned
    assert cfg["train"]["method"] == method and cfg["train"]["sft"]["global_batch_size"] == 128
    assert "engine.backend=vllm, engine.handoff=reload" in out.stdout
    assert "auto -> stop on this machine, sleep on a CUDA machine" in out.stdout
    assert "TRAIN runs staged" in out.stdout and f"world {world}," in out.stdout
    processes = f"{world} process{'es' if world > 1 else ''}"
    assert f"x grad_accum {accum} x {processes} = 128" in out.stdout
    assert f"train.method={method}, 4.02B parameters" in out.stdout
    assert f"total {total_gb:.1f} GB" in out.stdout
    assert not run_dir.exists()


# ---------------------------------------------------------------------------------------------
# the memory estimator, against hand-computed numbers

TOY = ModelShape(
    hidden=8, layers=2, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=10, tied=True
)


def test_parameter_counts_by_hand_and_qwen3s_published_sizes():
    # per layer: q 64 + k 32 + v 32 + o 64 + gate/up/down 3 x 128 + norms 2x8 + q/k norms 2x4
    assert TOY.params() == 2 * 600 + 80 + 8
    assert TOY.lora_params(2) == 2 * 2 * (16 + 12 + 12 + 16 + 24 + 24 + 24)
    untied = ModelShape(8, 2, 16, 2, 1, 4, 10, tied=False)
    assert untied.params() == TOY.params() + 80
    # Qwen3's model cards: 0.6B (0.44B non-embedding), 1.7B (1.4B), 4B (3.6B), 8B (6.95B)
    for name, total, non_embedding in [
        ("Qwen/Qwen3-0.6B", 0.596, 0.44),
        ("Qwen/Qwen3-1.7B", 1.72, 1.41),
        ("Qwen/Qwen3-4B", 4.02, 3.63),
        ("Qwen/Qwen3-8B", 8.19, 6.95),
    ]:
        s = KNOWN_SHAPES[name]
        embeddings = s.vocab * s.hidden * (1 if s.tied else 2)
        assert s.params() / 1e9 == pytest.approx(total, abs=0.01)
        assert (s.params() - embeddings) / 1e9 == pytest.approx(non_embedding, abs=0.01)


def test_activation_bytes_by_hand():
    # per token: fp32 residual 4 x 8 x 2 layers = 64; one layer's bf16 intermediates
    # 2 x (4x8 + 3x(2+1)x4 + 4x16) = 264; logits (2 + 4 + 4) x 10 = 100
    assert activation_bytes(TOY, 3) == 3 * (64 + 264 + 100)
    assert activation_bytes(TOY, 3, checkpointing=False) == 3 * (64 + 2 * 264 + 100)


def test_estimate_by_hand():
    full = estimate(TOY, method="full", tokens=3)
    assert (full.weights, full.grads, full.optimizer) == (1288 * 4, 1288 * 4, 1288 * 8)
    assert full.total == 1288 * 16 + 3 * 428
    zero3 = estimate(TOY, method="full", tokens=3, world_size=4, sharding="zero3")
    assert (zero3.weights, zero3.grads, zero3.optimizer) == (1288, 1288, 2576)
    zero2 = estimate(TOY, method="full", tokens=3, world_size=4, sharding="zero2")
    assert (zero2.weights, zero2.grads, zero2.optimizer) == (1288 * 4, 1288, 2576)
    lora = estimate(TOY, method="lora", tokens=3, lora_rank=2)
    assert (lora.weights, lora.grads, lora.optimizer) == (1288 * 4 + 512 * 4, 512 * 4, 512 * 8)
    bf16 = estimate(TOY, method="full", tokens=3, master_bytes=2)
    assert (bf16.weights, bf16.grads, bf16.optimizer) == (1288 * 2, 1288 * 2, 1288 * 8)


def test_qwen3_4b_full_on_one_gpu_by_hand():
    """16 bytes per parameter for weights, grads and AdamW: 4.02B -> 64.4 GB before activations."""
    e = estimate(KNOWN_SHAPES["Qwen/Qwen3-4B"], method="full", tokens=1)
    assert (e.weights + e.grads + e.optimizer) / GB == pytest.approx(16 * 4.0225, abs=0.01)


def test_shape_from_a_local_config_json(tmp_path):
    config = dict(
        hidden_size=8,
        num_hidden_layers=2,
        intermediate_size=16,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=4,
        vocab_size=10,
        tie_word_embeddings=True,
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert shape_of(str(tmp_path)) == TOY
    assert shape_of("qwen/qwen3-8b") == KNOWN_SHAPES["Qwen/Qwen3-8B"]
    assert shape_of(str(tmp_path / "nowhere")) is None
