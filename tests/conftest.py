import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # makes tests/contract importable
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)  # tests run as 2 xdist workers on 2 cores: one thread each avoids oversubscription

SHARED_DATA = Path(os.environ.get("MIAUDIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder (../shared/data or $MIAUDIT_DATA); tests that need it fail loudly if absent."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder {SHARED_DATA} is missing; set MIAUDIT_DATA")
    return SHARED_DATA
