"""The OpenAI-compatible chat wire format: what a request holds, what a reply must look like
(`parse_chat_response` refuses a 2xx body that is not a chat completion), token usage, the
statuses worth another try and how long a server's `Retry-After` asks to wait."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

# Statuses worth another try: the server is overloaded, restarting or timed out on its side.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


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
