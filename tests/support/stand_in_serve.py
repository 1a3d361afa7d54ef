"""A stand-in for `vllm serve` (test helper, not a test): the served generator's process handling
without a minute of vLLM start-up per case. The real server runs in test_served.py's slow test.

Run as `python -m stand_in_serve --model DIR --served-model-name N --host H --port P [flags...]`
(the command line `servers.server_argv` builds). It starts a child process, as vLLM starts its
engine core, so a stop that signals only the leader would leave an orphan; it answers /health and
chat completions (text `<model dir name>|<seed>|<k>`, one token id per word) through the suite's
`FakeLLMServer`. A model folder named `broken*` prints a line and exits 3 before serving; one
named `slow*` never becomes healthy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

from fake_llm_server import FakeLLMServer


def completion(model: str, payload: dict) -> dict:
    n, seed = int(payload.get("n", 1)), int(payload.get("seed") or 0)
    texts = [f"{Path(model).name}|{seed}|{k}" for k in range(n)]
    return {
        "choices": [
            {
                "index": k,
                "message": {"role": "assistant", "content": t},
                "finish_reason": "length",
                "token_ids": list(range(k + 1)),  # sample k is k + 1 tokens long
            }
            for k, t in enumerate(texts)
        ],
        "usage": {"prompt_tokens": len(str(payload["messages"])), "completion_tokens": 0},
    }


class OnHost(FakeLLMServer):
    """The fake server on the address `--host` names (0.0.0.0 under srun: reached by node name)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        super().__init__(port=port)

    def _bind(self, port: int) -> ThreadingHTTPServer:
        return ThreadingHTTPServer((self.host, port), self._handler_class())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args, _ = parser.parse_known_args()
    name = Path(args.model).name
    if name.startswith("broken"):
        print("boom: cannot load the model", flush=True)
        sys.exit(3)
    # the "engine core": a child in the same process group that outlives a leader killed alone
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"stand-in serve {args.model} on {args.port} pid {os.getpid()}", flush=True)
    if name.startswith("slow"):
        time.sleep(600)
    server = OnHost(args.host, args.port)
    server.completion = lambda payload: completion(args.model, payload)  # type: ignore[method-assign]
    server.start()
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
