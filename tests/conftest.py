"""Shared fixtures. Test media come from ../shared/data beside the repository (see shared/data/SOURCES.md)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MARIONET_TEST_DATA", REPO.parent / "shared" / "data"))


def shared_picture(name: str) -> np.ndarray:
    """A picture of the shared media, as RGB."""
    return cv2.cvtColor(cv2.imread(str(DATA / name)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "dance_fullbody_12s.mp4").is_file():
        pytest.fail(f"shared test media not found in {DATA}; set MARIONET_TEST_DATA")
    return DATA
