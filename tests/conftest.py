"""Shared fixtures: offline shared test data, small deterministic models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Where the offline test material lives (env CNNWIDGETS_SHARED_DATA, default ../shared/data)."""
    return Path(os.environ.get("CNNWIDGETS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "tinyvgg-cnn-explainer").is_dir():
        pytest.skip(
            f"offline test data not found at {path}; set CNNWIDGETS_SHARED_DATA to the folder "
            "holding tinyvgg-cnn-explainer/ and images/"
        )
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
