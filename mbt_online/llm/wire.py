"""The OpenAI-compatible chat wire format: what a request holds, what a reply must look like
(`parse_chat_response` refuses a 2xx body that is not a chat completion), token usage, the
sampled token ids and log-probabilities vLLM adds on request (`sampled_tokens`), the statuses
worth another try and how long a server's `Retry-After` asks to wait."""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

# Statuses worth another try: the server is overloaded, restarting or timed out on its side.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

# What a chat request adds to get each sampled token's id and log-probability from `vllm serve`:
# the ids (vLLM's `return_token_ids`: the choice's `token_ids`, the body's `prompt_token_ids`),
# the sampled token's own log-prob and no alternatives (`top_logprobs` 0), each entry naming its
# token as "token_id:<id>" so it can be checked against the ids rather than trusted by position.
SAMPLED_TOKENS_FIELDS: dict[str, Any] = {
    "return_token_ids": True,
    "logprobs": True,
    "top_logprobs": 0,
    "return_tokens_as_token_ids": True,
}
# vLLM's `logprob` for a position it has no log-prob for (its ChatCompletionLogProb default; it
# also clamps -inf to it): never a sampled token's real value
MISSING_LOGPROB = -9999.0
# how far above 0 a reported log-prob may be (float rounding) before it is not a log-probability
LOGPROB_SLACK = 1e-4


@dataclass
class ChatRequest:
    """One chat completion call; `seed` makes sampling reproducible where the server honours it."""

    messages: list[dict]
    n: int = 1
    temperature: float = 0.0
    max_tokens: int = 1024
    seed: int | None = None
    top_p: float | None = None
    # vLLM's own request fields (top_k, stop, return_token_ids): a served student's sampling
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChatResult:
    """The n texts of one request. `usage` is this response's own token count, also when it came
    from the cache (then `cached` is True and nothing was paid for it this time)."""

    texts: list[str]
    usage: dict[str, int] = field(default_factory=dict)
    cached: bool = False
    finish_reasons: list[str] = field(default_factory=list)
    attempts: int = 0
    completion_tokens: list[int] = field(default_factory=list)  # per choice, where returned
    # vLLM's `prompt_token_ids` and each choice's sampled tokens, where returned (`sampled_tokens`)
    prompt_ids: list[int] | None = None
    samples: list[Sampled] = field(default_factory=list)


@dataclass
class Sampled:
    """One choice's sampled tokens as vLLM reports them: the ids (end-of-turn token included when
    the model stopped on it) and, where the request asked for them, each token's log-probability
    in the order of the ids (None: the body has none for this choice)."""

    token_ids: list[int]
    logprobs: list[float] | None = None


@dataclass
class ChatFailure:
    """A request that failed for good; never cached, so a resume sends it again.

    `kind` is a short stable label for counting: "timeout", "connection" (retried, then given up),
    "circuit_open" (not sent: the breaker is open), "http_<status>" (also a Retry-After past the
    ceiling or `x-should-retry: false`), "malformed", "too_large" (body over the cap, not
    retried), "bad_key" / "insecure_key" (refused before sending), "no_model". `error` is the
    redacted detail of the last try."""

    kind: str
    error: str
    attempts: int


class LLMError(RuntimeError):
    """Raised by `LLMClient.chat` when a request fails for good; carries the `ChatFailure`."""

    def __init__(self, failure: ChatFailure) -> None:
        super().__init__(f"{failure.kind} after {failure.attempts} attempt(s): {failure.error}")
        self.failure = failure


class MalformedResponse(ValueError):
    """A 2xx body that is not a chat completion (not JSON, no choices, no message)."""


def parse_chat_response(data: Any) -> tuple[list[str], list[str], dict[str, int]]:
    """Texts, finish reasons and usage of a chat completion body, or MalformedResponse.

    A `null` content is an empty text, not an error: reasoning models served by vLLM return it when
    every token went to the reasoning channel, and the caller's verification rejects it as empty.
    """
    if not isinstance(data, dict):
        raise MalformedResponse(f"body is {type(data).__name__}, not an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        error = f": {data['error']}" if "error" in data else ""
        raise MalformedResponse(f"no choices in body{error}")
    texts, reasons = [], []
    for i, choice in enumerate(sorted(choices, key=_choice_index)):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise MalformedResponse(f"choice {i} has no message")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise MalformedResponse(f"choice {i} content is {type(content).__name__}")
        texts.append(content or "")
        reasons.append(str(choice.get("finish_reason") or ""))
    return texts, reasons, token_usage(data.get("usage"))


def choice_token_counts(data: Any) -> list[int]:
    """Each choice's completion length in tokens, in index order, where the server returned the
    token ids (vLLM's `return_token_ids`); [] when any choice lacks them. `usage` only sums them."""
    choices = sorted(data.get("choices") or [], key=_choice_index)
    ids = [c.get("token_ids") if isinstance(c, dict) else None for c in choices]
    return [len(i) for i in ids] if all(isinstance(i, list) for i in ids) else []


def sampled_tokens(data: Any) -> tuple[list[int] | None, list[Sampled]]:
    """The prompt's token ids and each choice's `Sampled` tokens, in index order, as vLLM returns
    them with `SAMPLED_TOKENS_FIELDS`; (None, []) parts where the body lacks them (`token_ids` on
    every choice, `prompt_token_ids`). Log-probs that are there must agree with the ids: one
    entry per token, each naming its token where it says "token_id:<id>", each a finite number
    not above 0 (a logit is not one) and not vLLM's placeholder for a missing value; otherwise
    MalformedResponse saying which choice and position."""
    if not isinstance(data, dict):
        return None, []
    prompt = _int_list(data.get("prompt_token_ids"))
    choices = sorted(data.get("choices") or [], key=_choice_index)
    ids = [_int_list(c.get("token_ids")) if isinstance(c, dict) else None for c in choices]
    if not choices or any(i is None for i in ids):
        return prompt, []
    return prompt, [
        Sampled(i, choice_logprobs(c, i, k))
        for k, (c, i) in enumerate(zip(choices, ids, strict=True))
        if i is not None
    ]


def choice_logprobs(choice: dict, token_ids: list[int], k: int = 0) -> list[float] | None:
    """The log-probability of each of `token_ids` from a choice's `logprobs.content`, or None
    when the choice has none (`logprobs` null or without `content`); MalformedResponse when the
    entries do not match the ids (see `sampled_tokens`)."""
    block = choice.get("logprobs")
    content = block.get("content") if isinstance(block, dict) else None
    if content is None:
        return None
    if not isinstance(content, list) or len(content) != len(token_ids):
        n = len(content) if isinstance(content, list) else type(content).__name__
        raise MalformedResponse(f"choice {k}: {n} log-prob entries for {len(token_ids)} token ids")
    out = []
    for pos, (entry, tid) in enumerate(zip(content, token_ids, strict=True)):
        where = f"choice {k} token {pos} (id {tid})"
        if not isinstance(entry, dict):
            raise MalformedResponse(f"{where}: log-prob entry is {type(entry).__name__}")
        token = entry.get("token")
        if isinstance(token, str) and token.startswith("token_id:") and token != f"token_id:{tid}":
            raise MalformedResponse(f"{where}: its log-prob entry is for {token}")
        value = entry.get("logprob")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedResponse(f"{where}: no log-prob ({value!r})")
        value = float(value)
        if not math.isfinite(value):
            raise MalformedResponse(f"{where}: log-prob {value!r} is not finite")
        if value <= MISSING_LOGPROB:
            raise MalformedResponse(f"{where}: log-prob {value!r}, vLLM's mark for none")
        if value > LOGPROB_SLACK:
            raise MalformedResponse(
                f"{where}: log-prob {value!r} > 0, not a log-probability (a server started "
                "with --logprobs-mode processed_logits or raw_logits?)"
            )
        out.append(min(value, 0.0))
    return out


def _int_list(value: Any) -> list[int] | None:
    """A JSON list of token ids (ints, not bools), or None."""
    if not isinstance(value, list):
        return None
    if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        return None
    return list(value)


def _choice_index(choice: Any) -> int:
    idx = choice.get("index") if isinstance(choice, dict) else None
    return idx if isinstance(idx, int) else 0


def token_usage(raw: Any) -> dict[str, int]:
    """The prompt and completion token counts of a `usage` object; a missing or odd value is 0."""
    raw = raw if isinstance(raw, dict) else {}
    out = {}
    for key in ("prompt_tokens", "completion_tokens"):
        value = raw.get(key)
        out[key] = value if isinstance(value, int) and value >= 0 else 0
    return out


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds a `Retry-After` header asks for (a number or an HTTP date), or None."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())
