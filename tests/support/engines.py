"""What the sampler backends' tests share: chats, sampling settings, transformers' own greedy
decode, perturbed and LoRA checkpoints."""

from __future__ import annotations

import torch

from mbt_online.contracts import Completion

CHATS = [
    [{"role": "user", "content": "Which city is the capital of France?"}],
    [{"role": "system", "content": "Think first."}, {"role": "user", "content": "Who wrote it?"}],
    [{"role": "user", "content": "When was the director of the film born?"}],
]


GREEDY = dict(n=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=12, seed=0, progress=False)


SAMPLED = dict(n=3, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=12, seed=7, progress=False)


def texts(result: list[list[Completion]]) -> list[list[str]]:
    return [[c.text for c in per_prompt] for per_prompt in result]


def hf_greedy(model_dir, tokenizer, chats, max_new_tokens):
    """Reference: transformers' own greedy decoding of the same rendered prompts."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    outs = []
    for chat in chats:
        ids = tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
        outs.append(tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
    return outs


def save_perturbed(src, dst, scale=0.1, seed=1):
    """New weights for a handoff: the tiny model plus noise larger than its init scale."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def save_lora(base_dir, adapter_dir, merged_dir):
    """A PEFT adapter with non-zero B (so it changes outputs) and the same adapter merged."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj", "up_proj"],
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(adapter_dir)
    peft_model.merge_and_unload().save_pretrained(merged_dir)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(merged_dir)
