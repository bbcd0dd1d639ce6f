"""Benchmark: the pipeline's per-run overhead against the same training in a plain PyTorch loop.

    python bench/bench_pipeline.py                 # per-run overhead, ~1 minute
    python bench/bench_pipeline.py --study default # also the study end to end in a temp folder

Side by side, in one process and one machine state, for MNIST-1D MLPs (40-w-w-10, batch 100):

- plain:    a bare loop over tensors (randperm batches, SGD step), no evaluation, no I/O;
- library:  ``flatness.training.driver.train`` in-process (the reference engine with per-epoch
  full evaluation, checkpoints off);
- process:  ``python -m flatness.training`` as Snakemake runs it (imports, data, files), wall clock;
- snakemake (``--study``): the whole study, wall clock, and per job.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from flatness.config import compose_run
from flatness.data import load_dataset
from flatness.training.driver import build_run_model, prepare_splits, train

REPO = Path(__file__).resolve().parents[1]


def plain_loop(cfg, splits, steps: int) -> float:
    model = build_run_model(cfg, splits.x_train.shape[1:], 10)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    gen = torch.Generator().manual_seed(0)
    n, batch, done = len(splits.y_train), cfg.train.batch_size, 0
    started = time.perf_counter()
    while done < steps:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(splits.x_train[idx]), splits.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    return time.perf_counter() - started


def library_loop(cfg, splits) -> float:
    model = build_run_model(cfg, splits.x_train.shape[1:], 10)
    started = time.perf_counter()
    train([cfg], [model], [splits], "reference")
    return time.perf_counter() - started


def process_run(overrides: list[str], out_dir: Path) -> float:
    env = os.environ | {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "flatness.training",
        *overrides,
        f"out_dir={out_dir}",
        "progress=false",
    ]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def per_run_overhead(widths=(32, 100, 256), epochs: int = 50) -> None:
    torch.set_num_threads(1)
    print(f"{'width':>6} {'steps':>6} {'plain s':>8} {'library s':>10} {'process s':>10} "
          f"{'lib/plain':>9} {'proc/plain':>10}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for width in widths:
            overrides = [f"model.width={width}", f"train.epochs={epochs}", "tracking.mode=disabled"]
            cfg = compose_run(overrides)
            splits, _ = prepare_splits(cfg, load_dataset(cfg.data))
            steps = epochs * -(-len(splits.y_train) // cfg.train.batch_size)
            plain = min(plain_loop(cfg, splits, steps) for _ in range(2))
            library = min(library_loop(cfg, splits) for _ in range(2))
            process = min(process_run(overrides, Path(tmp) / f"w{width}-{i}") for i in range(2))
            print(f"{width:>6} {steps:>6} {plain:>8.2f} {library:>10.2f} {process:>10.2f} "
                  f"{library / plain:>9.2f} {process / plain:>10.2f}")  # fmt: skip


def study_wall_time(study: str, cores: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"),
               "--directory", tmp, "--cores", str(cores), "--config", f"study={study}", "-q"]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(cmd, check=True, env=os.environ | {"WANDB_MODE": "offline"})
        wall = time.perf_counter() - started
        jobs = len(list(Path(tmp, ".snakemake", "metadata").iterdir()))
    print(f"study {study}: {wall:.0f} s end to end on {cores} cores ({jobs} outputs recorded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", help="also time this study end to end (e.g. default)")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    per_run_overhead()
    if args.study:
        study_wall_time(args.study, args.cores)


if __name__ == "__main__":
    main()
