"""Library versions held: every replaced (or privately called) library function names the versions
it was written against, and on another version (faked here) it is not installed, the library's own
code stays, and the run log says so in one line however often the install is asked."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch
from datasets import Dataset

from mbt_online import versions
from mbt_online.generation import vllm_cpu_lora, vllm_cpu_sampler
from mbt_online.training import compact_head, fp32_head, grpo, saving
from mbt_online.training import trainer as train

INSTALLED = versions.library_versions()


def fake(**versions_now: str):
    """An `installed` that reports other versions for the libraries named."""

    def installed(library: str) -> str | None:
        return versions_now.get(library, INSTALLED.get(library))

    return installed


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    """Each test starts with nothing said and every library's own function in place."""
    saved = set(versions._SAID)
    versions._SAID.clear()
    compact_head.restore()
    fp32_head.restore()
    vllm_cpu_sampler.restore()
    vllm_cpu_lora.restore()
    yield
    compact_head.restore()
    fp32_head.restore()
    vllm_cpu_sampler.restore()
    vllm_cpu_lora.restore()
    versions._SAID.clear()
    versions._SAID.update(saved)


def said(caplog: pytest.LogCaptureFixture, library: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{library} ")]


def test_the_recorded_libraries_and_their_versions():
    assert set(INSTALLED) == {
        "torch",
        "transformers",
        "trl",
        "peft",
        "vllm",
        "datasets",
        "accelerate",
        "wandb",
    }
    assert INSTALLED["trl"] and INSTALLED["torch"]
    # vLLM's CPU build is the distribution vllm-cpu, still recorded as vllm
    import vllm

    assert INSTALLED["vllm"] == vllm.__version__
    assert versions.installed("no-such-library-anywhere") is None


@pytest.mark.parametrize(
    ("version", "inside"),
    [
        ("1.16.0", True),
        ("1.16.3", True),
        ("1.16.1.dev0", True),
        ("1.17.0", False),
        ("1.15.9", False),
        ("not a version", False),
    ],
)
def test_a_range_is_pep_440(version, inside):
    assert versions.in_range(version, ">=1.16,<1.17") is inside


def test_a_local_build_is_its_version():
    assert versions.in_range("2.13.0+cpu", ">=2.13,<2.14")


def test_every_replacement_states_the_versions_it_was_written_against():
    gates = [
        vllm_cpu_sampler.WRITTEN_FOR,
        vllm_cpu_lora.WRITTEN_FOR,
        compact_head.WRITTEN_FOR,
        fp32_head.WRITTEN_FOR,
        train.PRECOMPUTE,
        saving.ZERO3_SWITCH,
        grpo.IMPORTANCE_SAMPLING,
    ]
    for gate in gates:
        assert gate.library in versions.LIBRARIES and gate.versions and gate.theirs
        assert gate.holds(), f"the installed {gate.library} is outside {gate}"


def test_the_compact_head_on_another_trl_leaves_trls_own_and_says_so_once(monkeypatch, caplog):
    from trl.trainer import utils as trl_utils

    theirs = trl_utils._use_triton
    monkeypatch.setattr(versions, "installed", fake(trl="1.17.0"))
    with caplog.at_level(logging.WARNING, logger="mbt_online"):
        assert compact_head.install() is False
        assert compact_head.install() is False
    assert trl_utils._use_triton is theirs and not compact_head.installed()
    assert not trl_utils._use_triton(torch.device("cpu")), "TRL's own decision on the CPU"
    [line] = said(caplog, "trl")
    assert "trl 1.17.0" in line and ">=1.16,<1.17" in line and "_use_triton" in line


def test_the_float32_head_on_another_trl_leaves_trls_own(monkeypatch, caplog):
    from trl.trainer import dpo_trainer, sft_trainer

    theirs = (sft_trainer.add_fused_lm_head, dpo_trainer.add_fused_lm_head)
    monkeypatch.setattr(versions, "installed", fake(trl="2.0.0"))
    with caplog.at_level(logging.WARNING, logger="mbt_online"):
        assert fp32_head.install() is False and fp32_head.install() is False
    assert (sft_trainer.add_fused_lm_head, dpo_trainer.add_fused_lm_head) == theirs
    assert not fp32_head.installed()
    assert len(said(caplog, "trl")) == 1


def test_the_cpu_sampler_and_lora_kernels_on_another_vllm_leave_vllms_own(monkeypatch, caplog):
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.v1.sample.ops import topk_topp_sampler

    masker = topk_topp_sampler.apply_top_k_top_p_pytorch
    kernel = lora_ops.bgmv_shrink
    monkeypatch.setattr(versions, "installed", fake(vllm="0.40.1"))
    with caplog.at_level(logging.WARNING, logger="mbt_online"):
        for _ in range(3):
            assert vllm_cpu_sampler.install() is False
            assert vllm_cpu_lora.install() is False
    assert topk_topp_sampler.apply_top_k_top_p_pytorch is masker
    assert lora_ops.bgmv_shrink is kernel and not vllm_cpu_sampler.installed()
    lines = said(caplog, "vllm")
    assert len(lines) == 2, "one line for each replacement, however often it is asked"
    assert {"top-k/top-p" in line for line in lines} == {True, False}


def test_on_the_recorded_versions_the_replacements_install():
    assert compact_head.install() and compact_head.installed()
    assert vllm_cpu_sampler.install() and vllm_cpu_sampler.installed()


def test_a_library_not_installed_is_outside_every_range(monkeypatch, caplog):
    monkeypatch.setattr(versions, "installed", lambda library: None)
    with caplog.at_level(logging.WARNING, logger="mbt_online"):
        assert not compact_head.WRITTEN_FOR.holds()
    assert "trl (not installed)" in caplog.text


def _dpo_trainer(model_dir, tmp_path, precompute: bool):
    from mbt_online.config import TrainConfig

    cfg = TrainConfig(method="full")
    cfg.dpo.precompute_ref_log_probs = precompute
    pairs = Dataset.from_list([{"prompt": "Q?", "chosen": "A.", "rejected": "B."}] * 2)
    return train.dpo_trainer(model_dir, None, pairs, cfg, 0, tmp_path)


def test_the_reference_precompute_on_another_trl_is_left_to_trl(
    tiny_model_dir, tmp_path, monkeypatch, caplog
):
    """TRL's private `_precompute_ref_logps` is not called; TRL scores the reference at every
    step itself (the same values, as with `precompute_ref_log_probs` off)."""
    from trl import DPOTrainer

    calls: list[str] = []
    own = DPOTrainer._precompute_ref_logps

    def spy(self, *args, **kwargs):
        calls.append("precomputed")
        return own(self, *args, **kwargs)

    monkeypatch.setattr(DPOTrainer, "_precompute_ref_logps", spy)
    trainer = _dpo_trainer(tiny_model_dir, tmp_path / "in-range", precompute=True)
    assert calls == ["precomputed"] and trainer.ref_model is None

    monkeypatch.setattr(versions, "installed", fake(trl="1.18.2"))
    with caplog.at_level(logging.WARNING, logger="mbt_online"):
        trainer = _dpo_trainer(tiny_model_dir, tmp_path / "other", precompute=True)
    assert calls == ["precomputed"], "not called again on another TRL"
    assert trainer.ref_model is not None and not trainer.args.precompute_ref_log_probs
    lines = said(caplog, "trl")  # the compact and float32 heads say theirs too
    [line] = [line for line in lines if "_precompute_ref_logps" in line]
    assert "trl 1.18.2" in line and len(lines) == 3


def test_the_zero3_switch_is_left_alone_on_another_transformers(monkeypatch):
    from transformers.integrations import deepspeed

    class Zero3:
        def is_zero3(self) -> bool:
            return True

    config = Zero3()
    deepspeed.set_hf_deepspeed_config(config)
    try:
        with saving._without_zero3_init():
            assert not deepspeed.is_deepspeed_zero3_enabled(), "off for the merge"
        assert deepspeed.is_deepspeed_zero3_enabled()
        monkeypatch.setattr(versions, "installed", fake(transformers="6.0.0"))
        with saving._without_zero3_init():
            assert deepspeed.is_deepspeed_zero3_enabled(), "transformers' state untouched"
    finally:
        deepspeed.unset_hf_deepspeed_config()


def test_grpos_importance_sampling_on_another_trl_is_left_to_trl(
    tiny_model_dir, tmp_path, monkeypatch, caplog
):
    """TRL's private GRPO state is not set: TRL's own trainer, without the correction."""
    import json

    from mbt_online.config import TrainConfig
    from mbt_online.scoring.rl_reward import RL_COMPONENTS

    rows = [
        {
            "example_id": "q0",
            "sample": k,
            "prompt": json.dumps([{"role": "user", "content": "Q?"}]),
            "prompt_ids": [1, 2],
            "completion_ids": [3, 4],
            "logprobs": [-1.0, -1.0],
            "rl_reward": 0.0,
            **{f"rl_{name}": 0.0 for name in RL_COMPONENTS},
        }
        for k in range(2)
    ]
    weights = {name: (1.0 if name == "correct" else 0.0) for name in RL_COMPONENTS}
    sampling = grpo.GRPOSampling(2, 8, 1.0, weights)
    cfg = TrainConfig(threads=1)
    cfg.grpo.enabled, cfg.grpo.per_device_train_batch_size = True, 2
    trainer = grpo.grpo_trainer(tiny_model_dir, rows, cfg, 0, tmp_path / "in", sampling)
    assert trainer.use_vllm and trainer.vllm_importance_sampling_correction

    monkeypatch.setattr(versions, "installed", fake(trl="1.17.0"))
    with caplog.at_level(logging.WARNING, logger="mbt_online"):
        trainer = grpo.grpo_trainer(tiny_model_dir, rows, cfg, 0, tmp_path / "other", sampling)
    assert not trainer.use_vllm, "TRL gates its correction on use_vllm: off, as TRL has it"
    assert [line for line in said(caplog, "trl") if "importance-sampling" in line]
