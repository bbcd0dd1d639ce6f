"""The one owner of torch files a run reads back: ``checkpoint.pt``, ``model.pt``, ``model_init.pt``.

Results folders are shared on clusters and copied between machines, so every file read here is
data, never code: ``torch.load(weights_only=True)`` only, and a checkpoint holds tensors and plain
containers (dicts, lists, tuples, numbers, strings, None). Both step engines (``reference_step``
and ``stacked_step``) write and read it through the run's ``record.RunRecord``:

- ``format``, ``run_id``: the run the checkpoint belongs to (``flatness.config.run_id``), so a rerun
  with a changed config never silently continues another config's trajectory;
- ``model``, ``init_state``: state dicts; ``optimizer``: ``optimizers.StackedOptimizer``'s
  per-run state (plain tensors); ``rng``: the dropout and data-order generator states (uint8 tensors);
- ``epoch``, ``step``, ``seconds``, ``fit``, ``history``: the loop's bookkeeping.

On resume, the config's ``resume`` key (bookkeeping, not part of the run id) decides: ``auto``
continues a checkpoint of the same run and stops with an error for any other; ``restart`` ignores
the file, without reading it, and starts afresh. Either choice is logged.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from flatness.io import atomic_torch_save

FORMAT = 1
RESUME_CHOICES = ("auto", "restart")
_KEYS = {
    "format": int,
    "run_id": str,
    "model": dict,
    "init_state": dict,
    "optimizer": dict,
    "rng": dict,
    "epoch": int,
    "step": int,
    "seconds": float,
    "history": list,
}
log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the ways on."""


def _ways_on(path: Path) -> str:
    return (
        f"Either delete {path} (the run then starts afresh), or rerun with resume=restart, "
        "which ignores the file and overwrites it"
    )


def load_tensors(path: str | Path) -> Any:
    """A torch file read as data only: tensors and plain containers, never code."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f"{path} holds more than tensors and plain containers (it may carry code) and was "
            f"not loaded: {str(err).splitlines()[0]}"
        ) from err


def save(path: Path, run_id: str, **fields: Any) -> None:
    """Write a checkpoint atomically (a kill mid-write leaves the previous one intact)."""
    atomic_torch_save(path, {"format": FORMAT, "run_id": run_id, **fields})


def load(path: Path | None, run_id: str, resume: str = "auto") -> dict | None:
    """The checkpoint at ``path`` for run ``run_id``, validated; None when the run starts afresh.

    Raises ``CheckpointError`` (naming the file, both run ids where they differ, and the two ways
    on) for an unreadable, malformed or foreign checkpoint when ``resume`` is ``auto``."""
    if resume not in RESUME_CHOICES:
        raise ValueError(f"resume={resume!r} is not allowed; allowed: one of auto, restart")
    if path is None or not Path(path).exists():
        return None
    path = Path(path)
    if resume == "restart":
        log.warning("resume=restart: ignoring %s; run %s starts afresh", path, run_id)
        return None
    try:
        ckpt = load_tensors(path)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated, corrupted or not a checkpoint: "
            f"{reason}). {_ways_on(path)}."
        ) from err
    problem = _malformed(ckpt)
    if problem:
        raise CheckpointError(f"checkpoint {path} is not a usable checkpoint: {problem}. "
                              f"{_ways_on(path)}.")  # fmt: skip
    if ckpt["run_id"] != run_id:
        raise CheckpointError(
            f"checkpoint {path} belongs to run {ckpt['run_id']}, but the config asks for run "
            f"{run_id} in folder {path.parent}: resuming would mix two configs. {_ways_on(path)}."
        )
    log.warning("resuming run %s from %s (epoch %d, step %d)", run_id, path, ckpt["epoch"],
                ckpt["step"])  # fmt: skip
    return ckpt


def _malformed(ckpt: Any) -> str | None:
    """What is wrong with a loaded checkpoint's layout, or None."""
    if not isinstance(ckpt, dict):
        return f"it holds a {type(ckpt).__name__}, not a dict"
    if ckpt.get("format") != FORMAT:
        return f"format={ckpt.get('format')!r}, expected {FORMAT} (written by another version)"
    for key, kind in _KEYS.items():
        value = ckpt.get(key)
        if not isinstance(value, kind) and not (kind is float and isinstance(value, int)):
            return f"{key!r} is {type(value).__name__}, expected {kind.__name__}"
    tensors = {**ckpt["model"], **ckpt["init_state"]}
    if not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        return "a model state entry is not a tensor"
    return None
