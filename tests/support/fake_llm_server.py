"""A local OpenAI-compatible chat server that misbehaves on purpose (test helper, not a test).

Each request consumes the next behaviour from `plan` ("ok" once the plan is empty):
- "ok": a chat completion whose texts come from `responder(payload, i)`;
- "500" / "503" / "429" / "400": that status with a JSON error body;
- "echo401": 401 whose body echoes the Authorization header (a careless proxy);
- "malformed": 200 with a body that is not JSON; "no_choices": 200 with `{"choices": []}`;
- "slow": sleep `slow_s` before answering "ok" (longer than the client's timeout);
- "drop": close the connection without answering;
- "die": stop the whole server (listening socket closed) and drop the connection;
- "<status>;<Header>=<value>;...": that status with those headers, e.g. "429;Retry-After=3600" or
  "503;x-should-retry=false";
- "huge": 200 whose body is `huge_bytes` long (Content-Length sent); "huge_chunked": the same
  streamed in chunks with no length, so only reading it tells the size;
- "hang": read the request and never answer (a black hole past the connection) until stopped;
- "junk": 200 with bytes that are not UTF-8; "nested": 200 with `{"choices":` and 5,000 `[`.
It records every payload and Authorization header, and the peak number of requests in flight.
`BlackHole` is an address that never even accepts a connection (a full listen backlog).
"""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[dict, int], str]


def _words(payload: dict) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in payload.get("messages", []))


class FakeLLMServer:
    def __init__(self, port: int = 0, responder: Responder | None = None, delay_s: float = 0.0):
        self.plan: list[str] = []
        self.responder: Responder = responder or (lambda payload, i: f"answer {i}")
        self.delay_s = delay_s
        self.slow_s = 1.0
        self.huge_bytes = 4_000_000
        self.payloads: list[dict] = []
        self.auth: list[str] = []
        self.inflight = 0
        self.max_inflight = 0
        self.dead = False  # after "die": whatever still reaches a handler is dropped
        self.stopped = threading.Event()  # releases "hang" handlers
        self._lock = threading.Lock()
        self._httpd = self._bind(port)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    def _bind(self, port: int) -> ThreadingHTTPServer:
        """Bind, retrying briefly when a restart on a fixed port finds it still held (the dead
        server's socket closing, or a busy suite's client briefly owning it as a source port)."""
        deadline = time.monotonic() + 15
        while True:
            try:
                return ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
            except OSError as e:
                if port == 0 or e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> int:
        return len(self.payloads)

    def start(self) -> FakeLLMServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.stop()

    # -- behaviour ---------------------------------------------------------------------------------

    def _next(self) -> str:
        with self._lock:
            if self.dead:
                return "drop"
            behaviour = self.plan.pop(0) if self.plan else "ok"
            self.dead = behaviour == "die"
            return behaviour

    def completion(self, payload: dict) -> dict[str, Any]:
        texts = [self.responder(payload, i) for i in range(int(payload.get("n", 1)))]
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": payload.get("model"),
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t},
                    "finish_reason": "stop",
                }
                for i, t in enumerate(texts)
            ],
            "usage": {
                "prompt_tokens": _words(payload),
                "completion_tokens": sum(len(t.split()) for t in texts),
            },
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(
                self,
                status: int,
                body: bytes,
                ctype: str = "application/json",
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                headers = headers or {}
                if status == 429 and "Retry-After" not in headers:
                    self.send_header("Retry-After", "0")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _send_chunked(self, total: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"x" * 65536
                sent = 0
                while sent < total:
                    part = chunk[: total - sent]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    sent += len(part)
                self.wfile.write(b"0\r\n\r\n")

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, json.dumps({"data": [{"id": "fake-model"}]}).encode())
                else:
                    self._send(200 if self.path == "/health" else 404, b"{}")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                behaviour = server._next()
                with server._lock:
                    server.payloads.append(payload)
                    server.auth.append(self.headers.get("Authorization", ""))
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    self._behave(behaviour, payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing to answer
                finally:
                    with server._lock:
                        server.inflight -= 1

            def _behave(self, behaviour: str, payload: dict) -> None:
                if behaviour in ("drop", "die"):  # "die" marked the server dead in _next
                    self.close_connection = True
                    self.connection.shutdown(2)
                    if behaviour == "die":
                        threading.Thread(target=server.stop, daemon=True).start()
                    return
                status, *pairs = behaviour.split(";")
                if status.isdigit():
                    headers = dict(p.split("=", 1) for p in pairs)
                    body = json.dumps({"error": f"fake {status}"}).encode()
                    self._send(int(status), body, headers=headers)
                    return
                if behaviour == "huge":
                    self._send(200, b"x" * server.huge_bytes)
                    return
                if behaviour == "huge_chunked":
                    self._send_chunked(server.huge_bytes)
                    return
                if behaviour == "hang":
                    server.stopped.wait()
                    return
                if behaviour == "junk":
                    self._send(200, bytes(range(128, 256)) * 4, "application/octet-stream")
                    return
                if behaviour == "nested":
                    self._send(200, b'{"choices": ' + b"[" * 5000)
                    return
                if behaviour == "echo401":
                    echoed = self.headers.get("Authorization", "")
                    self._send(401, json.dumps({"error": f"bad credentials {echoed}"}).encode())
                    return
                if behaviour == "malformed":
                    self._send(200, b"<html>gateway hiccup</html>", "text/html")
                    return
                if behaviour == "no_choices":
                    self._send(200, json.dumps({"choices": []}).encode())
                    return
                time.sleep(server.slow_s if behaviour == "slow" else server.delay_s)
                self._send(200, json.dumps(server.completion(payload)).encode())

        return Handler


class BlackHole:
    """An address that never accepts: one connection fills a zero backlog, so every later connect
    waits (the kernel drops the SYN) until the client's connect timeout."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self._filler = socket.create_connection(self._listener.getsockname(), timeout=5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: object) -> None:
        self._filler.close()
        self._listener.close()
