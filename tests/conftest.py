import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # makes tests/contract importable
os.environ.setdefault("MPLBACKEND", "Agg")

import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests run as 2 xdist workers on 2 cores: one torch thread each (tiny models run fastest that way).

    Session scope: set up before module-scoped fixtures, so every model in a worker, fixtures included,
    computes with the same thread count (scores are compared bit for bit across runs)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", autouse=True)
def session_run_store(tmp_path_factory):
    """Runs that module- and session-scoped fixtures start through the CLI go to a throw-away run store,
    never the user's own ($MIAUDIT_HOME or ~/.local/share/miaudit)."""
    previous = os.environ.get("MIAUDIT_HOME")
    os.environ["MIAUDIT_HOME"] = str(tmp_path_factory.mktemp("session-home"))
    yield
    if previous is None:
        os.environ.pop("MIAUDIT_HOME", None)
    else:
        os.environ["MIAUDIT_HOME"] = previous


@pytest.fixture(autouse=True)
def run_store_home(monkeypatch, tmp_path_factory) -> Path:
    """Each test's CLI runs are recorded in a throw-away run store of its own."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("MIAUDIT_HOME", str(home))
    return home


SHARED_DATA = Path(os.environ.get("MIAUDIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder (../shared/data or $MIAUDIT_DATA); tests that need it fail loudly if absent."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder {SHARED_DATA} is missing; set MIAUDIT_DATA")
    return SHARED_DATA
