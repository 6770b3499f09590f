"""Shared fixtures. Real parts only: ptys, loopback sockets, real models, Xvfb windows."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
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


# Errors in background threads and tasks are logged and the show goes on; in tests they must
# not pass unnoticed. The switch keeps each one; the fixture below fails the test that caused
# it (a test that provokes one on purpose takes it with take_background_errors()).
os.environ.setdefault("DREAMSTATE_RAISE_BACKGROUND_ERRORS", "1")

# NDI finds sources by mDNS, which a box without a network (CI) does not answer. This NDI
# configuration names 127.0.0.1 as an "extra IP" (the finder asks this machine's NDI port
# directly), so tests/test_ndi.py's receivers see the sink's sources. The NDI runtime reads it
# once, when the first sender or finder of the process is made, so it is set here, before any.
os.environ["NDI_CONFIG_DIR"] = str(REPO / "tests" / "ndi")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI installs its own root handler; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def no_unexpected_background_errors() -> Iterator[None]:
    from dreamstate.engine.core.background import take_background_errors

    take_background_errors()
    yield
    errors = take_background_errors()
    if errors:
        pytest.fail("background errors during the test: "
                    + "; ".join(f"{what}: {type(exc).__name__}: {exc}" for what, exc in errors))
