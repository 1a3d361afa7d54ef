"""The client's disk cache of answered requests: one JSON file per request, keyed by a hash of the
endpoint, model, messages and sampling parameters (never the API key), written atomically so a
run killed mid-write leaves no half entry, and versioned so a change of format is a miss, never a
stale shape. Failures are never cached: a resume sends them again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mbt_online.llm.wire import ChatResult, token_usage
from mbt_online.rundir.atomic import write_text_atomic

# Cache entries carry a version so a change of format never returns a stale shape.
CACHE_VERSION = 1


def cache_key(base_url: str, payload: dict[str, Any]) -> str:
    """sha256 of the endpoint, model, messages and sampling parameters: never of the key, so a
    rotated key keeps its cache and the key cannot be recovered from a cache file name."""
    blob = json.dumps(
        {"base_url": base_url.rstrip("/"), **payload}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class RequestCache:
    """Answers on disk under `root` (None: a cache that keeps nothing)."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root else None

    def path(self, key: str) -> Path | None:
        return self.root / key[:2] / f"{key}.json" if self.root else None

    def get(self, key: str) -> ChatResult | None:
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
            if not isinstance(entry, dict) or entry.get("version") != CACHE_VERSION:
                return None
            return ChatResult(
                list(entry["texts"]),
                token_usage(entry.get("usage")),
                True,
                list(entry.get("finish_reasons", [])),
                0,
                list(entry.get("completion_tokens", [])),
            )
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None  # a corrupt entry is a miss; the fresh answer overwrites it

    def put(self, key: str, result: ChatResult) -> None:
        """Atomic (temp file + rename): a run killed mid-write leaves no half entry behind."""
        path = self.path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "version": CACHE_VERSION,
            "texts": result.texts,
            "finish_reasons": result.finish_reasons,
            "usage": result.usage,
            "completion_tokens": result.completion_tokens,
        }
        write_text_atomic(path, json.dumps(entry))
