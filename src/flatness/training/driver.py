"""The one training driver: run configs in, each run's files out; a lone run is a group of one.

``python -m flatness.training <overrides>`` (one run, by hand) and the ``train_group`` stage
(``--run ...`` per run, as the Snakefile calls it) both call ``run_group``, which writes for every
run, in ``out_dir``: ``config.yaml``, ``corruption.npz``, then ``model_init.pt``, ``model.pt``,
``history.csv`` and, last, ``metrics.json`` (so it marks a complete run). A killed run resumes
from its ``checkpoint.pt`` and ends with the same numbers.

The runs are stepped by one of two engines (``ENGINES``), both bookkept by ``record.RunRecord``:
``reference`` (``reference_step``: one module per run, the definition, for models too large to
stack) and ``stacked`` (``stacked_step``: all runs in one vectorized loop). ``auto`` takes the
reference for a group of one, so a lone run is bit-for-bit what it always was, and the stacked
engine for larger groups.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from flatness.base import ENGINE_CHOICES
from flatness.config import (
    ConfigError,
    check_batch_size,
    group_id,
    result_config,
    run_id,
    validate,
)
from flatness.corruptions import corrupt
from flatness.data import Dataset, load_dataset
from flatness.io import (
    atomic_save_npz,
    atomic_torch_save,
    atomic_write,
    atomic_write_csv,
    atomic_write_json,
)
from flatness.models import build_model, count_parameters
from flatness.seeds import derive_seed
from flatness.tracking import tracked
from flatness.training import checkpoint
from flatness.training.grouping import group_key
from flatness.training.record import RunRecord, TrainResult
from flatness.training.reference_step import train_reference
from flatness.training.stacked_step import train_stacked

ENGINES = {"reference": train_reference, "stacked": train_stacked}  # the ENGINE_CHOICES but auto


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


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


def run_group(cfgs: list[DictConfig], engine: str = "auto", progress: bool = False) -> list[dict]:
    """Train the runs ``cfgs`` together and write each one's files; returns their metrics."""
    check_group(cfgs, engine)
    device = resolve_device(cfgs[0].device)
    dataset = load_dataset(cfgs[0].data)
    for cfg in cfgs:
        check_batch_size(cfg, len(dataset.y_train))
    paths = [Path(cfg.out_dir) / "checkpoint.pt" for cfg in cfgs]
    saved = [checkpoint.load(p, run_id(c), c.resume) for p, c in zip(paths, cfgs, strict=True)]
    splits = [start_run(cfg, dataset, device) for cfg in cfgs]  # the first files written
    models = [build_run_model(c, dataset.input_shape, dataset.n_classes).to(device) for c in cfgs]
    with contextlib.ExitStack() as stack:
        trackers = [stack.enter_context(_tracker(c)) for c in cfgs]
        results = train(cfgs, models, splits, engine, paths, [t.log for t in trackers], saved,
                        progress)  # fmt: skip
        all_metrics = [run_metrics(c, result) for c, result in zip(cfgs, results, strict=True)]
        for tracker, metrics in zip(trackers, all_metrics, strict=True):
            tracker.summary.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    return [finish_run(*args) for args in zip(cfgs, results, all_metrics, strict=True)]


def _tracker(cfg: DictConfig):
    """The run's W&B run (a no-op unless ``tracking.mode`` asks for one); it logs every row."""
    return tracked(cfg.tracking, job_type="train", name=run_id(cfg), group=group_id(cfg),
                   config=result_config(cfg), run_dir=Path(cfg.out_dir))  # fmt: skip


def check_group(cfgs: list[DictConfig], engine: str) -> None:
    """A group's configs and engine, checked before any file is written."""
    if not cfgs:
        raise ConfigError("a group needs at least one run; allowed: one or more run configs")
    _check_engine(engine)
    for cfg in cfgs:
        validate(cfg)
        if group_key(cfg) != group_key(cfgs[0]):
            raise ConfigError(
                f"run {run_id(cfg)} (seed={cfg.seed}) cannot join the group of run "
                f"{run_id(cfgs[0])}: they differ in more than "
                "flatness.training.grouping.PER_RUN_KEYS (allowed: runs with the same "
                "architecture, data, batch size, optimizer, device)"
            )


def train(cfgs, models, splits, engine: str = "auto", checkpoints=None, logs=None, saved=None,
          progress: bool = False) -> list[TrainResult]:  # fmt: skip
    """Train ``models[r]`` (built by ``build_run_model``) on ``splits[r]`` with ``engine``.

    ``checkpoints[r]`` is run ``r``'s checkpoint path (None: no checkpoints), ``logs[r]`` gets its
    history rows, ``saved[r]`` is its checkpoint if already loaded. The caller's models and RNG
    state are not modified."""
    _check_engine(engine)
    n = len(cfgs)
    per_run = zip(cfgs, splits, checkpoints or [None] * n, logs or [None] * n,
                  saved or [None] * n, strict=True)  # fmt: skip
    bar = progress and n == 1  # one progress bar, for a lone run
    records = [
        RunRecord(c, math.ceil(len(s.y_train) / int(c.train.batch_size)), path, log, ckpt, bar)
        for c, s, path, log, ckpt in per_run
    ]
    if engine == "auto":
        engine = "reference" if n == 1 else "stacked"
    return ENGINES[engine](records, models, splits)


def _check_engine(engine: str) -> None:
    if engine not in ENGINE_CHOICES:
        raise ConfigError(f"engine={engine!r} is not allowed; allowed: one of "
                          f"{', '.join(ENGINE_CHOICES)}")  # fmt: skip


def start_run(cfg: DictConfig, dataset: Dataset, device: torch.device) -> Splits:
    """Write the files known before training (``config.yaml``, ``corruption.npz``) and return
    the run's splits on ``device``."""
    out = Path(cfg.out_dir)
    splits, corruption_arrays = prepare_splits(cfg, dataset)
    atomic_write(out / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp))
    atomic_save_npz(out / "corruption.npz", **corruption_arrays)
    return Splits(*(t.to(device) for t in (splits.x_train, splits.y_train, splits.x_test,
                                           splits.y_test)))  # fmt: skip


def finish_run(cfg: DictConfig, result, metrics: dict) -> dict:
    """Write the trained run's files (``metrics.json`` last, so it marks a complete run) and drop
    the checkpoint."""
    out = Path(cfg.out_dir)
    atomic_torch_save(out / "model_init.pt", _cpu(result.init_state))
    atomic_torch_save(out / "model.pt", _cpu(result.model.state_dict()))
    atomic_write_csv(out / "history.csv", result.history)
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
