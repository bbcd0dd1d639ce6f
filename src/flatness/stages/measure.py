"""The ``measure`` stage: the flatness-measure suite on one trained run, into ``measures.json``.

By hand, with the run's overrides (the Snakefile passes the same ones the train stage got)::

    python -m flatness.stages.measure model.width=64 out_dir=results/manual/run
    python -m flatness.stages.measure --run-dir results/default/runs/<run_id>

The measures see a fixed subset of the training data exactly as the model was trained on it
(corrupted labels included), chosen by ``data.subset_seed`` so every run of a study is measured on
the same rows; the subset's indices are logged in ``measures.json``. A diverged run gets a
``measures.json`` with status ``skipped`` and no values.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from omegaconf import OmegaConf

from flatness.io import atomic_write_json
from flatness.measures import make_context, results_to_json, run_suite, select_subset
from flatness.stages.common import TrainedRun, device_of, load_run, set_threads
from flatness.tracking import tracked


def measure_run(overrides=(), run_dir: Path | None = None) -> dict:
    run = load_run(overrides, run_dir)
    job = MeasureJob(run)
    if job.ok:
        started = time.perf_counter()
        results = run_suite(run.model, job.data, job.settings, int(run.cfg.seed), job.context)
        return job.write(results, time.perf_counter() - started)
    return job.write({}, None)


class MeasureJob:
    """One run's measure job: its settings, subset and context, and writing ``measures.json``.

    Shared by this stage and ``measure_group`` (which computes the results of many jobs at once),
    so a run's ``measures.json`` has one format whichever stage wrote it.
    """

    def __init__(self, run: TrainedRun):
        self.run = run
        self.settings = OmegaConf.to_container(run.cfg.measures, resolve=True)
        self.ok = run.metrics["status"] == "ok"
        if self.ok:
            x, y = run.splits.x_train, run.splits.y_train
            seed = int(run.cfg.data.subset_seed)
            self.data = select_subset(x, y, int(self.settings["subset_size"]), seed)
            self.context = make_context(
                self.settings, init_model=run.init_model, device=device_of(run.cfg)
            )

    def write(self, results: dict, seconds: float | None) -> dict:
        run = self.run
        out = {
            "run_id": run.metrics["run_id"],
            "status": "ok" if self.ok else "skipped",
            "settings": self.settings,
            "measures": {},
        }
        if self.ok:
            out["seconds"] = seconds
            out["subset"] = {"size": len(self.data), "indices": self.data.indices.tolist()}
            out["measures"] = results_to_json(results)
        with tracked(run.cfg.tracking, job_type="measure", name=out["run_id"],
                     group=run.metrics["group_id"], config={}, run_dir=run.run_dir) as wb:  # fmt: skip
            wb.summary.update({k: v["value"] for k, v in out["measures"].items()})
        atomic_write_json(run.run_dir / "measures.json", out)
        return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="measure this run folder as it was trained")
    parser.add_argument("overrides", nargs="*", help="the run's Hydra overrides")
    args = parser.parse_args(argv)
    if not args.overrides and args.run_dir is None:
        parser.error("give the run's overrides or --run-dir")
    set_threads()
    out = measure_run(args.overrides, args.run_dir)
    values = ", ".join(f"{k}={v['value']:.4g}" for k, v in out["measures"].items() if v["value"])
    print(f"{out['run_id']}: {out['status']} in {out.get('seconds', 0):.1f} s; {values}")


if __name__ == "__main__":
    main()
