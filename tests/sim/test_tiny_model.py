"""The tiny student: single-id tags, a template that keeps reasoning, a loadable model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from mbt_online.sim.tiny_model import (
    IM_END,
    IM_START,
    PAD,
    TAG_TOKENS,
    build_model,
    build_tokenizer,
)

CORPUS = [
    "The capital of France is Paris.",
    "Who directed the film? The director was born in 1950.",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("token", [IM_START, IM_END, PAD, *TAG_TOKENS])
def test_special_and_tag_tokens_are_single_ids(tokenizer, token):
    ids = tokenizer.encode(token, add_special_tokens=False)
    assert len(ids) == 1
    assert tokenizer.convert_ids_to_tokens(ids[0]) == token


def test_tags_survive_decode_but_chat_tokens_are_skipped(tokenizer):
    text = "<think>Paris is in France.</think> <answer>Paris</answer>"
    ids = tokenizer.encode(IM_START + text + IM_END, add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.decode(ids) == IM_START + text + IM_END


def test_eos_pad_and_no_bos(tokenizer):
    assert tokenizer.eos_token == IM_END
    assert tokenizer.pad_token == PAD
    # No BOS is prepended: rendered chats tokenize the same with or without special tokens.
    assert tokenizer.encode("hello world") == tokenizer.encode(
        "hello world", add_special_tokens=False
    )


def test_byte_level_round_trip_of_unseen_text(tokenizer):
    text = "Zoë's café — 東京 ½ \t tabs\nand newlines  double spaces"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_template_keeps_think_in_every_assistant_turn(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q1?"},
        {"role": "assistant", "content": "<think>first</think><answer>A1</answer>"},
        {"role": "user", "content": "Q2?"},
        {"role": "assistant", "content": "<think>second</think><answer>A2</answer>"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nQ1?<|im_end|>\n"
        "<|im_start|>assistant\n<think>first</think><answer>A1</answer><|im_end|>\n"
        "<|im_start|>user\nQ2?<|im_end|>\n"
        "<|im_start|>assistant\n<think>second</think><answer>A2</answer><|im_end|>\n"
    )


def test_generation_prompt(tokenizer):
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Q?"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"


def test_assistant_mask_covers_assistant_content_and_eos(tokenizer):
    messages = [
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": "<think>x</think><answer>y</answer>"},
    ]
    enc = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    masked = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(masked) == "<think>x</think><answer>y</answer><|im_end|>"


def test_model_folder_reloads_as_fp32_llama(tiny_model_dir, tokenizer):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (tiny_model_dir / "model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids(IM_END)
    ids = torch.tensor([tokenizer.encode("<think>Paris")])
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_head_dim_is_at_least_32_for_vllm_cpu(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["head_dim"] == 32  # 64 / 4 = 16 would have no vLLM CPU attention kernel


def test_seed_fixes_the_weights(tmp_path):
    tok = build_tokenizer(CORPUS, vocab_size=300)
    weights = [
        load_file(build_model(tok, tmp_path / name, seed=seed) / "model.safetensors")
        for name, seed in [("a", 0), ("b", 0), ("c", 1)]
    ]
    key = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(weights[0][key], weights[1][key])
    assert not torch.equal(weights[0][key], weights[2][key])
