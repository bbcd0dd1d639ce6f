"""Shared test set-up: no W&B, a per-session data cache, single-threaded torch, helpers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("FLATNESS_CACHE", str(Path(tempfile.gettempdir()) / "flatness-test-cache"))
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def compose():
    """``compose(*overrides)``: a validated run config from conf/ (Hydra compose API)."""
    from flatness.config import compose_run

    return lambda *overrides: compose_run(overrides)
