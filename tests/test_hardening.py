"""Fault tests (issue 13): each fault a hostile tester found, and what the pipeline does now.

- code-carrying ``checkpoint.pt`` / ``model.pt`` / ``model_init.pt``: never executed on any path;
- a checkpoint of another config: refused with both run ids and the folder, or ignored on request;
- blow-ups without NaN and blow-ups that recover: ``diverged``, with the step and the reason;
- a batch larger than the training set: an error naming ``train.batch_size`` before any work;
- truncated data files and checkpoints: errors naming the file and the way on;
- output files: readable as the umask says.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from flatness.config import ConfigError, run_id
from flatness.data import CorruptDataError, load_dataset
from flatness.io import atomic_write_text, read_json
from flatness.stages.landscape import landscape
from flatness.stages.measure import measure_run
from flatness.stages.reparam import reparam_run
from flatness.training.checkpoint import CheckpointError, load_tensors
from flatness.training.driver import build_run_model, load_splits, run_group, train
from flatness.training.record import divergence

SMALL = ("data.n_train=100", "data.n_test=100", "tracking.mode=disabled", "model.width=16")


class _Payload:
    """Unpickling this object creates ``marker``: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": 1, "model": _Payload(marker)}, path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished tiny run (1 epoch) in ``<results>/runs/<run id>``, and its overrides."""
    from flatness.config import compose_run

    results = tmp_path_factory.mktemp("results")
    overrides = [*SMALL, "train.epochs=1"]
    rid = run_id(compose_run(overrides))
    overrides.append(f"out_dir={results / 'runs' / rid}")
    run_group([compose_run(overrides)])[0]
    return results, rid, overrides


@pytest.mark.parametrize("name", ["model.pt", "model_init.pt"])
def test_code_in_a_model_file_never_runs_on_any_stage(trained, tmp_path, name):
    results, rid, overrides = trained
    copy = tmp_path / "runs" / rid
    shutil.copytree(results / "runs" / rid, copy)
    marker = tmp_path / "marker"
    _plant(copy / name, marker)
    moved = [o for o in overrides if not o.startswith("out_dir=")] + [f"out_dir={copy}"]
    stages = {
        "measure": lambda: measure_run(run_dir=copy),
        "reparam": lambda: reparam_run(moved, [2.0]),
        "landscape": lambda: landscape(tmp_path, rid, rid, {}),
    }
    for stage, call in stages.items():
        with pytest.raises(pickle.UnpicklingError, match=name):
            call()
        assert not marker.exists(), stage


def test_code_in_a_checkpoint_never_runs_on_train_resume_or_grouped(compose, tmp_path):
    marker = tmp_path / "marker"
    cfg = compose(*SMALL, "train.epochs=1", f"out_dir={tmp_path / 'run'}")
    _plant(tmp_path / "run" / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError, match="resume=restart"):
        run_group([cfg])[0]  # the train stage, which resumes from checkpoint.pt
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt"]
    with pytest.raises(CheckpointError, match=str(tmp_path / "run" / "checkpoint.pt")):
        run_group([cfg], engine="stacked")
    with torch.random.fork_rng(devices=[]):  # the training loop itself, as a resume
        model = build_run_model(cfg, (40,), 10)
        with pytest.raises(CheckpointError):
            train(
                [cfg],
                [model],
                [load_splits(cfg)],
                "reference",
                [tmp_path / "run" / "checkpoint.pt"],
            )
    assert not marker.exists()
    restarted = run_group(
        [compose(*SMALL, "train.epochs=1", "resume=restart", f"out_dir={tmp_path / 'run'}")]
    )[0]
    assert restarted["status"] == "ok" and not marker.exists()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def _interrupted(cfg, out: Path, at_epoch: int) -> None:
    """Train ``cfg`` into ``out`` and stop it (as a kill would) after its checkpoint at epoch 1."""

    class Killed(Exception):
        pass

    def kill(row):
        if row["epoch"] == at_epoch:
            raise Killed

    with torch.random.fork_rng(devices=[]), pytest.raises(Killed):
        model = build_run_model(cfg, (40,), 10)
        train([cfg], [model], [load_splits(cfg)], "reference", [out / "checkpoint.pt"], [kill])


def test_a_changed_config_never_resumes_silently(compose, tmp_path, caplog):
    out = tmp_path / "run"
    shared = (*SMALL, "train.epochs=4", "train.checkpoint_every=1", f"out_dir={out}")
    first = compose(*shared, "optim.lr=0.05")
    _interrupted(first, out, at_epoch=2)
    changed = compose(*shared, "optim.lr=0.01")
    with pytest.raises(CheckpointError) as err:
        run_group([changed])[0]
    for part in (run_id(first), run_id(changed), str(out), "resume=restart", "delete"):
        assert part in str(err.value)
    assert not (out / "config.yaml").exists()  # nothing written
    with caplog.at_level("WARNING", logger="flatness.training.checkpoint"):
        metrics = run_group([compose(*shared, "optim.lr=0.01", "resume=restart")])[0]
    assert "resume=restart" in caplog.text and metrics["epochs"] == 4
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3, 4] and (history["lr"] == 0.01).all()
    with caplog.at_level("INFO", logger="flatness.training.checkpoint"):  # the same config resumes
        _interrupted(first, out, at_epoch=2)
        resumed = run_group([first])[0]
    assert f"resuming run {run_id(first)}" in caplog.text and resumed["epochs"] == 4


@pytest.mark.slow
def test_sigkilled_run_rerun_with_another_lr_stops_then_restarts_on_request(tmp_path):
    """SIGKILL a training process after a checkpoint; rerun it with a changed learning rate."""
    out = tmp_path / "run"
    base = [sys.executable, "-m", "flatness.training", "data.n_train=1000", "train.epochs=400",
            "train.checkpoint_every=2", "tracking.mode=disabled", "progress=false", f"out_dir={out}"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*base, "optim.lr=0.05"], env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()
    refused = subprocess.run([*base, "optim.lr=0.01", "train.epochs=3"], env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode != 0 and "resume=restart" in refused.stderr
    assert "belongs to run" in refused.stderr and str(out) in refused.stderr
    assert not (out / "metrics.json").exists()
    restarted = subprocess.run([*base, "optim.lr=0.01", "train.epochs=3", "resume=restart"],
                               env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert "resume=restart" in restarted.stdout + restarted.stderr
    assert (pd.read_csv(out / "history.csv")["lr"] == 0.01).all()


def test_blow_up_without_nan_is_diverged_with_step_and_reason(compose, tmp_path):
    metrics = run_group([compose(*SMALL, "optim.lr=50", "train.epochs=2", f"out_dir={tmp_path}")])[
        0
    ]
    saved = read_json(tmp_path / "metrics.json")
    assert saved["status"] == metrics["status"] == "diverged"
    assert isinstance(saved["diverged_step"], int) and saved["diverged_step"] <= saved["steps"]
    assert "divergence_factor" in saved["divergence"] or "non-finite" in saved["divergence"]


class _Spike(torch.nn.Module):
    """A model whose loss value spikes at one training step and recovers at the next: logits are
    scaled by ``k`` in value, not in gradient, so training itself is unaffected."""

    def __init__(self, inner, at_call: int, k: float):
        super().__init__()
        self.inner, self.at_call, self.k, self.calls = inner, at_call, k, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at_call:
                return out + out.detach() * (self.k - 1)
        return out


@pytest.mark.parametrize("factor", [10, None])
def test_a_blow_up_that_recovers_is_still_diverged(compose, tmp_path, factor):
    cfg = compose(*SMALL, "train.epochs=2", "train.batch_size=25",
                  f"train.divergence_factor={factor or 'null'}")  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        model = _Spike(build_run_model(cfg, (40,), 10), at_call=3, k=1e4)
        result = train([cfg], [model], [load_splits(cfg)])[0]
    if factor is None:  # the rule off: the spike is invisible at the end
        assert result.status == "ok" and np.isfinite(result.history[-1]["train_loss"])
        return
    assert (result.status, result.diverged_step) == ("diverged", 2)
    assert "above train.divergence_factor=10" in result.divergence


def test_divergence_rule():
    assert divergence(2.3, 2.3, 10) is None
    assert "above" in divergence(4456.0, 2.3, 10)
    assert divergence(4456.0, 2.3, None) is None
    assert "non-finite train loss" in divergence(float("nan"), 2.3, None)
    assert divergence(2.0, 2.3, 10, grads_finite=False) == "non-finite gradient"
    assert "parameters" in divergence(2.0, 2.3, 10, params_finite=False)


def test_batch_larger_than_the_training_set_is_an_error_before_any_work(compose, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.batch_size=1000 .* 200 examples"):
        compose("data.n_train=200", "train.batch_size=1000")
    cfg = compose("data=digits", "train.batch_size=2000", f"out_dir={tmp_path / 'r'}")
    with pytest.raises(ConfigError, match=r"train\.batch_size=2000 .* 1437 examples"):
        run_group([cfg])[0]
    with pytest.raises(ConfigError, match=r"train\.batch_size=2000"):
        run_group([cfg], engine="stacked")
    assert not (tmp_path / "r").exists()


def test_truncated_checkpoint_names_its_path_and_the_ways_on(compose, tmp_path):
    out = tmp_path / "run"
    cfg = compose(*SMALL, "train.epochs=3", "train.checkpoint_every=1", f"out_dir={out}")
    _interrupted(cfg, out, at_epoch=2)
    ckpt = out / "checkpoint.pt"
    assert load_tensors(ckpt)["run_id"] == run_id(cfg)
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as err:
        run_group([cfg])[0]
    message = str(err.value)
    assert str(ckpt) in message and "delete" in message.lower() and "resume=restart" in message
    assert "download" not in message


def _data_cfg(name: str, root: Path):
    return OmegaConf.create(dict(name=name, root=str(root), n_train=None, n_test=None,
                                 subset_seed=0))  # fmt: skip


def test_truncated_mnist_file_is_named_with_how_to_replace_it(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    shapes = {"train-images-idx3-ubyte": (60, 28, 28), "train-labels-idx1-ubyte": (60,),
              "t10k-images-idx3-ubyte": (10, 28, 28), "t10k-labels-idx1-ubyte": (10,)}  # fmt: skip
    for name, shape in shapes.items():
        header = bytes([0, 0, 8, len(shape)]) + np.array(shape, dtype=">u4").tobytes()
        (raw / name).write_bytes(header + bytes(int(np.prod(shape))))
    assert load_dataset(_data_cfg("mnist", tmp_path)).x_train.shape == (60, 1, 28, 28)
    bad = raw / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:5000])
    with pytest.raises(CorruptDataError) as err:
        load_dataset(_data_cfg("mnist", tmp_path))
    assert str(bad) in str(err.value) and "by hand" in str(err.value)
    assert "download" not in str(err.value).lower()


def test_truncated_cifar_batch_is_named_with_how_to_replace_it(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"\x80\x04truncated")
    with pytest.raises(CorruptDataError) as err:
        load_dataset(_data_cfg("cifar10", tmp_path))
    assert str(folder / "data_batch_1") in str(err.value) and "by hand" in str(err.value)
    assert "download" not in str(err.value).lower()


def test_outputs_are_readable_as_the_umask_says(tmp_path):
    old = os.umask(0o022)
    try:
        shared = atomic_write_text(tmp_path / "shared.txt", "x")
        os.umask(0o077)
        private = atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert shared.stat().st_mode & 0o777 == 0o644
    assert private.stat().st_mode & 0o777 == 0o600
