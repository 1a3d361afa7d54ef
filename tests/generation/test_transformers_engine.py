"""The transformers rollout backend (`engine.backend=transformers`) on the tiny student: the same
contract as the vLLM engine (counts, finish reasons, seeds, handoffs), its greedy output equal to
vLLM's, and a run through the real loop with it."""

from __future__ import annotations

import pytest
import torch
from engines import CHATS, GREEDY, SAMPLED, hf_greedy, save_lora, save_perturbed, texts
from fakes import STUDENT, Fakes, artifacts, quick_datasets, tiny_config  # noqa: F401

from mbt_online import loop
from mbt_online.contracts import PromptTooLongError, Trained, TrainJob
from mbt_online.generation.backends import make_generator
from mbt_online.generation.transformers_engine import TransformersEngine


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir):
    eng = TransformersEngine(str(tiny_model_dir), max_model_len=256)
    yield eng
    eng.close()


def test_greedy_matches_transformers_per_prompt(hf_engine, tiny_model_dir):
    """Batched and left-padded, greedy decoding equals one-prompt-at-a-time `generate`."""
    ours = [c[0].text for c in hf_engine.generate(CHATS, **GREEDY)]
    assert ours == hf_greedy(tiny_model_dir, hf_engine.tokenizer, CHATS, GREEDY["max_tokens"])


def test_generate_returns_n_completions_with_counts(hf_engine):
    result = hf_engine.generate(CHATS, **{**SAMPLED, "max_tokens": 5})
    assert [len(per_prompt) for per_prompt in result] == [3, 3, 3]
    for chat, per_prompt in zip(CHATS, result, strict=True):
        expected_prompt = len(
            hf_engine.tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, return_dict=True
            )["input_ids"]
        )
        for c in per_prompt:
            assert c.prompt_tokens == expected_prompt
            assert c.finish_reason in {"stop", "length"}
            assert 1 <= c.completion_tokens <= 5
            assert (c.finish_reason == "length") == (c.completion_tokens == 5)
    greedy = hf_engine.generate(CHATS[:1], **{**GREEDY, "max_tokens": 5})[0][0]
    assert (greedy.finish_reason, greedy.completion_tokens) == ("length", 5)
    assert hf_engine.generate(CHATS[:1], **{**GREEDY, "max_tokens": 5, "n": 2})[0] == [greedy] * 2


def test_eos_and_stop_strings_end_a_completion(hf_engine):
    eos = hf_engine.tokenizer.eos_token_id
    word = hf_engine.tokenizer("Paris is", add_special_tokens=False)["input_ids"]
    ended = hf_engine._completion([*word, eos, eos], 9, {eos}, [])
    # the EOS token counts (vLLM counts it), the padding after it does not
    assert (ended.text, ended.finish_reason) == ("Paris is", "stop")
    assert ended.completion_tokens == len(word) + 1
    assert hf_engine._completion(word, 9, {eos}, []).finish_reason == "length"
    base = hf_engine.generate(CHATS[:1], **GREEDY)[0][0].text
    cut = base[3:6]
    stopped = hf_engine.generate(CHATS[:1], **GREEDY, stop=[cut])[0][0]
    assert (stopped.finish_reason, stopped.text) == ("stop", base[: base.index(cut)])
    assert stopped.completion_tokens < GREEDY["max_tokens"]


def test_seeds_fix_samples_and_batch_does_not_matter(hf_engine):
    first = texts(hf_engine.generate(CHATS, **SAMPLED))
    assert texts(hf_engine.generate(CHATS, **SAMPLED)) == first
    assert texts(hf_engine.generate(CHATS, **{**SAMPLED, "seed": 8})) != first
    assert len(set(first[0])) == 3  # the n samples of one prompt differ at T=1
    assert texts(hf_engine.generate(CHATS[:1], **SAMPLED)) == first[:1]
    # other neighbours in a batch, or none, draw the same samples for the same prompt index
    hf_engine.batch_size = 1
    try:
        assert texts(hf_engine.generate(CHATS, **SAMPLED)) == first
    finally:
        hf_engine.batch_size = 8
    top = texts(hf_engine.generate(CHATS, **{**SAMPLED, "top_k": 3, "top_p": 0.5}))
    assert top != first and all(len(t) == 3 for t in top)


def test_too_long_prompt_is_rejected(hf_engine):
    long_chat = [{"role": "user", "content": "word " * 400}]
    with pytest.raises(PromptTooLongError, match="#1"):
        hf_engine.generate([CHATS[0], long_chat], **GREEDY)


def test_handoffs_serve_the_new_weights(tiny_model_dir, tmp_path):
    new_dir = save_perturbed(tiny_model_dir, tmp_path / "perturbed")
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    save_lora(tiny_model_dir, adapter, merged)
    eng = TransformersEngine(str(tiny_model_dir), max_model_len=256)
    old = texts(eng.generate(CHATS, **GREEDY))
    eng.handoff("reload", str(new_dir))
    reloaded = texts(eng.generate(CHATS, **GREEDY))
    assert reloaded != old
    assert reloaded == [[t] for t in hf_greedy(new_dir, eng.tokenizer, CHATS, 12)]
    eng.handoff("restart", str(new_dir))
    assert texts(eng.generate(CHATS, **GREEDY)) == reloaded
    eng.handoff("lora", str(tiny_model_dir), str(adapter))  # loads the base back, then the adapter
    assert texts(eng.generate(CHATS, **GREEDY)) == [
        [t] for t in hf_greedy(merged, eng.tokenizer, CHATS, 12)
    ]
    eng.handoff("lora", str(tiny_model_dir), str(adapter))  # a second adapter replaces the first
    eng.set_lora(None)
    assert texts(eng.generate(CHATS, **GREEDY)) == old
    with pytest.raises(ValueError, match="adapter_dir"):
        eng.handoff("lora", str(tiny_model_dir))
    eng.close()
    eng.close()
    with pytest.raises(RuntimeError, match="closed"):
        eng.generate(CHATS, **GREEDY)


def test_the_config_picks_the_backend_in_one_place(tiny_model_dir, tmp_path, monkeypatch):
    from mbt_online.generation import vllm_engine as engine

    cfg = tiny_config(tmp_path, **{"engine.backend": "transformers"})
    assert isinstance(make_generator(cfg, str(tiny_model_dir)), TransformersEngine)
    started = []
    monkeypatch.setattr(engine.Engine, "from_config", lambda *a, **k: started.append(k) or "vllm")
    assert make_generator(tiny_config(tmp_path), str(tiny_model_dir), lora=False) == "vllm"
    assert started == [dict(lora=False, seed=None)]
    # the loop's drivers go through the same factory
    cfg = tiny_config(
        tmp_path, **{"engine.backend": "transformers", "student.model": tiny_model_dir}
    )
    drivers = loop.real_drivers(cfg, tmp_path / "run")
    assert isinstance(drivers.make_generator(str(tiny_model_dir)), TransformersEngine)


class SavingTrainer:
    """A trainer that writes a real (perturbed) model folder, so a handoff has weights to load."""

    def __init__(self, base: str) -> None:
        self.base = base

    def train(self, job: TrainJob) -> Trained:
        out = job.out_dir / "model"
        save_perturbed(self.base, out, scale=0.01, seed=job.seed)
        return Trained(str(out), None, {"train/sft_loss": 1.0, "train/sft_seconds": 0.5})


def test_a_run_with_the_transformers_backend_leaves_the_same_artifacts(tiny_model_dir, tmp_path):
    """The real loop over the transformers backend (fake teacher, a trainer saving real folders)
    writes the same stages, state and metrics keys as a run over the fake generator."""
    fake_cfg = tiny_config(
        tmp_path / "fake", **{"rollout.max_tokens": 16, "eval.sampling.max_tokens": 16}
    )
    fake_run = loop.train(fake_cfg, drivers=Fakes(fake_cfg).drivers)

    cfg = tiny_config(
        tmp_path / "hf",
        **{
            "engine.backend": "transformers",
            "rollout.max_tokens": 16,
            "eval.sampling.max_tokens": 16,
            "student.max_model_len": 1024,
        },
    )
    fakes = Fakes(cfg)

    def drivers(cfg_, run_dir):
        base = fakes.drivers(cfg_, run_dir)
        base.initial = str(tiny_model_dir)
        base.make_generator = lambda model_dir: make_generator(cfg_, model_dir)
        base.make_trainer = lambda: SavingTrainer(str(tiny_model_dir))
        return base

    hf_run = loop.train(cfg, drivers=drivers)
    fake, hf = artifacts(fake_run), artifacts(hf_run)
    assert sorted(hf) == sorted(fake)
    assert [sorted(m) for m in hf["metrics"]] == [sorted(m) for m in fake["metrics"]]
    rollout = hf["round-1/rollout"]
    assert len(rollout) == 4 * 2 and {r["finish_reason"] for r in rollout} <= {"stop", "length"}
    assert hf["state"]["models"]["2"].endswith("round-2/train/model")


@pytest.mark.slow
def test_greedy_output_equals_vllm(hf_engine, tiny_model_dir):
    """The two backends on the same fp32 weights and prompts decode the same greedy tokens."""
    from mbt_online.generation.vllm_engine import Engine

    vllm_engine = Engine(str(tiny_model_dir), max_model_len=256)
    try:
        chats = [*CHATS, [{"role": "user", "content": "Name a river."}]]
        ours = hf_engine.generate(chats, **{**GREEDY, "max_tokens": 24})
        theirs = vllm_engine.generate(chats, **{**GREEDY, "max_tokens": 24})
    finally:
        vllm_engine.close()
    assert ours == theirs


def test_data_parallel_slices_cover_every_prompt_once():
    from mbt_online.generation.data_parallel import slices, worker_devices

    assert slices(5, 2) == [(0, 2), (2, 5)] and slices(1, 3) == [(0, 0), (0, 0), (0, 1)]
    for total, parts in [(0, 2), (7, 3), (64, 8)]:
        covered = [i for a, b in slices(total, parts) for i in range(a, b)]
        assert covered == list(range(total))
    assert worker_devices(1, 2, ["0", "1", "2", "3"]) == "2,3"
    assert worker_devices(0, 1, []) is None
    with pytest.raises(ValueError, match="needs 4 GPUs"):
        worker_devices(1, 2, ["0", "1", "2"])


def test_vllm_seeds_follow_the_global_prompt_index(tiny_model_dir):
    """A data-parallel slice passes its start: prompt i of the slice gets request i + start's
    seed, what it gets with one engine (checked on the arguments vLLM would receive)."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from mbt_online.generation.requests import request_seed
    from mbt_online.generation.vllm_engine import Engine

    class RecordingLLM:
        def generate(self, prompts, params, **_):
            self.seeds = [p.seed for p in params]
            return [SimpleNamespace(outputs=[]) for _ in prompts]

    eng = Engine.__new__(Engine)
    eng.max_model_len, eng._lora, eng._llm = 256, None, RecordingLLM()
    eng.tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    eng.generate(CHATS[:2], **{**SAMPLED, "index_offset": 5})
    assert eng._llm.seeds == [request_seed(SAMPLED["seed"], i) for i in (5, 6)]
    long_chat = [{"role": "user", "content": "word " * 400}]
    with pytest.raises(PromptTooLongError, match="#6"):
        eng.generate([CHATS[0], long_chat], **{**GREEDY, "index_offset": 5})


def test_two_engine_processes_give_one_engines_completions(hf_engine, tiny_model_dir, tmp_path):
    """engine.data_parallel_size=2 (spawned transformers engines): greedy and seeded samples are
    exactly one engine's, every prompt x sample once and in order; a handoff reaches both."""
    cfg = tiny_config(
        tmp_path,
        **{
            "engine.backend": "transformers",
            "engine.data_parallel_size": 2,
            "student.max_model_len": 256,
        },
    )
    chats = [*CHATS, [{"role": "user", "content": "Name a river."}], CHATS[0]]
    pool = make_generator(cfg, str(tiny_model_dir))
    try:
        assert type(pool).__name__ == "DataParallelGenerator"
        assert pool.generate(chats, **GREEDY) == hf_engine.generate(chats, **GREEDY)
        sampled = pool.generate(chats, **SAMPLED)
        assert sampled == hf_engine.generate(chats, **SAMPLED)
        assert [len(per_prompt) for per_prompt in sampled] == [3] * len(chats)
        assert sampled[0] != sampled[-1]  # the same chat at another index draws other samples
        new_dir = save_perturbed(tiny_model_dir, tmp_path / "perturbed")
        pool.handoff("reload", str(new_dir))
        single = TransformersEngine(str(new_dir), max_model_len=256)
        assert pool.generate(chats, **GREEDY) == single.generate(chats, **GREEDY)
        with pytest.raises(PromptTooLongError, match="#4"):
            pool.generate([*chats[:4], [{"role": "user", "content": "word " * 400}]], **GREEDY)
    finally:
        pool.close()
    pool.close()


def test_sampled_completions_keep_their_tokens_and_sampling_log_probs(hf_engine, tiny_model_dir):
    """GRPO's samples from this backend: each completion's token ids (the EOS kept where it
    stopped) and the log-probability of each token under the distribution it was drawn from,
    which without top-k / top-p is the model's softmax at the sampling temperature."""
    from transformers import AutoModelForCausalLM

    sampled = dict(SAMPLED, top_k=-1, top_p=1.0, temperature=0.7, max_tokens=10)
    [[a, b, _]] = hf_engine.generate(CHATS[:1], logprobs=True, **sampled)
    prompt = hf_engine.render(CHATS[0])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    for c in (a, b):
        assert c.prompt_ids == prompt and len(c.token_ids) == len(c.logprobs) == c.completion_tokens
        assert hf_engine.tokenizer.decode(c.token_ids, skip_special_tokens=True) == c.text
        ids = torch.tensor([prompt + c.token_ids])
        with torch.inference_mode():
            logits = model(ids).logits[0, len(prompt) - 1 : -1].float() / 0.7
        expected = torch.log_softmax(logits, -1)[torch.arange(len(c.token_ids)), c.token_ids]
        assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-4)
    # without the flag nothing extra is kept, as before
    [[plain, *_]] = hf_engine.generate(CHATS[:1], **sampled)
    assert plain.token_ids is None and plain.text == a.text
