"""The ``landscape`` stage: loss-surface topology around two solutions of the same configuration.

For two runs that differ only in their seed (the study's ``stages.landscape.grid``), it computes:
linear interpolation from initialization to each solution and between the two solutions (with the
barrier height), filter-normalized 1-D and 2-D loss surfaces (Li et al. 2018), a trained quadratic
Bezier curve between the solutions (mode connectivity, Garipov et al. 2018), and the Hessian
spectral density of the first solution (stochastic Lanczos quadrature from its ``measures.json``).

Everything is evaluated on the same fixed training subset the measures use, in eval mode, on
private copies of the models. Writes numbers only, ``landscape/landscape.json`` (the curves and
surfaces included): the mode-connectivity verdict is decided in ``flatness.analysis`` and the five
topology figures are drawn by the figures stage, both from that file.

By hand: ``python -m flatness.stages.landscape results/<study> <run_id_a> <run_id_b>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flatness import landscape as ls
from flatness.io import atomic_write_json, read_json
from flatness.measures import select_subset
from flatness.stages.common import load_run, set_threads


def landscape(
    results: Path, run_a: str, run_b: str, settings: dict, extra_pairs: tuple = ()
) -> dict:
    """Everything for the first pair; for each of ``extra_pairs`` (disjoint seed pairs) only the
    straight-line and Bezier barriers, so mode connectivity gets an interval over pairs."""
    a, b = (load_run(run_dir=results / "runs" / rid) for rid in (run_a, run_b))
    size = int(a.cfg.measures.subset_size)
    data = select_subset(a.splits.x_train, a.splits.y_train, size, int(a.cfg.data.subset_seed))
    x, y = data.x, data.y
    seed = int(a.cfg.seed)
    paths = {
        "init A -> A": ls.linear_interpolation(a.init_model, a.model, x, y),
        "init B -> B": ls.linear_interpolation(b.init_model, b.model, x, y),
        "A -> B": ls.linear_interpolation(a.model, b.model, x, y, t_range=(-0.25, 1.25)),
    }
    span = float(settings.get("span", 1.0))
    surfaces = {
        "A": ls.loss_surface_1d(a.model, x, y, span=span, seed=seed),
        "B": ls.loss_surface_1d(b.model, x, y, span=span, seed=seed),
    }
    surface2d = ls.loss_surface_2d(a.model, x, y, span=span, n_points=int(settings.get("n_2d", 15)),
                                   seed=seed)  # fmt: skip
    bezier = ls.bezier_curve(a.model, b.model, x, y, steps=int(settings.get("bezier_steps", 300)),
                             seed=seed)  # fmt: skip
    out = {
        "run_a": run_a,
        "run_b": run_b,
        "subset_size": len(data),
        "paths": {k: p.to_dict() for k, p in paths.items()},
        "surfaces_1d": {k: s.to_dict() for k, s in surfaces.items()},
        "surface_2d": surface2d.to_dict(),
        "bezier": bezier.to_dict(),
        "spectral_density": _spectral_density(a.run_dir),
        "mode_pairs": [_pair_barriers(run_a, run_b, paths["A -> B"], bezier)]
        + [_pair_barriers(pa, pb, *_connect(results, pa, pb, settings)) for pa, pb in extra_pairs],
    }
    atomic_write_json(results / "landscape" / "landscape.json", out)
    return out


def _connect(results: Path, run_a: str, run_b: str, settings: dict):
    """The straight line and the trained Bezier curve between two solutions (A's subset)."""
    a, b = (load_run(run_dir=results / "runs" / rid) for rid in (run_a, run_b))
    size = int(a.cfg.measures.subset_size)
    data = select_subset(a.splits.x_train, a.splits.y_train, size, int(a.cfg.data.subset_seed))
    line = ls.linear_interpolation(a.model, b.model, data.x, data.y)
    bezier = ls.bezier_curve(a.model, b.model, data.x, data.y,
                             steps=int(settings.get("bezier_steps", 300)), seed=int(a.cfg.seed))  # fmt: skip
    return line, bezier


def _pair_barriers(run_a: str, run_b: str, line, bezier) -> dict:
    """The numbers the mode-connectivity verdict (flatness.analysis) decides on."""
    return {"run_a": run_a, "run_b": run_b, "linear_barrier": line.barrier,
            "curve_barrier": bezier.curve.barrier}  # fmt: skip


def _spectral_density(run_dir: Path) -> dict | None:
    """Run A's stochastic Lanczos quadrature (nodes and weights from its ``measures.json``), or
    None when the spectral density measure is not enabled."""
    measures = read_json(run_dir / "measures.json").get("measures", {})
    if "slq_trace" not in measures:
        return None
    return {"run_id": run_dir.name, "details": measures["slq_trace"]["details"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--span", type=float, default=1.0, help="surface half-width")
    parser.add_argument("--bezier-steps", type=int, default=300)
    parser.add_argument("--extra-pairs", nargs="*", default=[], metavar="RUN_A,RUN_B",
                        help="more seed pairs whose Bezier barrier mode connectivity averages")  # fmt: skip
    args = parser.parse_args(argv)
    set_threads()
    extra = tuple(tuple(p.split(",")) for p in args.extra_pairs)
    if any(len(p) != 2 for p in extra):
        parser.error(f"--extra-pairs {args.extra_pairs!r}: each must be RUN_A,RUN_B")
    out = landscape(args.results_dir, args.run_a, args.run_b,
                    {"span": args.span, "bezier_steps": args.bezier_steps}, extra)  # fmt: skip
    barrier = out["paths"]["A -> B"]["barrier"]
    print(f"A={args.run_a} B={args.run_b}: linear barrier {barrier:.4g}, "
          f"Bezier barrier {out['bezier']['curve']['barrier']:.4g}")  # fmt: skip


if __name__ == "__main__":
    main()
