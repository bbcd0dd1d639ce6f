"""Atomic file writes: every output is written to a temp file beside it, then renamed.

A run killed mid-write (SLURM preemption, Ctrl-C, OOM) must never leave a half-written result that
Snakemake or a figure later reads as complete; ``os.replace`` within one folder is atomic on POSIX.
``mkstemp`` creates its file with mode 0600; the file gets the mode the user's umask gives a new
file before the rename, so colleagues on a shared cluster can read results as they expect.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path in ``path``'s folder; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types (tensors and arrays become lists); non-finite floats become null."""
    if hasattr(obj, "detach"):  # a torch tensor, without importing torch here
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def atomic_write_csv(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Rows (dicts) as a CSV table, columns in the order first seen, as ``pandas.to_csv(index=False)``
    writes them (floats in full precision, NaN and missing values as empty fields), without
    importing pandas: the training process writes ``history.csv`` and pandas costs it ~0.6 s."""
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def field(value: Any) -> Any:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([field(row.get(key)) for key in columns] for row in rows)

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    return atomic_write(path, write)


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)
