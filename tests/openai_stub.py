"""A fault-injecting OpenAI-compatible completions server on 127.0.0.1 (stdlib ``http.server`` in a thread).

Its "model" tokenises on spaces (each word with the space before it is a token) and gives each token
a deterministic log-probability; like OpenAI's API it gives none for the first prompt token. Faults
queued with :meth:`StubServer.fail` are applied to the next requests in order: ``"429"``, ``"500"``,
``"401"``, ``"truncated"`` (a JSON body cut in half), ``"timeout"`` (answers after ``delay`` seconds).
"""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def stub_tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


def stub_log_prob(token: str, position: int) -> float:
    """A deterministic log-probability in [-6, -0.05]."""
    return -0.05 - (zlib.crc32(f"{token}|{position}".encode()) % 1000) / 1000 * 5.95


def completion(body: dict[str, Any]) -> dict[str, Any]:
    prompt = body["prompt"]
    tokens = stub_tokens(prompt)
    generated = [" the"] * int(body.get("max_tokens", 1))
    offsets, at = [], 0
    for token in tokens + generated:
        offsets.append(at)
        at += len(token)
    values = [None] + [stub_log_prob(t, i) for i, t in enumerate(tokens + generated) if i > 0]
    k = int(body.get("logprobs") or 0)
    top = [None] + [{t: v, **{f" alt{j}": v - 0.5 - j for j in range(max(0, k - 1))}}
                    for t, v in zip((tokens + generated)[1:], values[1:])]
    return {"id": "cmpl-stub", "object": "text_completion", "model": body["model"],
            "choices": [{"index": 0, "text": prompt + "".join(generated), "finish_reason": "length",
                         "logprobs": {"tokens": tokens + generated, "token_logprobs": values, "top_logprobs": top,
                                      "text_offset": offsets}}],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": len(generated),
                      "total_tokens": len(tokens) + len(generated)}}


class StubServer:
    """Start with ``with StubServer() as server:``; ``server.url`` is the base URL up to ``/v1``."""

    def __init__(self, delay: float = 2.0) -> None:
        self.delay = delay
        self.faults: list[str] = []
        self.prompts: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    fault = stub.faults.pop(0) if stub.faults else None
                    stub.headers.append(dict(self.headers))
                if fault == "timeout":
                    time.sleep(stub.delay)
                if fault in ("429", "500", "401"):
                    self.send_response(int(fault))
                    if fault == "429":
                        self.send_header("Retry-After", "0.01")
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "injected fault"}}')
                    return
                if self.path != "/v1/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                with stub.lock:
                    stub.prompts[body["prompt"]] += 1
                payload = json.dumps(completion(body)).encode()
                if fault == "truncated":
                    payload = payload[:len(payload) // 2]
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def fail(self, *faults: str) -> None:
        with self.lock:
            self.faults.extend(faults)

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
