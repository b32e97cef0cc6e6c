"""Helpers of the reliability tests: YAML configs, the CLI in a subprocess (for signals, concurrency and
what a terminal or a CI log shows), and the one-line error a refused command prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

SRC = Path(__file__).resolve().parents[2] / "src"


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def trained_config(**overrides) -> dict:
    """A classifier audit whose target the tool trains on digits (``epochs`` sets how long it runs)."""
    config = {"seed": 1, "dataset": {"source": "digits"}, "split": {"n_members": 60, "n_nonmembers": 60},
              "training": {"model": "mlp", "hidden": [16], "epochs": 3, "batch_size": 16},
              "attacks": [{"name": "loss"}], "evaluation": {"n_bootstrap": 10}}
    config.update(overrides)
    return config


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), **extra}
    env.pop("TQDM_DISABLE", None)
    return env


def start_cli(*args: str, cwd: Path | None = None, **popen) -> subprocess.Popen:
    """``python -m miaudit.cli ARGS`` in a subprocess (stdout and stderr piped, text)."""
    return subprocess.Popen([sys.executable, "-m", "miaudit.cli", *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess to completion."""
    process = start_cli(*args, **kwargs)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def one_error_line(stderr: str) -> str:
    """The single ``error: ...`` line a refused command prints (no traceback)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]
