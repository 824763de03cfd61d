"""The hostile campaigns need only a data root: the daemon materializes and prepares `stdlib` itself (trusted,
then sandboxed), exactly as in production."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    path = Path(os.environ.get("ARX_TEST_DATA_DIR") or tmp_path_factory.mktemp("data"))
    os.environ["ARX_DATA_DIR"] = str(path)
    return path
