"""Tiny students built from scratch: a byte-level BPE tokenizer and a random-init Llama.

The embedded synthetic world and the tests need a student that exists without any hub download.
It is built with transformers' own `LlamaForCausalLM` and saved with `save_pretrained`, so vLLM,
TRL and PEFT load it exactly like a real checkpoint: nothing downstream knows it is tiny.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mbt_online.prompts import VERBATIM_CHAT_TEMPLATE

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END)
# Reasoning tags are plain added tokens: single ids (cheap for the student to emit and for rewards
# to count) but NOT special, so `decode(skip_special_tokens=True)` (vLLM's default) keeps them.
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")

# ChatML with assistant content emitted verbatim, <think> blocks included: MBT trains on the
# reasoning itself, so a template that strips earlier thoughts (as Qwen3's does) would erase the
# very tokens being taught. The same template as `student.chat_template: verbatim`.
CHAT_TEMPLATE = VERBATIM_CHAT_TEMPLATE

# vLLM's CPU attention kernels only accept these head sizes; smaller heads fail at engine start.
_MIN_HEAD_DIM = 32


def build_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`: byte fallback means any string round-trips exactly."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in TAG_TOKENS])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        bos_token=None,
        unk_token=None,
        clean_up_tokenization_spaces=False,
    )
    hf.add_special_tokens({"additional_special_tokens": [IM_START]})
    hf.chat_template = CHAT_TEMPLATE
    hf.padding_side = "left"
    return hf


def _llama_config(tokenizer: PreTrainedTokenizerFast, **kw) -> LlamaConfig:
    hidden, heads = kw["hidden_size"], kw["heads"]
    head_dim = max(_MIN_HEAD_DIM, hidden // heads)
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=kw["intermediate_size"] or 4 * hidden,
        num_hidden_layers=kw["layers"],
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=head_dim,
        max_position_embeddings=kw["max_positions"],
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(IM_START),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int | None = None,
    max_positions: int = 2048,
    seed: int = 0,
) -> Path:
    """Random-init Llama (fp32) saved with its tokenizer; the same seed gives the same weights.

    head_dim is raised to 32 when hidden_size / heads is smaller, because vLLM's CPU attention
    has no kernel for smaller heads (the projections widen instead; transformers allows that).
    """
    out = Path(out_dir)
    cfg = _llama_config(
        tokenizer,
        hidden_size=hidden_size,
        heads=heads,
        layers=layers,
        intermediate_size=intermediate_size,
        max_positions=max_positions,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=cfg.bos_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_student(out_dir: str | Path, texts: Iterable[str], **kw) -> Path:
    """Tokenizer + model in one call; `vocab_size` goes to the tokenizer, the rest to the model."""
    tokenizer = build_tokenizer(texts, vocab_size=kw.pop("vocab_size", 2000))
    return build_model(tokenizer, out_dir, **kw)
