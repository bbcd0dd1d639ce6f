"""W&B mirroring: offline by default, never blocking and never the source of truth.

The pipeline's own files (metrics.json, history.csv, measures.json, table.csv) are what figures and
tests read; W&B gets the same numbers, grouped by study and config hash (seed removed) with
``job_type`` naming the stage. A W&B failure (missing package, no network in online mode, a full
disk) is reported as a warning and the run goes on untracked.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from typing import Any


class _NullRun:
    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    summary: dict = {}  # noqa: RUF012 - a throwaway sink, never read


@contextmanager
def tracked(tracking_cfg, *, job_type: str, name: str, group: str, config: dict, run_dir):
    """Yield an object with ``log(dict)`` and ``summary``; a no-op when tracking is disabled."""
    mode = tracking_cfg.mode
    if mode == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
        yield _NullRun()
        return
    try:
        import wandb

        run = wandb.init(
            project=tracking_cfg.project,
            entity=tracking_cfg.entity,
            mode=os.environ.get("WANDB_MODE", mode),
            group=f"{tracking_cfg.study}-{group}",
            job_type=job_type,
            name=f"{name}-{job_type}",
            config=config,
            dir=str(run_dir),
            reinit="create_new",
            settings=wandb.Settings(silent=True, init_timeout=30, console="off"),
        )
    except Exception as err:  # W&B must never stop a run: fall back to no tracking
        warnings.warn(
            f"W&B tracking is off for this run ({type(err).__name__}: {err})", stacklevel=2
        )
        yield _NullRun()
        return
    try:
        yield run
    finally:
        try:
            run.finish()
        except Exception as err:  # a failed upload/flush is not a failed run
            warnings.warn(f"W&B finish failed ({type(err).__name__}: {err})", stacklevel=2)
