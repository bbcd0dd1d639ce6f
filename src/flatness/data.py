"""Datasets as in-memory tensors: MNIST-1D (generated offline), scikit-learn digits, MNIST, CIFAR-10.

Everything is loaded whole into tensors because the studies' data sets are small and indexing a
tensor with a permutation is 1.5-3x faster per step than a DataLoader for small MLPs (see
shared/environment.md). Nothing here touches the network: MNIST-1D is generated with
``make_dataset`` (never ``get_dataset``, which downloads) and the torchvision sets are read from a
local root with ``download=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flatness.base import DATASET_NAMES
from flatness.io import atomic_save_npz

_EXPECTED_FILES = {
    "mnist": (
        "MNIST/raw",
        [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ],
    ),
    "cifar10": (
        "cifar-10-batches-py",
        [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"],
    ),
}


@dataclass(frozen=True)
class Dataset:
    """A classification data set held as tensors; inputs are float32 and standardized."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def default_cache_dir() -> Path:
    return Path(os.environ.get("FLATNESS_CACHE", Path.home() / ".cache" / "flatness"))


def load_dataset(data_cfg, cache_dir: Path | None = None) -> Dataset:
    """Load the data set named by ``data_cfg.name``, restricted to ``n_train``/``n_test`` examples."""
    name = data_cfg["name"]
    if name == "mnist1d":
        raw = _mnist1d(dict(data_cfg["mnist1d"]), cache_dir or default_cache_dir())
    elif name == "digits":
        raw = _digits()
    elif name in ("mnist", "cifar10"):
        raw = _torchvision(name, data_cfg["root"])
    else:
        raise ValueError(f"data.name={name!r} is not a known data set; allowed: {DATASET_NAMES}")
    x_train, y_train, x_test, y_test, n_classes = raw
    rng = np.random.default_rng(int(data_cfg["subset_seed"]))
    x_train, y_train = _subset(x_train, y_train, data_cfg["n_train"], rng)
    x_test, y_test = _subset(x_test, y_test, data_cfg["n_test"], rng)
    x_train, x_test = _standardize(x_train, x_test)
    return Dataset(
        name=name,
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(y_train),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(y_test),
        n_classes=n_classes,
    )


def _subset(x: np.ndarray, y: np.ndarray, n, rng: np.random.Generator):
    """The first ``n`` examples of a fixed permutation: every run of a study sees the same subset."""
    if n is None or int(n) >= len(y):
        return x, y
    idx = np.sort(rng.permutation(len(y))[: int(n)])
    return x[idx], y[idx]


def _standardize(x_train: np.ndarray, x_test: np.ndarray):
    """Per-channel standardization with training-set statistics (a scalar for 1-D signals)."""
    axes = (0,) if x_train.ndim == 2 else (0, *range(2, x_train.ndim))
    mean = x_train.mean(axis=axes, keepdims=True) if x_train.ndim > 2 else x_train.mean()
    std = x_train.std(axis=axes, keepdims=True) if x_train.ndim > 2 else x_train.std()
    std = np.where(std > 0, std, 1.0)
    return (
        ((x_train - mean) / std).astype(np.float32),
        ((x_test - mean) / std).astype(np.float32),
    )


def _mnist1d(args: dict, cache_dir: Path):
    """MNIST-1D generated offline, cached under a hash of its generation arguments.

    The package's own cache ignores custom arguments, so ours is keyed on the arguments the config
    sets plus the package version (which fixes the defaults of the rest). ``mnist1d`` imports
    matplotlib (about 1 s), so it is imported only on a cache miss. ``make_dataset`` reseeds
    Python's and NumPy's global RNGs; we restore them.
    """
    from importlib.metadata import version

    key_src = json.dumps({"v": version("mnist1d"), **args}, sort_keys=True, default=str)
    digest = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"mnist1d-{digest}.npz"
    if not path.exists():
        from mnist1d.data import get_dataset_args, make_dataset

        gen_args = get_dataset_args(as_dict=False)
        for key, value in args.items():
            if not hasattr(gen_args, key):
                raise ValueError(f"data.mnist1d.{key} is not an MNIST-1D generation argument")
            setattr(gen_args, key, value)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            d = make_dataset(gen_args)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        atomic_save_npz(path, x=d["x"], y=d["y"], x_test=d["x_test"], y_test=d["y_test"])
    with np.load(path) as d:
        x, y, xt, yt = d["x"], d["y"], d["x_test"], d["y_test"]
    return x.astype(np.float32), y.astype(np.int64), xt.astype(np.float32), yt.astype(np.int64), 10


def _digits():
    """scikit-learn's 8x8 digits (ships inside the wheel), a fixed 80/20 split, shape (1, 8, 8)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    cut = int(0.8 * len(y))
    tr, te = order[:cut], order[cut:]
    return x[tr], y[tr], x[te], y[te], 10


def _torchvision(name: str, root) -> tuple:
    """MNIST or CIFAR-10 from a local root in torchvision's on-disk format (never downloaded)."""
    from torchvision import datasets

    folder, files = _EXPECTED_FILES[name]
    if root is None:
        raise ValueError(
            f"data.root is required for data.name={name!r}: set data.root=/path/to/root, the "
            f"folder holding {folder}/ with {', '.join(files)}"
        )
    missing = [f for f in files if not (Path(root) / folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"data.root={str(root)!r} does not hold the {name} files: expected "
            f"{Path(root) / folder}/ with {', '.join(files)}; missing {', '.join(missing)}. "
            f"Nothing is downloaded at run time: copy the standard torchvision files there."
        )
    cls = datasets.MNIST if name == "mnist" else datasets.CIFAR10
    if name == "mnist":
        for f in files:
            _check_idx(Path(root) / folder / f)
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except (RuntimeError, ValueError, OSError, EOFError, AssertionError) as err:
        # torchvision's message names no file and suggests download=True: name the bad file
        if name == "cifar10":
            _check_cifar(Path(root) / folder, cls)
        raise CorruptDataError(
            f"reading {name} from {Path(root) / folder} failed ({err}); one of {', '.join(files)} "
            f"is damaged. {_REPLACE_BY_HAND}"
        ) from err
    return (*_as_arrays(train), *_as_arrays(test), 10)


class CorruptDataError(ValueError):
    """A local data set file that is truncated or corrupted; the message names the file."""


_REPLACE_BY_HAND = (
    "Replace it by hand with an intact copy of the standard torchvision file (copy it from a "
    "machine that has one, or extract it again from the original archive); the project never "
    "fetches data at run time"
)


def _check_idx(path: Path) -> None:
    """An MNIST idx file's size must match the shape its header states (truncation check)."""
    with open(path, "rb") as f:
        header = f.read(4)
        n_dims = header[3] if len(header) == 4 else 0
        dims = np.frombuffer(f.read(4 * n_dims), dtype=">u4") if 1 <= n_dims <= 3 else []
    if len(header) < 4 or header[2] != 0x08 or len(dims) != n_dims or not n_dims:
        raise CorruptDataError(f"{path} is not an MNIST idx file of unsigned bytes (bad header). "
                               f"{_REPLACE_BY_HAND}")  # fmt: skip
    expected = 4 * (1 + n_dims) + int(np.prod(dims))
    if path.stat().st_size != expected:
        raise CorruptDataError(
            f"{path} is truncated or corrupted: its header states shape {tuple(int(d) for d in dims)}"
            f" ({expected} bytes), the file has {path.stat().st_size} bytes. {_REPLACE_BY_HAND}"
        )


def _check_cifar(folder: Path, cls) -> None:
    """Name the CIFAR-10 file whose MD5 differs from torchvision's published checksum."""
    from torchvision.datasets.utils import check_integrity

    entries = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
    for filename, md5 in entries:
        if not check_integrity(str(folder / filename), md5):
            raise CorruptDataError(
                f"{folder / filename} is truncated or corrupted (its MD5 is not the published "
                f"{md5}). {_REPLACE_BY_HAND}"
            )


def _as_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(ds.data, dtype=np.float32) / 255.0
    data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)  # to (N, C, H, W)
    return np.ascontiguousarray(data), np.asarray(ds.targets, dtype=np.int64)
