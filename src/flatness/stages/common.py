"""What the stages after training share: composing a run's config and loading its trained model.

Every stage takes the run's Hydra overrides (the same ones the train stage got), so it sees the
current ``conf/`` (say, changed measure settings) while the trained weights come from the run
folder. A trained model is rebuilt from the config and its ``model.pt`` state dict.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from flatness.config import compose_run
from flatness.data import load_dataset
from flatness.io import read_json
from flatness.training.checkpoint import load_tensors
from flatness.training.driver import Splits, build_run_model, prepare_splits


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
    run_dir = Path(run_dir)
    dataset = load_dataset(cfg.data)
    splits, _ = prepare_splits(cfg, dataset)
    model = build_run_model(cfg, dataset.input_shape, dataset.n_classes)
    init_model = build_run_model(cfg, dataset.input_shape, dataset.n_classes)
    model.load_state_dict(load_tensors(run_dir / "model.pt"))
    init_model.load_state_dict(load_tensors(run_dir / "model_init.pt"))
    return TrainedRun(
        cfg, run_dir, read_json(run_dir / "metrics.json"), splits, model.eval(), init_model.eval()
    )


def device_of(cfg: DictConfig) -> str:
    from flatness.training.driver import resolve_device

    return resolve_device(cfg.device).type
