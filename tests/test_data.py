"""Data loaders, through the same code the pipeline uses, on real on-disk formats."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from flatness.data import load_dataset


def data_cfg(**kw):
    base = dict(name="mnist1d", root=None, n_train=None, n_test=None, subset_seed=0,
                mnist1d={"num_samples": 5000, "train_split": 0.8, "seed": 42})  # fmt: skip
    return OmegaConf.create(base | kw)


def test_mnist1d_is_generated_offline_cached_and_leaves_global_rngs_alone(tmp_path):
    random.seed(3)
    np.random.seed(3)
    before = (random.random(), np.random.rand())
    random.seed(3)
    np.random.seed(3)
    d = load_dataset(data_cfg(), cache_dir=tmp_path)
    assert (random.random(), np.random.rand()) == before
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40)
    assert d.x_train.dtype == torch.float32 and d.n_classes == 10
    assert np.bincount(d.y_train.numpy()).tolist() == [
        398,
        396,
        411,
        394,
        394,
        402,
        401,
        404,
        402,
        398,
    ]
    assert abs(float(d.x_train.mean())) < 1e-5 and abs(float(d.x_train.std()) - 1) < 1e-3
    cached = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(cached) == 1
    again = load_dataset(data_cfg(), cache_dir=tmp_path)
    assert torch.equal(again.x_train, d.x_train)
    other = load_dataset(data_cfg(mnist1d={"num_samples": 1000, "seed": 1}), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 2 and other.x_train.shape[0] == 800


def test_subsets_are_fixed_and_shared(tmp_path):
    a = load_dataset(data_cfg(n_train=300, n_test=100), cache_dir=tmp_path)
    b = load_dataset(data_cfg(n_train=300, n_test=100), cache_dir=tmp_path)
    assert a.x_train.shape == (300, 40) and a.x_test.shape == (100, 40)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


def test_digits():
    d = load_dataset(data_cfg(name="digits", mnist1d={}))
    assert d.x_train.shape == (1437, 1, 8, 8) and d.x_test.shape == (360, 1, 8, 8)
    assert set(d.y_train.unique().tolist()) == set(range(10))


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST idx format: magic (0x08 = ubyte, rank), big-endian dims, raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_from_a_local_torchvision_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 8)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    d = load_dataset(data_cfg(name="mnist", root=str(tmp_path), mnist1d={}))
    assert d.x_train.shape == (20, 1, 28, 28) and d.x_test.shape == (8, 1, 28, 28)
    assert d.y_train.tolist() == [i % 10 for i in range(20)]


def test_cifar10_from_a_local_torchvision_root(tmp_path, monkeypatch):
    from torchvision.datasets import cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    # The only thing bypassed: torchvision's md5 check of the real files' contents.
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    d = load_dataset(data_cfg(name="cifar10", root=str(tmp_path), mnist1d={}))
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    assert d.y_test.tolist() == [0, 1, 2, 3]


def test_missing_root_names_the_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(data_cfg(name="cifar10", root=str(tmp_path), mnist1d={}))
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "data_batch_1" in message
    with pytest.raises(ValueError, match=r"data\.root is required"):
        load_dataset(data_cfg(name="mnist", mnist1d={}))
