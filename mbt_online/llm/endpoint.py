"""Endpoint safety for the LLM client: which base URLs are accepted, where an API key may be sent,
and how keys and URLs are redacted from anything shown.

Kept apart from the client (no httpx here) so the config schema refuses a bad `teacher.base_url`
with the very rule the client applies: a URL with credentials would otherwise travel into
config.yaml, wandb and every error message, and a query string is where hosted APIs put keys too.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

# scheme://user:pass@ and ?query: the two places a URL carries secrets.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#'\"]*@")
_QUERY = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s?#'\"]*)\?[^\s#'\"]*")
# Whatever follows "Bearer": a server or proxy echoing the Authorization header back.
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",;}]+")
# Printable runs of a secret this long are redacted on their own (a key cut by a control character).
_MIN_PART = 6


def check_base_url(url: str) -> str:
    """`url` when it is a plain http(s) endpoint; ValueError (never repeating the secret) when it
    carries credentials, a query string or a fragment, or is not http(s) with a host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError:
        raise ValueError(f"base_url is not a valid URL: {redact_url(url)!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be http(s)://host[:port]/path, got {redact_url(url)!r}")
    if "@" in parts.netloc:
        raise ValueError(
            "base_url must not contain credentials (user:pass@): put the key in the environment "
            "variable named by teacher.api_key_env"
        )
    if "?" in url or "#" in url:
        raise ValueError(
            "base_url must not contain a query string or fragment: the client appends paths to it "
            "and a query is where keys hide"
        )
    return url


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: traffic that never leaves the machine."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_may_go_to(url: str) -> bool:
    """Whether an API key may be sent to `url` without `teacher.allow_insecure_key`: only over
    https or to this machine, because plain http to another host shows the key to every hop."""
    parts = urlsplit(url)
    return parts.scheme == "https" or is_loopback(parts.hostname or "")


def key_problem(key: str) -> str | None:
    """Why `key` cannot be sent in a header (None when it can), never quoting it: a trailing
    newline from `echo $KEY > file` is the usual cause, and httpx would quote the key in its
    error."""
    for i, ch in enumerate(key):
        if not ch.isprintable() or ch.isspace() or not ch.isascii():
            what = "whitespace" if ch.isspace() else "a control or non-ASCII character"
            return f"contains {what} at position {i} of {len(key)}"
    return None


def redact_url(text: str) -> str:
    """`text` with every URL's user:pass@ and ?query replaced by ***."""
    return _QUERY.sub(r"\1?***", _USERINFO.sub(r"\1***@", text))


def redact_secret(text: str, secret: str, bearer: bool = True) -> str:
    """`text` without `secret` in any form it may appear in: raw, stripped, escaped (repr or JSON,
    as errors print a header with a control character), its long printable runs, and (`bearer`)
    whatever follows a "Bearer". Not an exact match only: a key ending in "\\r" leaked that way."""
    text = _BEARER.sub(r"\1***", text) if bearer else text
    if not secret:
        return text
    forms = {secret, secret.strip(), secret.encode("unicode_escape").decode("ascii")}
    forms.update(p for p in re.split(r"[^\x21-\x7e]+", secret) if len(p) >= _MIN_PART)
    for form in sorted((f for f in forms if f), key=len, reverse=True):
        text = text.replace(form, "***")
    return text
