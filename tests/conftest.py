"""Shared fixtures. Real parts only: ptys, loopback sockets, real models, Xvfb windows."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "models"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """``../shared/models`` beside the checkout (CI has it too)."""
    if not (SHARED_MODELS / "SqueezeNet_fp16.onnx").exists():
        pytest.fail(f"real models not found at {SHARED_MODELS}; the checkout must sit beside shared/")
    return SHARED_MODELS
