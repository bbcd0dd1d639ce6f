"""How close healthy runs come to the divergence bound (``train.divergence_factor``).

The default factor must be one that no healthy run of the studies reaches. This trains a few of
the studies' riskiest healthy settings (random labels with Adam, the largest learning rates) with
the bound off and reports the largest mini-batch train loss over the initial loss::

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/divergence_margin.py [epochs]
"""

from __future__ import annotations

import sys

import torch

import flatness.training.record as record
from flatness.config import compose_run
from flatness.training.driver import build_run_model, load_splits, train

CASES = {
    "random labels, adam lr 0.001, width 256": [
        "data.corruption.type=labels", "data.corruption.fraction=1.0", "model.width=256",
        "optim=adam", "optim.lr=0.001"],
    "random labels, adam lr 0.01, width 64": [
        "data.corruption.type=labels", "data.corruption.fraction=1.0", "model.width=64",
        "optim=adam", "optim.lr=0.01"],
    "sgd lr 0.05 momentum 0.9, batch 32": ["optim.lr=0.05", "train.batch_size=32"],
    "shuffled pixels, adam lr 0.003, depth 1": [
        "data.corruption.type=shuffled_pixels", "data.corruption.fraction=1.0", "model.depth=1",
        "optim=adam", "optim.lr=0.003"],
}  # fmt: skip


def worst_ratio(overrides: list[str], epochs: int) -> float:
    cfg = compose_run([*overrides, f"train.epochs={epochs}", "train.divergence_factor=null",
                       "tracking.mode=disabled"])  # fmt: skip
    ratios: list[float] = []
    rule = record.divergence

    def spy(loss, initial_loss, *args, **kwargs):
        ratios.append(loss / initial_loss)
        return rule(loss, initial_loss, *args, **kwargs)

    record.divergence = spy
    try:
        with torch.random.fork_rng(devices=[]):
            splits = load_splits(cfg)
            model = build_run_model(cfg, tuple(splits.x_train.shape[1:]), 10)
            result = train([cfg], [model], [splits])[0]
    finally:
        record.divergence = rule
    assert result.status == "ok", result.divergence
    return max(ratios)


if __name__ == "__main__":
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    for name, overrides in CASES.items():
        print(f"{name}: largest batch loss / initial loss = {worst_ratio(overrides, epochs):.3f}")
