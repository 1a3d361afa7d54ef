"""The vLLM engine wrapper on the tiny student: sampling contract, seeds, and the three handoffs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from engines import CHATS, GREEDY, SAMPLED, hf_greedy, save_lora, save_perturbed, texts  # noqa: F401

from mbt_online.contracts import PromptTooLongError
from mbt_online.generation import vllm_cpu_lora, vllm_cpu_sampler
from mbt_online.generation.requests import request_seed
from mbt_online.generation.vllm_engine import Engine


def test_request_seed_is_stable_and_spread_apart():
    assert request_seed(3, 0) == request_seed(3, 0)
    seeds = {request_seed(s, i) for s in range(4) for i in range(50)}
    assert len(seeds) == 200
    # vLLM gives sample k the seed base + k: neighbouring prompts must not share those streams.
    assert abs(request_seed(0, 1) - request_seed(0, 0)) > 64


def test_seeds_keep_the_numbers_runs_were_made_with():
    """The seed helpers replaced hand-written arithmetic; a run resumed across that change must
    draw exactly what it drew before."""
    import hashlib

    from mbt_online.seeds import hash_seed, stage_seed

    def old_hash(key: str, size: int) -> int:
        digest = hashlib.blake2b(key.encode(), digest_size=size).digest()
        return int.from_bytes(digest, "little") & 0x7FFF_FFFF

    assert [request_seed(s, i) for s, i in [(0, 0), (7, 3)]] == [
        old_hash("0:0", 8),
        old_hash("7:3", 8),
    ]
    assert hash_seed("teacher:5:1", digest_size=4) == old_hash("teacher:5:1", 4)
    for base, r in [(0, 0), (1234, 3), (7, 12)]:
        assert stage_seed(base, r, "rollout") == stage_seed(base, r, "train") == base + r
        assert stage_seed(base, r, "eval") == base + 10_000 + r
        assert stage_seed(base, r, "teach") == base * 1000 + r


def test_engine_arguments_come_from_the_config():
    from mbt_online.config import load_config
    from mbt_online.generation.backends import engine_kwargs

    cfg = load_config(
        None,
        ["engine.handoff=lora", "train.method=lora", "train.lora.r=8", "student.max_model_len=512"],
    )
    kw = engine_kwargs(cfg)
    assert (kw["enable_lora"], kw["max_lora_rank"], kw["max_model_len"]) == (True, 8, 512)
    assert kw["seed"] == cfg.run.seed and kw["kvcache_gib"] == cfg.engine.kvcache_gib
    # a teacher engine serves no adapters; a check script seeds its own engine
    assert engine_kwargs(cfg, lora=False, seed=5)["enable_lora"] is False
    assert engine_kwargs(cfg, lora=False, seed=5)["seed"] == 5


def test_importing_the_engine_module_does_not_import_vllm():
    code = "import sys, mbt_online.generation.vllm_engine; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    eng = Engine(str(tiny_model_dir), max_model_len=256, enable_lora=True, max_lora_rank=8)
    yield eng
    eng.close()


@pytest.mark.slow
def test_generate_returns_n_completions_with_counts(engine):
    result = engine.generate(CHATS, **{**SAMPLED, "max_tokens": 5})
    assert len(result) == len(CHATS)
    for chat, per_prompt in zip(CHATS, result, strict=True):
        assert len(per_prompt) == 3
        enc = engine.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_dict=True
        )
        expected_prompt = len(enc["input_ids"])
        for c in per_prompt:
            assert c.prompt_tokens == expected_prompt
            assert c.finish_reason in {"stop", "length"}
            assert 1 <= c.completion_tokens <= 5
    greedy = engine.generate(CHATS[:1], **{**GREEDY, "max_tokens": 5})[0][0]
    assert (greedy.finish_reason, greedy.completion_tokens) == ("length", 5)
    # vLLM itself refuses n > 1 at temperature 0; the wrapper repeats the greedy completion.
    assert engine.generate(CHATS[:1], **{**GREEDY, "max_tokens": 5, "n": 2})[0] == [greedy] * 2


@pytest.mark.slow
def test_seeds_fix_samples_and_batch_does_not_matter(engine):
    first = texts(engine.generate(CHATS, **SAMPLED))
    assert texts(engine.generate(CHATS, **SAMPLED)) == first
    assert texts(engine.generate(CHATS, **{**SAMPLED, "seed": 8})) != first
    assert len(set(first[0])) == 3  # the n samples of one prompt differ at T=1
    # The same prompt at the same index gives the same samples in a smaller batch.
    assert texts(engine.generate(CHATS[:1], **SAMPLED)) == first[:1]


@pytest.mark.slow
def test_top_k_top_p_samples_are_vllms_own(engine):
    """On the CPU the engine masks top-k + top-p without sorting the vocabulary; the samples are
    the ones vLLM's own sort-based masker draws (same seeds), and the cut changes them."""
    if torch.cuda.is_available():
        pytest.skip("the sort-free masker is the CPU's")
    cut = {**SAMPLED, "top_k": 5, "top_p": 0.8, "max_tokens": 24}
    assert vllm_cpu_sampler.installed()
    ours = texts(engine.generate(CHATS, **cut))
    vllm_cpu_sampler.restore()
    try:
        assert texts(engine.generate(CHATS, **cut)) == ours
    finally:
        vllm_cpu_sampler.install()
    assert texts(engine.generate(CHATS, **{**cut, "top_k": -1, "top_p": 1.0})) != ours


@pytest.mark.slow
def test_greedy_matches_transformers(engine, tiny_model_dir):
    ours = [c[0].text for c in engine.generate(CHATS, **GREEDY)]
    assert ours == hf_greedy(tiny_model_dir, engine.tokenizer, CHATS, GREEDY["max_tokens"])


@pytest.mark.slow
def test_stop_strings_end_generation(engine):
    base = engine.generate(CHATS[:1], **GREEDY)[0][0].text
    cut = base[3:6]
    stopped = engine.generate(CHATS[:1], **GREEDY, stop=[cut])[0][0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == base[: base.index(cut)]


@pytest.mark.slow
def test_too_long_prompt_is_rejected(engine):
    long_chat = [{"role": "user", "content": "word " * 400}]
    with pytest.raises(PromptTooLongError, match="#1"):
        engine.generate([CHATS[0], long_chat], **GREEDY)


@pytest.mark.slow
def test_reload_and_restart_agree_on_new_weights(engine, tiny_model_dir, tmp_path):
    new_dir = save_perturbed(tiny_model_dir, tmp_path / "perturbed")
    old = (texts(engine.generate(CHATS, **GREEDY)), texts(engine.generate(CHATS, **SAMPLED)))

    engine.handoff("reload", str(new_dir))
    reloaded = (texts(engine.generate(CHATS, **GREEDY)), texts(engine.generate(CHATS, **SAMPLED)))
    engine.handoff("restart", str(new_dir))
    restarted = (texts(engine.generate(CHATS, **GREEDY)), texts(engine.generate(CHATS, **SAMPLED)))

    assert reloaded == restarted
    assert reloaded[0] != old[0] and reloaded[1] != old[1]
    assert reloaded[0] == [[t] for t in hf_greedy(new_dir, engine.tokenizer, CHATS, 12)]

    engine.load_weights(str(tiny_model_dir))  # back to the old weights, in place
    assert texts(engine.generate(CHATS, **GREEDY)) == old[0]


@pytest.mark.slow
def test_lora_adapter_changes_output_and_matches_merged(engine, tiny_model_dir, tmp_path):
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    save_lora(tiny_model_dir, adapter, merged)
    base = texts(engine.generate(CHATS, **GREEDY))

    engine.handoff("lora", str(tiny_model_dir), str(adapter))
    with_lora = texts(engine.generate(CHATS, **GREEDY))
    assert with_lora != base
    assert with_lora == [[t] for t in hf_greedy(merged, engine.tokenizer, CHATS, 12)]
    if not torch.cuda.is_available():
        from vllm.lora.punica_wrapper import punica_cpu

        assert punica_cpu.bgmv_shrink is vllm_cpu_lora.bgmv_shrink  # what produced the match

    engine.set_lora(None)
    assert texts(engine.generate(CHATS, **GREEDY)) == base


@pytest.mark.slow
def test_handoff_rejects_bad_requests(engine, tiny_model_dir):
    with pytest.raises(ValueError, match="adapter_dir"):
        engine.handoff("lora", str(tiny_model_dir))
    with pytest.raises(ValueError, match="unknown handoff mode"):
        engine.handoff("swap", str(tiny_model_dir))  # type: ignore[arg-type]


@pytest.mark.slow
def test_sampled_completions_keep_their_tokens_and_sampling_log_probs(tiny_model_dir):
    """GRPO's samples: vLLM's token ids (the EOS kept where it stopped) and its processed
    log-probabilities, which without top-k / top-p are the model's softmax at the sampling
    temperature: what the trainer computes, so TRL's importance ratio starts at 1."""
    import torch
    from transformers import AutoModelForCausalLM

    eng = Engine(str(tiny_model_dir), max_model_len=256, sample_logprobs=True)
    try:
        sampled = dict(SAMPLED, top_k=-1, top_p=1.0, temperature=0.7, max_tokens=10)
        [[a, b, _]] = eng.generate(CHATS[:1], logprobs=True, **sampled)
        prompt = eng.render(CHATS[0])
    finally:
        eng.close()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    for c in (a, b):
        assert c.prompt_ids == prompt and len(c.token_ids) == len(c.logprobs) == c.completion_tokens
        ids = torch.tensor([prompt + c.token_ids])
        with torch.inference_mode():
            logits = model(ids).logits[0, len(prompt) - 1 : -1].float() / 0.7
        expected = torch.log_softmax(logits, -1)[torch.arange(len(c.token_ids)), c.token_ids]
        assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-3)
