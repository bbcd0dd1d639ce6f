"""The ``measure_group`` stage: the measure suite on every run of a group, in one process.

Same command line as ``flatness.stages.train_group`` (one ``--run`` with each run's overrides, or
``--run-dir``)::

    python -m flatness.stages.measure_group --run seed=0 out_dir=... --run seed=1 out_dir=...

Runs with the same measure settings, subset size, device and parameter shapes are measured
together by ``flatness.measures.run_group_suite``: the Hessian measures (Lanczos,
Hutchinson, SLQ) run stacked over the runs, one batched Hessian-vector product for all of them,
each run stopping on its own residuals, and so do local entropy and rho-sharpness (one batched
loss and gradient per step); the other measures run one run at a time (that module says which and
why). Each run gets the numbers ``flatness.stages.measure`` gives it up to rounding, into
its own ``measures.json`` of the same format; diverged runs get status ``skipped``. ``seconds`` per
run is its even share of its batch's time. The configs are composed and the W&B sidecar
(``flatness.tracking``) started before torch and the measures are imported.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from flatness import tracking
from flatness.stages.train_group import compose_group, parse_group, write_marker

if TYPE_CHECKING:
    from flatness.stages.measure import MeasureJob


def measure_jobs(jobs: list[MeasureJob]) -> list[dict]:
    """Measure the jobs, those that share settings, subset size, device and parameter shapes
    together (a group's runs normally do; a mixed list just makes more batches)."""
    from flatness.measures import run_group_suite

    outs: dict[int, dict] = {}
    batches: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        if not job.ok:
            outs[i] = job.write({}, None)
            continue
        shapes = [(n, list(p.shape)) for n, p in job.run.model.named_parameters()]
        key = json.dumps([job.settings, len(job.data), job.context.device, shapes], sort_keys=True)
        batches.setdefault(key, []).append(i)
    for members in batches.values():
        batch = [jobs[i] for i in members]
        started = time.perf_counter()
        results = run_group_suite(
            [j.run.model for j in batch],
            [j.data for j in batch],
            batch[0].settings,
            [int(j.run.cfg.seed) for j in batch],
            batch[0].context,
            init_models=[j.run.init_model for j in batch],
        )
        share = (time.perf_counter() - started) / len(batch)
        for i, job, res in zip(members, batch, results, strict=True):
            outs[i] = job.write(res, share)
    return [outs[i] for i in range(len(jobs))]


def main(argv: list[str] | None = None) -> None:
    args = parse_group(argv, __doc__.splitlines()[0])
    cfgs = compose_group(args.run, args.run_dir)
    tracking.start(cfg.tracking for cfg in cfgs)
    # torch and the measures: imported after the sidecar's start, so both start up side by side
    from flatness.stages.common import load_trained, set_threads
    from flatness.stages.measure import MeasureJob

    set_threads()
    runs = [load_trained(cfg, Path(cfg.out_dir)) for cfg in cfgs]
    outs = measure_jobs([MeasureJob(run) for run in runs])
    for out in outs:
        print(f"{out['run_id']}: {out['status']} in {out.get('seconds') or 0:.1f} s")
    write_marker(
        args.marker, [{k: o.get(k) for k in ("run_id", "status", "seconds")} for o in outs]
    )


if __name__ == "__main__":
    main()
