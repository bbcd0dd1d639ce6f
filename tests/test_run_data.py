"""Later stages read the data a run was trained on from its ``corruption.npz`` (issue 11), and a
file that does not belong to the run is an error naming it (issue 13: results folders are data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flatness.config import compose_run
from flatness.stages.common import RunDataError, load_run
from flatness.training.driver import load_splits, run_group

SMALL = ("data.n_train=100", "data.n_test=100", "tracking.mode=disabled", "model.width=8",
         "train.epochs=1")  # fmt: skip


def _train(tmp_path, *overrides):
    cfg = compose_run([*SMALL, *overrides, f"out_dir={tmp_path / 'run'}"])
    run_group([cfg])
    return tmp_path / "run"


@pytest.mark.parametrize(
    "corruption",
    [("labels", 0.5), ("shuffled_pixels", 1.0), ("random_pixels", 0.5), ("gaussian", 0.3)],
)
def test_stages_see_the_data_the_run_was_trained_on(tmp_path, corruption):
    kind, fraction = corruption
    run_dir = _train(
        tmp_path, f"data.corruption.type={kind}", f"data.corruption.fraction={fraction}"
    )
    run = load_run(run_dir=run_dir)
    expected = load_splits(run.cfg)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(run.splits, name), getattr(expected, name)), name


def test_labels_come_from_the_file(tmp_path):
    run_dir = _train(tmp_path, "data.corruption.type=labels", "data.corruption.fraction=1.0")
    path = run_dir / "corruption.npz"
    with np.load(path) as f:
        saved = dict(f)
    saved["y_train"] = (saved["y_train"] + 1) % 10
    np.savez(path, **saved)
    assert torch.equal(load_run(run_dir=run_dir).splits.y_train, torch.from_numpy(saved["y_train"]))


@pytest.mark.parametrize("fault", ["indices", "labels_out_of_range", "missing_labels"])
def test_a_corruption_file_of_another_run_is_an_error_naming_it(tmp_path, fault):
    run_dir = _train(tmp_path, "data.corruption.type=labels", "data.corruption.fraction=0.5")
    path = run_dir / "corruption.npz"
    with np.load(path) as f:
        saved = dict(f)
    if fault == "indices":
        saved["train_indices"] = saved["train_indices"][:-1]
    elif fault == "labels_out_of_range":
        saved["y_train"] = saved["y_train"] + 10
    else:
        del saved["y_train"]
    np.savez(path, **saved)
    with pytest.raises(RunDataError, match=r"corruption\.npz"):
        load_run(run_dir=run_dir)
