"""The ``train`` stage: one run from its config to the files of the output contract.

By hand::

    python -m flatness.train model.width=64 data.corruption.type=labels data.corruption.fraction=1

writes ``out_dir`` (default ``results/manual/run``) with ``config.yaml``, ``history.csv``,
``model.pt``, ``model_init.pt``, ``corruption.npz`` and, last, ``metrics.json``. The Snakefile runs
the same command with the overrides of each run in a study. If the process is killed, rerunning it
resumes from ``checkpoint.pt`` and ends with the same numbers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from flatness import checkpoint
from flatness.config import (
    CONF_DIR,
    check_batch_size,
    group_id,
    resolved,
    result_config,
    run_id,
    validate,
)
from flatness.corruptions import corrupt
from flatness.data import Dataset, load_dataset
from flatness.io import atomic_save_npz, atomic_torch_save, atomic_write, atomic_write_json
from flatness.models import build_model, count_parameters
from flatness.tracking import tracked
from flatness.training import derive_seed, resolve_device, train


@dataclass(frozen=True)
class Splits:
    """The tensors a run trains and evaluates on, after corruption, on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def prepare_splits(cfg, dataset: Dataset) -> tuple[Splits, dict[str, np.ndarray]]:
    """Apply the run's corruption (deterministic per seed) and return the arrays to save with it."""
    c = cfg.data.corruption
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "corruption"))
    args = (c.type, float(c.fraction), dataset.n_classes, gen)
    train_c = corrupt(dataset.x_train, dataset.y_train, *args)
    saved = {"y_train": train_c.y.numpy(), "train_indices": train_c.indices.numpy()}
    x_test, y_test = dataset.x_test, dataset.y_test
    if c.apply_to_test:
        test_c = corrupt(x_test, y_test, *args, permutation=train_c.permutation)
        x_test, y_test = test_c.x, test_c.y
        saved |= {"y_test": y_test.numpy(), "test_indices": test_c.indices.numpy()}
    if train_c.permutation is not None:
        saved["permutation"] = train_c.permutation.numpy()
    if c.type in ("random_pixels", "gaussian") and train_c.x.numel() * 4 <= 64 * 2**20:
        saved["x_train_corrupted"] = train_c.x[train_c.indices].numpy()
    return Splits(train_c.x, train_c.y, x_test, y_test), saved


def load_splits(cfg) -> Splits:
    """The run's data exactly as it was trained on (used by later stages: measures, reparam)."""
    return prepare_splits(cfg, load_dataset(cfg.data))[0]


def build_run_model(cfg, dataset_shape, n_classes: int) -> torch.nn.Module:
    """The run's model at initialization: a function of the config and seed only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        return build_model(cfg.model, dataset_shape, n_classes)


def run(cfg: DictConfig, progress: bool = False) -> dict:
    """Train one run and write its files; returns the metrics written to ``metrics.json``."""
    validate(cfg)
    out = Path(cfg.out_dir)
    device = resolve_device(cfg.device)
    dataset = load_dataset(cfg.data)
    check_batch_size(cfg, len(dataset.y_train))
    saved = checkpoint.load(out / "checkpoint.pt", run_id(cfg), cfg.resume)  # before any write
    splits = start_run(cfg, dataset, device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = build_run_model(cfg, dataset.input_shape, dataset.n_classes).to(device)
        with tracked(cfg.tracking, job_type="train", name=run_id(cfg), group=group_id(cfg),
                     config=result_config(cfg), run_dir=out) as wb:  # fmt: skip
            result = train(cfg, model, splits, out / "checkpoint.pt", log=wb.log,
                           progress=progress, saved=saved)  # fmt: skip
            metrics = run_metrics(cfg, result)
            wb.summary.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    return finish_run(cfg, result, metrics)


def start_run(cfg: DictConfig, dataset: Dataset, device: torch.device) -> Splits:
    """Write the files known before training (``config.yaml``, ``corruption.npz``) and return
    the run's splits on ``device``. Shared by the single-run and the grouped path."""
    out = Path(cfg.out_dir)
    splits, corruption_arrays = prepare_splits(cfg, dataset)
    atomic_write(out / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp))
    atomic_save_npz(out / "corruption.npz", **corruption_arrays)
    return Splits(*(t.to(device) for t in (splits.x_train, splits.y_train, splits.x_test,
                                           splits.y_test)))  # fmt: skip


def finish_run(cfg: DictConfig, result, metrics: dict) -> dict:
    """Write the trained run's files (``metrics.json`` last, so it marks a complete run) and drop
    the checkpoint. Shared by the single-run and the grouped path."""
    out = Path(cfg.out_dir)
    atomic_torch_save(out / "model_init.pt", _cpu(result.init_state))
    atomic_torch_save(out / "model.pt", _cpu(result.model.state_dict()))
    history = pd.DataFrame(result.history)
    atomic_write(out / "history.csv", lambda tmp: history.to_csv(tmp, index=False))
    atomic_write_json(out / "metrics.json", metrics)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    return metrics


def run_metrics(cfg: DictConfig, result) -> dict:
    """``metrics.json`` of a trained run: its final history row, status and bookkeeping."""
    n_params = count_parameters(result.model)
    return _metrics(cfg, result, run_id(cfg), group_id(cfg), n_params)


def _metrics(cfg, result, rid: str, gid: str, n_params: int) -> dict:
    final = result.history[-1]
    return {
        "run_id": rid,
        "group_id": gid,
        "seed": int(cfg.seed),
        "status": result.status,
        "stopped_by": result.stopped_by,
        "divergence": result.divergence,
        "diverged_step": result.diverged_step,
        "train_loss": final["train_loss"],
        "train_acc": final["train_acc"],
        "test_loss": final["test_loss"],
        "test_acc": final["test_acc"],
        "gen_gap": final["train_acc"] - final["test_acc"],
        "gen_gap_loss": final["test_loss"] - final["train_loss"],
        "test_error": 1.0 - final["test_acc"],
        "steps": result.steps,
        "epochs": result.epochs,
        "time_to_fit_epoch": result.time_to_fit_epoch,
        "time_to_fit_step": result.time_to_fit_step,
        "train_seconds": result.seconds,
        "n_params": n_params,
    }


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    cfg = resolved(cfg)
    progress = cfg.progress if isinstance(cfg.progress, bool) else sys.stderr.isatty()
    metrics = run(cfg, progress=progress)
    print(
        f"{metrics['run_id']}: {metrics['status']}, train acc {metrics['train_acc']:.4f}, "
        f"test acc {metrics['test_acc']:.4f} after {metrics['epochs']} epochs -> {cfg.out_dir}"
    )


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
