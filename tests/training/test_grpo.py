"""GRPO on stored samples: TRL's trainer sees exactly the sampled tokens and the advantages a hand
computation gives, learns a toy reward from the project's engine, trains LoRA, and a stage
stopped at a checkpoint resumes to the weights of an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from mbt_online import preemption
from mbt_online.config import TrainConfig
from mbt_online.generation.requests import render_chat
from mbt_online.scoring.rl_reward import RL_COMPONENTS
from mbt_online.training.grpo import GRPOSampling, StoredSamples, grpo_trainer, train_grpo
from mbt_online.training.saving import CHECKPOINTS, last_checkpoint

ONLY_CORRECT = {name: (1.0 if name == "correct" else 0.0) for name in RL_COMPONENTS}


def chat(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Question {i}: which city is the capital?"}]


def sample_row(qid: int, k: int, prompt_ids, completion_ids, reward: float) -> dict:
    row = {
        "example_id": f"q{qid}",
        "sample": k,
        "prompt": json.dumps(chat(qid)),
        "prompt_ids": list(prompt_ids),
        "completion_ids": list(completion_ids),
        "logprobs": [-1.0] * len(completion_ids),
        "rl_reward": reward,
    }
    row.update({f"rl_{n}": (reward if n == "correct" else 0.0) for n in RL_COMPONENTS})
    return row


def grpo_config(**kw) -> TrainConfig:
    cfg = TrainConfig(threads=1)
    cfg.lora.r, cfg.lora.alpha = 8, 16
    cfg.grpo.enabled, cfg.grpo.learning_rate = True, 1e-3
    for key, value in kw.items():
        setattr(cfg.grpo, key, value)
    return cfg


def test_stored_samples_are_handed_out_per_question_in_sample_order():
    rows = [sample_row(q, k, [1, 2], [10 * q + k, 3], 0.0) for q in (0, 1) for k in (2, 0, 1)]
    store = StoredSamples(rows)
    out = store.rollout([chat(1)] * 3 + [chat(0)] * 3)
    assert out["completion_ids"] == [[10, 3], [11, 3], [12, 3], [0, 3], [1, 3], [2, 3]]
    assert store.served == [("q1", 0), ("q1", 1), ("q1", 2), ("q0", 0), ("q0", 1), ("q0", 2)]
    assert out["logprobs"][0] == [-1.0, -1.0] and out["rl_correct"] == [0.0] * 6


def test_the_trainer_learns_on_the_sampled_ids_with_hand_computed_advantages(
    tiny_model_dir: Path, tmp_path: Path
):
    """One group of three stored samples: TRL's batch holds exactly their token ids (the
    end-of-turn token kept) and the group-relative advantages (r - mean) / (std + 1e-4)."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tok.eos_token_id
    prompt = render_chat(tok, chat(0))
    completions = [[5, 6, eos], [7, eos], [8, 9, 10, eos]]
    rewards = [1.0, 0.0, 0.5]
    rows = [
        sample_row(0, k, prompt, c, r)
        for k, (c, r) in enumerate(zip(completions, rewards, strict=False))
    ]
    cfg = grpo_config(per_device_train_batch_size=3)
    sampling = GRPOSampling(3, 16, 1.0, ONLY_CORRECT)
    trainer = grpo_trainer(tiny_model_dir, rows, cfg, 0, tmp_path, sampling)
    seen: list[dict] = []
    real = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda inputs: seen.append(real(inputs)) or seen[-1]
    trainer.train()

    [batch] = seen
    got = [
        ids[mask.bool()].tolist()
        for ids, mask in zip(batch["completion_ids"], batch["completion_mask"], strict=False)
    ]
    assert got == completions
    assert [
        ids[mask.bool()].tolist()
        for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"], strict=False)
    ] == [prompt] * 3
    mean, std = 0.5, 0.5  # torch.std of [1, 0, 0.5] (unbiased)
    expected = torch.tensor([(r - mean) / (std + 1e-4) for r in rewards])
    assert torch.allclose(batch["advantages"].cpu(), expected, atol=1e-6)
    # the engine's log-probs reached TRL's sampler-mismatch correction
    assert "importance_sampling_ratio" in batch
    assert trainer.state.log_history[0]["rewards/correct/mean"] == pytest.approx(0.5)


def test_a_grpo_stage_stopped_at_a_checkpoint_resumes_to_the_uninterrupted_weights(
    tiny_model_dir: Path, tmp_path: Path
):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tok.eos_token_id
    rows = [
        sample_row(q, k, render_chat(tok, chat(q)), [5 + q + k, 6 + k, eos], float(k == q % 2))
        for q in range(4)
        for k in range(2)
    ]
    cfg = grpo_config(per_device_train_batch_size=2, num_train_epochs=2.0)
    cfg.save_steps = 2
    sampling = GRPOSampling(2, 16, 1.0, ONLY_CORRECT)
    straight = train_grpo(tiny_model_dir, rows, tmp_path / "b", cfg, 0, sampling)
    assert straight.metrics["train/grpo_steps"] == 8

    preemption.request("SIGUSR1")
    try:
        with pytest.raises(preemption.Preempted, match="grpo step 3"):
            train_grpo(tiny_model_dir, rows, tmp_path / "a", cfg, 0, sampling)
    finally:
        preemption.reset()
    work = tmp_path / "a" / CHECKPOINTS
    assert last_checkpoint(work) == work / "checkpoint-2"
    resumed = train_grpo(tiny_model_dir, rows, tmp_path / "a", cfg, 0, sampling)
    assert resumed.metrics["train/grpo_steps"] == 8 and not work.exists()
    wa = load_file(resumed.model_dir / "model.safetensors")
    wb = load_file(straight.model_dir / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wb)
    losses = [[h["loss"] for h in r.history if "loss" in h] for r in (resumed, straight)]
    assert losses[0] == losses[1]


def test_lora_grpo_leaves_an_adapter_and_merged_weights(tiny_model_dir: Path, tmp_path: Path):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tok.eos_token_id
    prompt = render_chat(tok, chat(0))
    rows = [sample_row(0, k, prompt, [5 + k, eos], float(k)) for k in range(2)]
    cfg = grpo_config(per_device_train_batch_size=2)
    cfg.method = "lora"
    res = train_grpo(tiny_model_dir, rows, tmp_path, cfg, 0, GRPOSampling(2, 8, 1.0, ONLY_CORRECT))
    assert res.adapter_dir is not None and (res.adapter_dir / "adapter_config.json").exists()
    merged = load_file(res.model_dir / "model.safetensors")
    base = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert any(not torch.equal(merged[k], base[k]) for k in base)


def test_nothing_to_train_points_at_the_input_model(tiny_model_dir: Path, tmp_path: Path):
    res = train_grpo(
        tiny_model_dir, [], tmp_path, grpo_config(), 0, GRPOSampling(2, 8, 1.0, ONLY_CORRECT)
    )
    assert res.model_dir == Path(tiny_model_dir) and res.metrics["train/grpo_rows"] == 0


def test_weights_that_let_brevity_win_are_refused(tiny_model_dir: Path, tmp_path: Path):
    bad = {**ONLY_CORRECT, "redundancy": -0.6, "over_budget": -0.5}
    with pytest.raises(ValueError, match="short wrong answer"):
        grpo_trainer(tiny_model_dir, [], grpo_config(), 0, tmp_path, GRPOSampling(2, 8, 1.0, bad))


@pytest.mark.slow
def test_grpo_on_the_engines_samples_raises_a_toy_reward(tiny_model_dir: Path, tmp_path: Path):
    """Four rounds of: the project's vLLM engine samples K completions per question with their
    token ids and log-probs, a toy reward scores them (the share of tokens from the lower half of
    the vocabulary), GRPO trains on them, the engine reloads the new weights. The mean reward of
    fresh samples (the same seed before and after) rises."""
    from mbt_online.generation.vllm_engine import Engine

    k, cap, low = 4, 12, 1000
    chats = [[{"role": "user", "content": f"Say something about topic {i}."}] for i in range(8)]
    engine = Engine(str(tiny_model_dir), max_model_len=256, sample_logprobs=True, seed=0)

    def draw(seed: int) -> list[dict]:
        outs = engine.generate(
            chats,
            n=k,
            temperature=1.0,
            top_p=1.0,
            top_k=-1,
            max_tokens=cap,
            seed=seed,
            progress=False,
            logprobs=True,
        )
        rows = []
        for q, completions in enumerate(outs):
            for s, c in enumerate(completions):
                assert len(c.token_ids) == len(c.logprobs) == c.completion_tokens
                reward = sum(t < low for t in c.token_ids) / len(c.token_ids)
                rows.append(sample_row(q, s, c.prompt_ids, c.token_ids, reward))
                rows[-1]["prompt"] = json.dumps(chats[q])
                rows[-1]["logprobs"] = c.logprobs
        return rows

    def mean_reward(rows: list[dict]) -> float:
        return sum(r["rl_reward"] for r in rows) / len(rows)

    cfg = grpo_config(learning_rate=0.02, per_device_train_batch_size=8)
    sampling = GRPOSampling(k, cap, 1.0, ONLY_CORRECT)
    before, model = mean_reward(draw(999)), str(tiny_model_dir)
    try:
        for it in range(4):
            res = train_grpo(model, draw(100 + it), tmp_path / f"r{it}", cfg, 0, sampling)
            assert res.metrics["train/grpo_steps"] == 4
            model = str(res.model_dir)
            engine.load_weights(model)
        after = mean_reward(draw(999))
    finally:
        engine.close()
    assert after >= before + 0.08, (before, after)


def test_the_batch_is_fitted_so_every_kept_question_trains():
    from mbt_online.training.args import whole_groups

    assert whole_groups(8, 12, 1, 3) == (12, 1)  # 4 questions a step divide 8
    assert whole_groups(6, 12, 1, 3) == (9, 1)  # 3 a step: none of the 6 left out
    assert whole_groups(1, 12, 1, 3) == (3, 1)  # one kept question still trains
    assert whole_groups(5, 2, 16, 4) == (20, 1)  # fewer kept than a step takes: one step of all
    assert whole_groups(7, 12, 1, 3) == (3, 1)  # a prime count past a step: one question a step
