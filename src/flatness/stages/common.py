"""What the stages after training share: composing a run's config and loading its trained model.

Every stage takes the run's Hydra overrides (the same ones the train stage got), so it sees the
current ``conf/`` (say, changed measure settings) while the trained weights come from the run
folder. A trained model is rebuilt from the config and its ``model.pt`` state dict; the data it
was trained on is rebuilt from the clean data set and the run's ``corruption.npz`` (the labels,
indices, pixel permutation and corrupted inputs the train stage wrote), not re-derived.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from flatness.config import compose_run
from flatness.data import load_dataset
from flatness.io import read_json
from flatness.training.checkpoint import load_tensors
from flatness.training.driver import Splits, build_run_model, prepare_splits


class RunDataError(ValueError):
    """A run's ``corruption.npz`` does not fit the run's config or data set."""


@dataclass(frozen=True)
class TrainedRun:
    """A finished run: its config, metrics, data as trained on, and models (CPU, eval mode)."""

    cfg: DictConfig
    run_dir: Path
    metrics: dict
    splits: Splits
    model: torch.nn.Module
    init_model: torch.nn.Module


def set_threads() -> None:
    """Use the threads Snakemake gave the job (``OMP_NUM_THREADS``), else torch's default."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))


def load_run(overrides: Sequence[str] = (), run_dir: Path | None = None) -> TrainedRun:
    """Compose the run's config from ``overrides`` (or read ``run_dir/config.yaml``) and load it."""
    if overrides:
        cfg = compose_run(overrides)
        run_dir = Path(cfg.out_dir)
    else:
        cfg = OmegaConf.load(Path(run_dir) / "config.yaml")
    return load_trained(cfg, Path(run_dir))


def load_trained(cfg: DictConfig, run_dir: Path) -> TrainedRun:
    """The trained run in ``run_dir`` under the config ``cfg`` (composed or read by the caller)."""
    dataset = load_dataset(cfg.data)
    splits = saved_splits(cfg, dataset, run_dir / "corruption.npz")
    model = build_run_model(cfg, dataset.input_shape, dataset.n_classes)
    init_model = build_run_model(cfg, dataset.input_shape, dataset.n_classes)
    model.load_state_dict(load_tensors(run_dir / "model.pt"))
    init_model.load_state_dict(load_tensors(run_dir / "model_init.pt"))
    return TrainedRun(
        cfg, run_dir, read_json(run_dir / "metrics.json"), splits, model.eval(), init_model.eval()
    )


def saved_splits(cfg: DictConfig, dataset, path: Path) -> Splits:
    """The run's data exactly as trained on, read from its ``corruption.npz``.

    Labels, corrupted indices, the fixed pixel permutation and the corrupted training inputs come
    from the file. What the train stage does not store (corrupted inputs over 64 MB, corrupted test
    inputs) is drawn again from the run's seed, and checked against the stored indices, so a file
    that belongs to another run or data set is an error naming it, never silently used.
    """
    with np.load(path, allow_pickle=False) as f:
        saved = {k: f[k] for k in f.files}
    drawn, drawn_arrays = prepare_splits(cfg, dataset)
    n_train, n_test = len(dataset.y_train), len(dataset.y_test)
    _check(path, "y_train", saved, n_train, dataset.n_classes)
    _check(path, "y_test", saved, n_test, dataset.n_classes, required=False)
    for key in ("train_indices", "test_indices", "permutation"):
        if (key in saved) != (key in drawn_arrays) or (
            key in saved and not np.array_equal(saved[key], drawn_arrays[key])
        ):
            raise RunDataError(
                f"{path}: {key} does not match data.corruption of this run ({cfg.data.corruption}); "
                "the file belongs to another run: delete the run folder and train it again"
            )
    x_train = dataset.x_train.clone()
    indices = torch.from_numpy(saved["train_indices"]).long()
    if "x_train_corrupted" in saved:
        x_train[indices] = torch.from_numpy(saved["x_train_corrupted"]).to(x_train.dtype)
    else:
        x_train[indices] = drawn.x_train[indices]  # not stored: drawn again from the seed
    y_test = torch.from_numpy(saved["y_test"]).long() if "y_test" in saved else dataset.y_test
    return Splits(x_train, torch.from_numpy(saved["y_train"]).long(), drawn.x_test, y_test)


def _check(path: Path, key: str, saved: dict, n: int, n_classes: int, required=True) -> None:
    if key not in saved:
        if required:
            raise RunDataError(f"{path}: {key} is missing; allowed: a corruption.npz written by "
                               "the train stage (delete the run folder and train it again)")  # fmt: skip
        return
    y = saved[key]
    if (
        y.shape != (n,)
        or not np.issubdtype(y.dtype, np.integer)
        or y.min() < 0
        or y.max() >= n_classes
    ):
        raise RunDataError(
            f"{path}: {key} has shape {y.shape} and values in [{y.min()}, {y.max()}]; allowed: "
            f"{n} integer labels in [0, {n_classes}) (delete the run folder and train it again)"
        )


def device_of(cfg: DictConfig) -> str:
    from flatness.training.driver import resolve_device

    return resolve_device(cfg.device).type
