"""The contract between the two step engines: a run trained in a stack (``stacked_step``) equals
the same run trained alone by the reference engine (``reference_step``), family by family.

Tolerance: the stacked loop runs the same float32 arithmetic, but each run's matmul becomes one
batched matmul whose kernel accumulates in a different order, so the two engines agree to
rounding (~1e-7 relative per step), not to the bit. Over the 16-40 steps of these runs the largest
relative loss difference seen was 3e-7 and no accuracy differed; we allow ``LOSS_TOL`` = 1e-5
(relative; 30x that) and at most one example's flip in an accuracy. Longer runs drift further
apart (training amplifies rounding), and Adam with batch norm amplifies it most: the gradient of a
bias right before a batch norm is zero up to rounding, and Adam rescales that noise to full steps.
Everything discrete (status, stopping reason, epochs, steps, time to fit, history length, file
layout, corruption draws, initial weights) must be identical. Dropout masks are bit-identical by
construction (``flatness.training.stacked_forward.dropout_mask``), so dropout runs meet the same
tolerance. Diverged runs compare what is defined (status, step, reason, the rows before it), not
the weights a blow-up left behind.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from flatness.config import ConfigError
from flatness.data import load_dataset
from flatness.io import read_json
from flatness.study import load_study
from flatness.training.checkpoint import load_tensors
from flatness.training.driver import build_run_model, prepare_splits, run_group, train
from flatness.training.grouping import group_key, make_groups

LOSS_TOL = 1e-5
BASE = ("data.n_train=200", "data.n_test=100", "train.batch_size=50", "tracking.mode=disabled")
FAMILIES = {
    "random_labels": [
        ("optim=adam", "optim.lr=0.01", "model.width=64", "train.epochs=6"),
        [("seed=0", "data.corruption.type=labels", "data.corruption.fraction=0.0"),
         ("seed=1", "data.corruption.type=labels", "data.corruption.fraction=0.5"),
         ("seed=2", "data.corruption.type=labels", "data.corruption.fraction=1.0"),
         ("seed=0", "data.corruption.type=shuffled_pixels", "data.corruption.fraction=1.0"),
         ("seed=1", "data.corruption.type=gaussian", "data.corruption.fraction=1.0")],
    ],
    "regularizers": [
        ("model.dropout=0.3", "model.batch_norm=true", "optim.lr=0.02", "optim.momentum=0.9",
         "optim.schedule=cosine", "train.epochs=6"),
        [("seed=0",), ("seed=1", "optim.weight_decay=0.001"), ("seed=0", "data.augment=true"),
         ("seed=1", "data.augment=true", "optim.weight_decay=0.001")],
    ],
    "width": [
        ("model.depth=1", "model.width=16", "optim=adam", "optim.lr=0.003", "train.epochs=6",
         "data.corruption.type=labels"),
        [("seed=0", "data.corruption.fraction=0.0"), ("seed=1", "data.corruption.fraction=0.15"),
         ("seed=2", "data.corruption.fraction=0.15")],
    ],
    "learning_rates": [
        ("train.epochs=6", "optim.momentum=0.9"),
        [("seed=0", "optim.lr=0.003"), ("seed=0", "optim.lr=0.03"),
         ("seed=3", "optim.lr=0.1", "optim.warmup_epochs=2", "optim.momentum=0.0")],
    ],
    "cnn": [
        ("model=cnn", "model.width=8", "model.batch_norm=true", "model.dropout=0.2", "train.epochs=4"),
        [("seed=0",), ("seed=1", "data.augment=true", "optim.lr=0.05")],
    ],
    "divergence": [
        ("train.epochs=4",),
        [("seed=0", "optim.lr=1e12"), ("seed=1", "optim.lr=0.05"), ("seed=2", "optim.lr=50")],
    ],
    "early_stopping": [
        ("optim=adam", "optim.lr=0.01", "model.width=64", "train.epochs=40"),
        [("seed=0", "train.target_train_loss=1.2"), ("seed=1", "train.target_train_loss=0.6"),
         ("seed=2", "train.stop_at_full_accuracy=true", "train.epochs=8")],
    ],
}  # fmt: skip
EXACT = ("status", "stopped_by", "epochs", "steps", "time_to_fit_epoch", "time_to_fit_step",
         "run_id", "group_id", "seed", "n_params")  # fmt: skip


def _configs(compose, tmp_path, family: str, where: str):
    shared, runs = FAMILIES[family]
    return [
        compose(*BASE, *shared, *own, f"out_dir={tmp_path / where / str(i)}")
        for i, own in enumerate(runs)
    ]


def _assert_close(a: float | None, b: float | None, n: int, key: str) -> None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        assert (a is None) == (b is None), key
        return
    if key.endswith("_acc"):
        assert abs(a - b) <= 1 / n + 1e-12, (key, a, b)
    else:
        assert a == pytest.approx(b, rel=LOSS_TOL, abs=1e-6), (key, a, b)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_grouped_run_equals_run_alone(compose, tmp_path, family):
    grouped = run_group(_configs(compose, tmp_path, family, "group"), engine="stacked")
    alone = [run_group([cfg], engine="reference")[0]
             for cfg in _configs(compose, tmp_path, family, "alone")]  # fmt: skip
    for i, (g, s) in enumerate(zip(grouped, alone, strict=True)):
        for key in (*EXACT, "divergence", "diverged_step"):
            assert g[key] == s[key], (family, i, key)
        if g["status"] == "diverged":  # weights after a blow-up are rounding amplified: compare
            _assert_same_divergence(tmp_path / "group" / str(i), tmp_path / "alone" / str(i))
            continue  # what the divergence is, not the weights it left behind
        for key in ("train_loss", "test_loss", "train_acc", "test_acc", "gen_gap_loss"):
            _assert_close(g[key], s[key], 100, key)
        gdir, sdir = tmp_path / "group" / str(i), tmp_path / "alone" / str(i)
        _assert_same_layout(gdir, sdir)
        hg, hs = pd.read_csv(gdir / "history.csv"), pd.read_csv(sdir / "history.csv")
        assert (hg[["epoch", "step"]].values == hs[["epoch", "step"]].values).all()
        assert np.allclose(hg["lr"], hs["lr"], rtol=1e-12)
        for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
            for a, b in zip(hg[key], hs[key], strict=True):
                _assert_close(a, b, 100, key)
    if family == "divergence":
        assert [m["status"] for m in grouped] == ["diverged", "ok", "diverged"]
        assert all(m["divergence"] and m["diverged_step"] is not None for m in grouped[::2])
    if family == "early_stopping":
        assert len({m["epochs"] for m in grouped}) == 3  # three different stopping epochs
        assert grouped[0]["stopped_by"] == "target_train_loss"


def _assert_same_divergence(gdir, sdir) -> None:
    """A diverged run: same files, same step and reason (compared by the caller), and the same
    history rows before the blow-up, to rounding (the last row is the blown-up model's)."""
    assert sorted(p.name for p in gdir.iterdir()) == sorted(p.name for p in sdir.iterdir())
    hg, hs = pd.read_csv(gdir / "history.csv"), pd.read_csv(sdir / "history.csv")
    assert (hg[["epoch", "step"]].values == hs[["epoch", "step"]].values).all()
    for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
        assert np.isfinite(hg[key].iloc[:-1]).all() and np.isfinite(hs[key].iloc[:-1]).all()
        for a, b in zip(hg[key].iloc[:-1], hs[key].iloc[:-1], strict=True):
            _assert_close(a, b, 100, key)


def _assert_same_layout(gdir, sdir) -> None:
    """Same files; same config; identical corruption draws and init; same tensors' names/shapes."""
    assert sorted(p.name for p in gdir.iterdir()) == sorted(p.name for p in sdir.iterdir())
    gcfg, scfg = OmegaConf.load(gdir / "config.yaml"), OmegaConf.load(sdir / "config.yaml")
    gcfg.out_dir = scfg.out_dir
    assert gcfg == scfg
    assert list(read_json(gdir / "metrics.json")) == list(read_json(sdir / "metrics.json"))
    with np.load(gdir / "corruption.npz") as a, np.load(sdir / "corruption.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    for name in ("model.pt", "model_init.pt"):
        ga = torch.load(gdir / name, weights_only=True)
        sa = torch.load(sdir / name, weights_only=True)
        assert [(k, v.shape, v.dtype) for k, v in ga.items()] == [
            (k, v.shape, v.dtype) for k, v in sa.items()
        ]
        if name == "model_init.pt":
            assert all(torch.equal(ga[k], sa[k]) for k in ga)
        else:
            assert all(torch.allclose(ga[k].double(), sa[k].double(), atol=1e-4) for k in ga)


class _Killed(Exception):
    pass


def _group_inputs(compose, overrides_per_run):
    cfgs = [compose(*BASE, "train.epochs=6", "train.checkpoint_every=2", *o)
            for o in overrides_per_run]  # fmt: skip
    dataset = load_dataset(cfgs[0].data)
    splits = [prepare_splits(c, dataset)[0] for c in cfgs]
    models = [build_run_model(c, dataset.input_shape, dataset.n_classes) for c in cfgs]
    return cfgs, splits, models


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_killed_group_resumes_exactly_and_the_reference_engine_reads_its_checkpoint(
    compose, tmp_path, optim
):
    # Batch norm with SGD only: Adam turns the rounding noise in the gradient of a bias right
    # before a batch norm into full-size steps (module docstring), past LOSS_TOL within 2 epochs.
    shared = (f"optim={optim}", "model.dropout=0.2", f"model.batch_norm={optim == 'sgd'}")
    runs = [(*shared, "seed=0", "data.augment=true"),
            (*shared, "seed=1", "optim.lr=0.01", "optim.momentum=0.8")]  # fmt: skip
    cfgs, splits, models = _group_inputs(compose, runs)
    clean = train(cfgs, models, splits, "stacked")
    ckpts = [tmp_path / f"{i}.pt" for i in range(len(cfgs))]
    early = tmp_path / "run0-epoch2.pt"

    def kill_at_epoch_5(row):  # a kill between checkpoints; keep run 0's epoch-2 checkpoint
        if row["epoch"] == 3:
            early.write_bytes(ckpts[0].read_bytes())
        if row["epoch"] == 5:
            raise _Killed

    with pytest.raises(_Killed):
        train(cfgs, models, splits, "stacked", ckpts, logs=[kill_at_epoch_5, None])
    assert all(load_tensors(p)["epoch"] == 4 for p in ckpts)
    alone = ckpts[1].with_name("alone.pt")
    alone.write_bytes(ckpts[1].read_bytes())
    resumed = train(cfgs, models, splits, "stacked", ckpts)
    for a, b in zip(clean, resumed, strict=True):  # same loop, same order: bit for bit
        assert a.history[-1] == {**b.history[-1], "seconds": a.history[-1]["seconds"]}
        assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    # A kill between two runs' checkpoint writes leaves them at different epochs: still resumes,
    # to rounding (the group shrinks at other times, and a 1-run bmm may round differently; Adam
    # with batch norm amplifies that, see the module docstring, hence 1e-3 here).
    ckpts[0].write_bytes(early.read_bytes())
    ckpts[1].write_bytes(alone.read_bytes())
    staggered = train(cfgs, models, splits, "stacked", ckpts)
    for a, b in zip(clean, staggered, strict=True):
        assert [r["step"] for r in a.history] == [r["step"] for r in b.history]
        for key in ("train_loss", "test_loss"):
            assert a.history[-1][key] == pytest.approx(b.history[-1][key], rel=1e-3)
    model = build_run_model(cfgs[1], splits[1].x_train.shape[1:], 10)  # the reference engine
    single = train([cfgs[1]], [model], [splits[1]], "reference", [alone])[0]  # resumes it too
    assert single.epochs == 6 and single.history[4] == resumed[1].history[4]
    for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
        _assert_close(single.history[-1][key], resumed[1].history[-1][key], 100, key)


ONE_RUN = {
    "regularizers": ("model.dropout=0.3", "model.batch_norm=true", "data.augment=true",
                     "optim.lr=0.02", "optim.momentum=0.9", "optim.schedule=cosine"),
    "early_stopping": ("optim=adam", "optim.lr=0.01", "model.width=64", "train.epochs=40",
                       "train.target_train_loss=1.2"),
    "divergence": ("optim.lr=50", "train.epochs=3"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ONE_RUN))
def test_a_group_of_one_gets_the_same_record_from_either_engine(compose, case):
    """The engine choice: one run, stepped by each engine, has the same record (bookkeeping
    exactly, losses to rounding) and the same initial weights, bit for bit."""
    cfgs, splits, models = _group_inputs(compose, [ONE_RUN[case]])
    ref, stacked = (train(cfgs, models, splits, engine)[0] for engine in ("reference", "stacked"))
    for key in ("status", "stopped_by", "steps", "epochs", "time_to_fit_epoch", "time_to_fit_step",
                "diverged_step"):  # fmt: skip
        assert getattr(ref, key) == getattr(stacked, key), key
    assert (ref.divergence is None) == (stacked.divergence is None)
    assert all(torch.equal(v, stacked.init_state[k]) for k, v in ref.init_state.items())
    assert [(r["epoch"], r["step"], r["lr"]) for r in ref.history] == [
        (r["epoch"], r["step"], r["lr"]) for r in stacked.history
    ]
    finite = ref.history[:-1] if ref.status == "diverged" else ref.history
    for a, b in zip(finite, stacked.history, strict=False):
        for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
            _assert_close(a[key], b[key], 100, key)
    expected = {"regularizers": "budget", "early_stopping": "target_train_loss",
                "divergence": "diverged"}  # fmt: skip
    assert ref.stopped_by == expected[case]


@pytest.mark.parametrize("engine", ["reference", "stacked"])
def test_engines_do_not_modify_callers_models(compose, engine):
    cfgs, splits, models = _group_inputs(compose, [("seed=0",), ("seed=1",)])
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    train(cfgs, models, splits, engine)
    for m, b in zip(models, before, strict=True):
        assert all(torch.equal(v, b[k]) for k, v in m.state_dict().items())


def test_grouping_is_deterministic_and_respects_the_key(compose):
    study = load_study("default")
    groups = make_groups(study.runs, 16)
    assert groups == make_groups(load_study("default").runs, 16)
    assert sorted(r for g in groups.values() for r in g) == sorted(study.runs)
    for members in groups.values():
        assert 1 <= len(members) <= 16
        assert len({group_key(study.runs[r].config) for r in members}) == 1
    assert set(make_groups(study.runs, 1)) != set(groups) and len(make_groups(study.runs, 1)) == 88
    a, b = compose("model.width=32"), compose("model.width=64")
    assert group_key(a) != group_key(b)
    assert group_key(a) == group_key(compose("model.width=32", "seed=3", "optim.lr=0.5"))
    with pytest.raises(ConfigError, match="group_size=0 is not allowed"):
        load_study("smoke", group_size=0)


def test_mixed_group_is_refused_with_the_reason(compose, tmp_path):
    cfgs = [compose(*BASE, f"out_dir={tmp_path / 'a'}"),
            compose(*BASE, "model.width=7", f"out_dir={tmp_path / 'b'}")]  # fmt: skip
    with pytest.raises(ConfigError, match="cannot join the group"):
        run_group(cfgs)
    with pytest.raises(ConfigError, match="engine='vmap' is not allowed; allowed: one of auto"):
        run_group(cfgs[:1], engine="vmap")
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_sigkilled_group_stage_resumes(tmp_path):
    """SIGKILL ``python -m flatness.stages.train_group`` after a checkpoint, rerun, compare."""
    shared = ["data.n_train=1000", "model.dropout=0.2", "train.epochs=150",
              "train.checkpoint_every=5", "tracking.mode=disabled"]  # fmt: skip
    own = [["seed=0", "data.augment=true"], ["seed=1", "optim.lr=0.05", "optim.schedule=cosine"]]

    def cmd(where):
        args = [a for i, o in enumerate(own) for a in
                ("--run", *shared, *o, f"out_dir={tmp_path / where / str(i)}")]  # fmt: skip
        return [sys.executable, "-m", "flatness.stages.train_group", *args]

    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd("killed"), env=env, stdout=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "1" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "1" / "metrics.json").exists(), "finished before the kill"
    assert 0 < load_tensors(ckpt)["epoch"] < 150
    subprocess.run(cmd("killed"), env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(cmd("clean"), env=env, check=True, stdout=subprocess.DEVNULL)
    for i in range(len(own)):
        a = read_json(tmp_path / "killed" / str(i) / "metrics.json")
        b = read_json(tmp_path / "clean" / str(i) / "metrics.json")
        assert (a["steps"], a["epochs"]) == (b["steps"], b["epochs"])
        for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
            _assert_close(a[key], b[key], 1000, key)
        assert not (tmp_path / "killed" / str(i) / "checkpoint.pt").exists()
