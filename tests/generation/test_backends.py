"""The engine's platform defaults and its start-up check of the installed vLLM (no engine runs)."""

from __future__ import annotations

import pytest

from mbt_online import hardware
from mbt_online.config import ConfigError, load_config
from mbt_online.generation import vllm_engine as engine_module
from mbt_online.generation.backends import engine_kwargs
from mbt_online.generation.vllm_engine import Engine


def llm_kwargs(monkeypatch, *, gpu: bool, **overrides) -> dict:
    """What `Engine` would hand `vllm.LLM` for the quickstart config on a (fake) platform."""
    monkeypatch.setattr(hardware, "cuda_present", lambda: gpu)
    monkeypatch.setattr(Engine, "_start", lambda self, path: None)
    for key in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_ENABLE_V1_MULTIPROCESSING"):
        monkeypatch.delenv(key, raising=False)
    # TRAIN in-process (the memory share and sleep mode in staged mode: test_engine_release.py)
    engine = [f"engine.{k}={v}" for k, v in overrides.items()]
    cfg = load_config(None, ["runtime.mode=inproc", *engine])
    return Engine("unused", **engine_kwargs(cfg))._llm_kwargs


def test_cpu_engine_arguments_are_unchanged(monkeypatch):
    """Exactly the arguments the CPU engine had before the platform defaults existed."""
    assert llm_kwargs(monkeypatch, gpu=False) == dict(
        dtype="float32",
        max_model_len=1024,
        seed=0,
        enforce_eager=True,
        enable_chunked_prefill=False,
        max_num_batched_tokens=8192,
    )


def test_gpu_engine_uses_cuda_graphs_and_vllms_chunked_prefill(monkeypatch):
    kw = llm_kwargs(monkeypatch, gpu=True)
    assert kw["enforce_eager"] is False
    assert "enable_chunked_prefill" not in kw and "max_num_batched_tokens" not in kw
    assert kw["gpu_memory_utilization"] == 0.45


def test_explicit_engine_settings_win_on_either_platform(monkeypatch):
    kw = llm_kwargs(
        monkeypatch,
        gpu=True,
        enforce_eager="true",
        chunked_prefill="false",
        max_num_seqs=64,
        prefix_caching="false",
        gpu_memory_utilization=0.8,
    )
    assert kw["enforce_eager"] is True and kw["enable_chunked_prefill"] is False
    assert (kw["max_num_seqs"], kw["enable_prefix_caching"]) == (64, False)
    assert kw["gpu_memory_utilization"] == 0.8
    cpu = llm_kwargs(monkeypatch, gpu=False, enforce_eager="false", chunked_prefill="true")
    assert cpu["enforce_eager"] is False and cpu["enable_chunked_prefill"] is True


def test_reload_handoff_fails_at_start_on_a_vllm_without_folder_reload(monkeypatch):
    monkeypatch.setattr(engine_module, "reload_takes_folder", lambda: False)
    monkeypatch.setattr(Engine, "_start", lambda self, path: pytest.fail("engine started"))
    cfg = load_config(None)
    with pytest.raises(ConfigError, match=r"engine.handoff=reload needs a vLLM .*weights_path"):
        Engine.from_config(cfg, "unused")
    # restart needs no folder reload; a teacher's engine (lora=False) takes no new weights
    monkeypatch.setattr(Engine, "_start", lambda self, path: None)
    Engine.from_config(load_config(None, ["engine.handoff=restart"]), "unused")
    Engine.from_config(cfg, "unused", lora=False)


def test_reload_check_reads_the_runners_signatures(monkeypatch):
    import importlib
    import types

    old = types.SimpleNamespace(GPUModelRunner=type("R", (), {"reload_weights": lambda self: 0}))
    new = types.SimpleNamespace(
        GPUModelRunner=type("R", (), {"reload_weights": lambda self, weights_path=None: 0})
    )
    monkeypatch.setattr(importlib, "import_module", lambda name: old)
    assert engine_module.reload_takes_folder() is False
    monkeypatch.setattr(importlib, "import_module", lambda name: new)
    assert engine_module.reload_takes_folder() is True


@pytest.mark.slow
def test_installed_vllm_reloads_from_a_folder():
    """The pinned vLLM 0.32 (vllm-cpu here): both model runners take `weights_path`."""
    assert engine_module.reload_takes_folder() is True


def test_a_failed_worker_reload_restarts_the_engine(monkeypatch):
    """On GPU a worker's exception comes back as a RuntimeError: restart on the folder."""
    monkeypatch.setattr(hardware, "cuda_present", lambda: True)
    started: list[str] = []
    monkeypatch.setattr(Engine, "_start", lambda self, path: started.append(path))

    class FailingLLM:
        def collective_rpc(self, *args, **kwargs):
            raise RuntimeError("Worker failed with error 'weights_path'")

    eng = Engine("old")
    eng._llm = FailingLLM()
    monkeypatch.setattr(Engine, "close", lambda self: None)
    eng.load_weights("new")
    assert started == ["old", "new"]
