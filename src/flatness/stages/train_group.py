"""The ``train_group`` stage: the runs of one group trained in one process (a lone run: a group of one).

By hand, one ``--run`` per run with that run's Hydra overrides (the Snakefile passes the overrides
of each run of a group, see ``workflow/rules/train.smk``), or ``--run-dir`` with run folders
that hold a ``config.yaml``; ``--marker`` names the JSON summary written last)::

    python -m flatness.stages.train_group --run seed=0 optim.lr=0.01 --run seed=1 optim.lr=0.05
    python -m flatness.stages.train_group --run-dir results/default/runs/<id> --run-dir ...

Every run gets its own folder with exactly the files ``python -m flatness.training`` writes: both
call ``flatness.training.driver.run_group``. ``--engine`` picks the step engine (default ``auto``:
the reference engine for one run, the stacked one for more). Killed and rerun with the same
arguments, the group resumes every run from its ``checkpoint.pt``. Start-up (imports, data
generation) is paid once per group, not per run, and the W&B sidecar (``flatness.tracking``)
is started before torch is imported, so both start up side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from flatness import tracking
from flatness.base import ENGINE_CHOICES
from flatness.config import compose_run
from flatness.io import atomic_write_json


def group_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of a group stage: each run's overrides (``--run ...``) or folder."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--run", nargs="+", action="append", default=[], metavar="OVERRIDE",
        help="one run's Hydra overrides (repeat --run for every run of the group)",
    )  # fmt: skip
    parser.add_argument(
        "--run-dir", action="append", type=Path, default=[],
        help="a run folder holding config.yaml (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--marker", type=Path,
        help="write the members' summaries here (JSON), last: the group's Snakemake output",
    )  # fmt: skip
    return parser


def parse_group(argv: list[str] | None, description: str) -> argparse.Namespace:
    """A group stage's arguments: each run's overrides (``--run ...``), run folders
    (``--run-dir``) and the ``--marker`` file."""
    return _parse(group_parser(description), argv)


def write_marker(path: Path | None, summaries: list[dict]) -> None:
    """The group's marker: run id -> that run's summary, written atomically once every member's
    files are in place, so its presence means the whole group is done."""
    if path is not None:
        atomic_write_json(path, {s["run_id"]: s for s in summaries})


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if not args.run and not args.run_dir:
        parser.error("give each run's overrides with --run, or its folder with --run-dir")
    return args


def compose_group(overrides: list[list[str]], run_dirs: list[Path]) -> list[DictConfig]:
    """The run configs: composed from overrides, or read from a run folder's ``config.yaml``."""
    cfgs = [compose_run(o) for o in overrides]
    for run_dir in run_dirs:
        cfg = OmegaConf.load(run_dir / "config.yaml")
        cfg.out_dir = str(run_dir)
        cfgs.append(cfg)
    return cfgs


def main(argv: list[str] | None = None) -> None:
    parser = group_parser(__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=ENGINE_CHOICES, default="auto",
                        help="the step engine (auto: reference for one run, stacked for more)")  # fmt: skip
    args = _parse(parser, argv)
    cfgs = compose_group(args.run, args.run_dir)
    tracking.start(cfg.tracking for cfg in cfgs)
    import torch  # after the sidecar's start, so that both start up side by side

    from flatness.stages.common import set_threads
    from flatness.training.driver import run_group

    set_threads()
    with torch.random.fork_rng(devices=[]):
        metrics = run_group(cfgs, args.engine)
    for cfg, m in zip(cfgs, metrics, strict=True):
        print(
            f"{m['run_id']}: {m['status']}, train acc {m['train_acc']:.4f}, test acc "
            f"{m['test_acc']:.4f} after {m['epochs']} epochs -> {cfg.out_dir}"
        )
    write_marker(args.marker, metrics)


if __name__ == "__main__":
    main()
