"""Start and stop llama-cpp-python's OpenAI-compatible server on 127.0.0.1 for a local GGUF model: the API
target's tests and benchmark use it, and so can anyone who wants to audit GGUF weights through
:class:`~miaudit.llm.api.APICausalLM` (needs ``pip install 'miaudit[server]'``)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_server(model: Path, *, n_threads: int = 1, f32_cache: bool = True, startup_s: float = 120.0
                 ) -> Iterator[str]:
    """Serve the GGUF ``model`` (``python -m llama_cpp.server ... --logits_all true``) on a free port of
    127.0.0.1; yields the base URL up to ``/v1``; the server is stopped on exit. ``f32_cache``: keys and
    values cached in float32 (``--type_k 0 --type_v 0``; llama.cpp's default float16 cache moves
    log-probabilities by up to about 4e-3 on stories260K, float32 by about 1e-5)."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--logits_all", "true", "--n_ctx", "512", "--n_threads", str(n_threads),
               "--n_batch", "512", "--verbose", "false"] + (["--type_k", "0", "--type_v", "0"] if f32_cache else [])
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NO_PROXY": "*"})
        url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + startup_s
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"llama_cpp.server exited with {process.returncode}: "
                                       f"{log.read().decode(errors='replace')[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                        json.loads(response.read())
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"llama_cpp.server did not answer within {startup_s:g} s") from None
                    time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
