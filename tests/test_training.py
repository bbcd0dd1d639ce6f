"""Training: memorizing random labels, exact resume after a kill, divergence, determinism."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from flatness.io import read_json
from flatness.training.checkpoint import load_tensors
from flatness.training.driver import run_group

SMALL = ("data.n_train=200", "data.n_test=100", "tracking.mode=disabled")


def test_mlp_fits_random_labels(compose, tmp_path):
    cfg = compose(
        *SMALL, "data.corruption.type=labels", "data.corruption.fraction=1.0",
        "model.width=256", "optim=adam", "optim.lr=0.003", "train.epochs=300",
        "train.stop_at_full_accuracy=true", "train.batch_size=50", f"out_dir={tmp_path}",
    )  # fmt: skip
    metrics = run_group([cfg])[0]
    assert metrics["train_acc"] == 1.0 and metrics["stopped_by"] == "full_accuracy"
    assert metrics["time_to_fit_epoch"] == metrics["epochs"] < 300
    assert metrics["test_acc"] < 0.25  # random labels: nothing to generalize


def test_contract_files_and_determinism(compose, tmp_path):
    overrides = (*SMALL, "train.epochs=3", "model.dropout=0.2", "data.augment=true")
    a = run_group([compose(*overrides, f"out_dir={tmp_path / 'a'}")])[0]
    b = run_group([compose(*overrides, f"out_dir={tmp_path / 'b'}")])[0]
    for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
        assert a[key] == b[key]
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert {"config.yaml", "metrics.json", "history.csv", "model.pt", "model_init.pt"} <= files
    assert "checkpoint.pt" not in files and not [f for f in files if f.endswith(".tmp")]
    state = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())


def test_divergence_is_recorded_not_raised(compose, tmp_path):
    metrics = run_group(
        [compose(*SMALL, "optim.lr=1e12", "train.epochs=5", f"out_dir={tmp_path}")]
    )[0]
    assert metrics["status"] == "diverged" and metrics["stopped_by"] == "diverged"
    saved = read_json(tmp_path / "metrics.json")
    assert saved["status"] == "diverged"
    json.dumps(saved, allow_nan=False)


def test_history_csv_is_written_as_pandas_writes_it(tmp_path):
    """history.csv is written without pandas (start-up); the file must not change for its readers:
    full-precision floats, NaN and a missing value as empty fields, columns as first seen."""
    import numpy as np
    import pandas as pd

    from flatness.io import atomic_write_csv

    rows = [
        {"epoch": 0, "step": 0, "train_loss": 2.302585092994046, "train_acc": 0.1, "lr": 0.05},
        {"epoch": 1, "step": 7, "train_loss": 0.1 + 0.2, "train_acc": 1e-20, "lr": 0.05},
        {"epoch": 2, "step": 14, "train_loss": float("nan"), "train_acc": float("inf"),
         "lr": np.float32(0.025).item(), "extra": -0.0},
        {"epoch": 3, "step": 21, "train_loss": 1e300, "train_acc": np.float64(0.5), "lr": 2.5e-5},
    ]  # fmt: skip
    atomic_write_csv(tmp_path / "history.csv", rows)
    expected = pd.DataFrame(rows).to_csv(index=False, lineterminator="\n")
    assert (tmp_path / "history.csv").read_text() == expected


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_numbers(tmp_path):
    """SIGKILL a real training process after a checkpoint, rerun it, compare with a clean run."""
    overrides = [
        "data.n_train=1000", "model.dropout=0.2", "data.augment=true", "optim.schedule=cosine",
        "train.epochs=400", "train.checkpoint_every=5", "tracking.mode=disabled", "progress=false",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "flatness.training", *overrides]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, f"out_dir={killed}"], env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # let it train on past the checkpoint before the kill
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    resumed_epoch = load_tensors(killed / "checkpoint.pt")["epoch"]
    assert 0 < resumed_epoch < 400
    subprocess.run([*cmd, f"out_dir={killed}"], env=env, check=True, stdout=subprocess.DEVNULL)
    clean = tmp_path / "clean"
    subprocess.run([*cmd, f"out_dir={clean}"], env=env, check=True, stdout=subprocess.DEVNULL)
    a, b = read_json(killed / "metrics.json"), read_json(clean / "metrics.json")
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "steps", "time_to_fit_epoch"):
        assert a[key] == b[key], key
    sa = torch.load(killed / "model.pt", weights_only=True)
    sb = torch.load(clean / "model.pt", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "name,momentum,weight_decay",
    [("sgd", 0.0, 0.0), ("sgd", 0.9, 5e-4), ("adam", 0.9, 0.0), ("adam", 0.8, 1e-3)],
)
def test_own_optimizer_matches_torch_optim(name, momentum, weight_decay):
    """``flatness.training.optimizers`` (no ``torch._dynamo`` import) against ``torch.optim`` on CPU: 20
    steps of a small MLP with a changing learning rate. The update follows torch's single-tensor
    kernels op for op, so it is bit-exact where scalar and tensor kernels round alike."""
    from types import SimpleNamespace

    from flatness.training.optimizers import ModelOptimizer

    cfg = SimpleNamespace(name=name, momentum=momentum, weight_decay=weight_decay, lr=0.05)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 10, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    torch.manual_seed(0)
    ours = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    ref = copy.deepcopy(ours)
    mine = ModelOptimizer(ours, cfg)
    if name == "sgd":
        theirs = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=momentum,
                                 weight_decay=weight_decay, foreach=False)  # fmt: skip
    else:
        theirs = torch.optim.Adam(ref.parameters(), lr=0.05, betas=(momentum, 0.999),
                                  weight_decay=weight_decay, foreach=False)  # fmt: skip
    worst = 0.0
    for step in range(20):
        lr = 0.05 * (1 - step / 40)
        for group in theirs.param_groups:
            group["lr"] = lr
        for model, opt in ((ours, mine), (ref, theirs)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
        mine.step(lr)
        theirs.step()
        for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
            worst = max(worst, ((a - b).abs().max() / b.abs().max()).item())
    assert worst < 1e-6, worst  # 0.0 (bit for bit) on the development machine's CPU
    state = mine.state_dict()  # plain tensors: a checkpoint of it loads with weights_only=True
    assert all(isinstance(v, torch.Tensor) for s in state["state"].values() for v in s.values())
