"""The ``train_group`` stage: several runs that share an architecture, trained in one process.

By hand, one ``--run`` per run with that run's Hydra overrides (the Snakefile passes the overrides
of each run of a group, see ``workflow/rules/train_group.smk``), or ``--run-dir`` with run folders
that hold a ``config.yaml``::

    python -m flatness.stages.train_group --run seed=0 optim.lr=0.01 --run seed=1 optim.lr=0.05
    python -m flatness.stages.train_group --run-dir results/default/runs/<id> --run-dir ...

Every run gets its own folder with exactly the files ``python -m flatness.train`` writes (the same
functions write them: ``flatness.train.start_run`` / ``finish_run``), trained by the vectorized loop
of ``flatness.grouped``. Killed and rerun with the same arguments, the group resumes every run from
its ``checkpoint.pt``. Start-up (imports, data generation) is paid once per group, not per run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from flatness import checkpoint
from flatness.config import (
    ConfigError,
    check_batch_size,
    compose_run,
    group_id,
    result_config,
    run_id,
    validate,
)
from flatness.data import load_dataset
from flatness.grouped import train_group
from flatness.grouping import group_key
from flatness.stages.common import set_threads
from flatness.tracking import tracked
from flatness.train import build_run_model, finish_run, run_metrics, start_run
from flatness.training import resolve_device


def run_group(cfgs: list[DictConfig]) -> list[dict]:
    """Train the runs ``cfgs`` together and write each one's files; returns their metrics."""
    if not cfgs:
        raise ConfigError("a group needs at least one run; allowed: one or more run configs")
    for cfg in cfgs:
        validate(cfg)
        if group_key(cfg) != group_key(cfgs[0]):
            raise ConfigError(
                f"run {run_id(cfg)} (seed={cfg.seed}) cannot join the group of run "
                f"{run_id(cfgs[0])}: they differ in more than flatness.grouping.PER_RUN_KEYS "
                "(allowed: runs with the same architecture, data, batch size, optimizer, device)"
            )
    device = resolve_device(cfgs[0].device)
    dataset = load_dataset(cfgs[0].data)
    check_batch_size(cfgs[0], len(dataset.y_train))  # one batch size per group
    checkpoints = [Path(cfg.out_dir) / "checkpoint.pt" for cfg in cfgs]
    saved = [
        checkpoint.load(p, run_id(c), c.resume) for p, c in zip(checkpoints, cfgs, strict=True)
    ]
    splits = [start_run(cfg, dataset, device) for cfg in cfgs]
    models = [build_run_model(c, dataset.input_shape, dataset.n_classes).to(device) for c in cfgs]
    results = train_group(cfgs, models, splits, checkpoints, saved=saved)
    all_metrics = []
    for cfg, result in zip(cfgs, results, strict=True):
        metrics = run_metrics(cfg, result)
        with tracked(cfg.tracking, job_type="train", name=run_id(cfg), group=group_id(cfg),
                     config=result_config(cfg), run_dir=Path(cfg.out_dir)) as wb:  # fmt: skip
            for row in result.history:  # W&B mirrors the history after the fact
                wb.log(row)
            wb.summary.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        all_metrics.append(finish_run(cfg, result, metrics))
    return all_metrics


def parse_group(argv: list[str] | None, description: str) -> tuple[list[list[str]], list[Path]]:
    """Each run's overrides (``--run ...``) and run folders (``--run-dir``) of a group stage."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--run", nargs="+", action="append", default=[], metavar="OVERRIDE",
        help="one run's Hydra overrides (repeat --run for every run of the group)",
    )  # fmt: skip
    parser.add_argument(
        "--run-dir", action="append", type=Path, default=[],
        help="a run folder holding config.yaml (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.run and not args.run_dir:
        parser.error("give each run's overrides with --run, or its folder with --run-dir")
    return args.run, args.run_dir


def compose_group(overrides: list[list[str]], run_dirs: list[Path]) -> list[DictConfig]:
    """The run configs: composed from overrides, or read from a run folder's ``config.yaml``."""
    cfgs = [compose_run(o) for o in overrides]
    for run_dir in run_dirs:
        cfg = OmegaConf.load(run_dir / "config.yaml")
        cfg.out_dir = str(run_dir)
        cfgs.append(cfg)
    return cfgs


def main(argv: list[str] | None = None) -> None:
    cfgs = compose_group(*parse_group(argv, __doc__.splitlines()[0]))
    set_threads()
    with torch.random.fork_rng(devices=[]):
        for cfg, m in zip(cfgs, run_group(cfgs), strict=True):
            print(
                f"{m['run_id']}: {m['status']}, train acc {m['train_acc']:.4f}, test acc "
                f"{m['test_acc']:.4f} after {m['epochs']} epochs -> {cfg.out_dir}"
            )


if __name__ == "__main__":
    main()
