"""What every sampler backend does to a request before it samples: the chat rendered to token ids
with the student's own template, the prompt checked against the context window, and the per-prompt
seed that makes a prompt's samples independent of the batch it sits in (so one engine, a
data-parallel split and a served student draw the same samples)."""

from __future__ import annotations

from typing import Any

from mbt_online.contracts import PromptTooLongError
from mbt_online.seeds import hash_seed


def request_seed(seed: int, index: int) -> int:
    """Seed for prompt `index`: independent of the batch's other prompts and of its size.

    vLLM gives the k-th of n samples the seed `seed + k`, so per-prompt seeds are hashed apart
    rather than consecutive (prompt i+1 would otherwise replay prompt i's second sample's noise).
    """
    return hash_seed(f"{seed}:{index}", digest_size=8)


def render_chat(tokenizer: Any, messages: list[dict]) -> list[int]:
    """Prompt token ids for one chat, via the tokenizer's own chat template (every backend).

    Token ids (not text) go to the model so it cannot add a second BOS to a template that has one.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class PromptsTooLong(PromptTooLongError):
    """`PromptTooLongError` that names the prompts that do not fit: `indices`, numbered as the
    check numbered them (from its `first`: a data-parallel slice numbers in the whole batch). It
    crosses a process boundary whole (a data-parallel worker's answer)."""

    def __init__(self, message: str, indices: tuple[int, ...] | list[int] = ()) -> None:
        super().__init__(message)
        self.indices = tuple(indices)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.indices))


def check_prompt_lengths(
    prompts: list[list[int]], max_model_len: int, max_tokens: int, first: int = 0
) -> None:
    """Raise `PromptsTooLong` naming the prompts (numbered from `first`) that leave less than
    `max_tokens` of room."""
    room = max_model_len - max_tokens
    too_long = [(i, len(ids)) for i, ids in enumerate(prompts, first) if len(ids) > room]
    if too_long:
        shown = ", ".join(f"#{i}: {length}" for i, length in too_long[:5])
        raise PromptsTooLong(
            f"{len(too_long)} prompt(s) exceed max_model_len {max_model_len} - max_tokens "
            f"{max_tokens} = {room} tokens ({shown}); shorten the documents or raise "
            "student.max_model_len",
            [i for i, _ in too_long],
        )
