"""The ``measure_group`` stage: the measure suite on every run of a group, in one process.

Same command line as ``flatness.stages.train_group`` (one ``--run`` with each run's overrides, or
``--run-dir``)::

    python -m flatness.stages.measure_group --run seed=0 out_dir=... --run seed=1 out_dir=...

Each run is measured by ``flatness.stages.measure.measure_run``, exactly as the per-run stage does,
into its own ``measures.json``; what a group saves is the start-up (importing torch, wandb and the
measures, generating the data set), paid once instead of once per run. The measures themselves are
not vectorized across runs: they are sequential algorithms (Lanczos, L-BFGS-B, bisections) whose
iteration counts differ per model.
"""

from __future__ import annotations

from flatness.stages.common import set_threads
from flatness.stages.measure import measure_run
from flatness.stages.train_group import parse_group


def main(argv: list[str] | None = None) -> None:
    overrides, run_dirs = parse_group(argv, __doc__.splitlines()[0])
    set_threads()
    for args in [(o, None) for o in overrides] + [((), d) for d in run_dirs]:
        out = measure_run(*args)
        print(f"{out['run_id']}: {out['status']} in {out.get('seconds', 0):.1f} s")


if __name__ == "__main__":
    main()
