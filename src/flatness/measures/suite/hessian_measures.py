"""Hessian-based measures: Lanczos extremes, power iteration, trace, spectral density."""

from __future__ import annotations

import math

from ..algorithms.density import SLQResult, slq
from ..algorithms.eigen import EigenResult, lanczos_eigen, power_iteration
from ..algorithms.trace import TraceEstimate, hutchinson, hutchpp
from ..core.objective import generator
from ..core.operators import HessianOperator
from .bookkeeping import MeasureRun, Results


def hessian_eigen(model, data, settings, seed, context) -> Results:
    r = MeasureRun("hessian_eigen", model, data, settings, context)
    op = HessianOperator(r.obj, reuse_graph=r.s["reuse_graph"])
    res = lanczos_eigen(
        op,
        top_k=r.s["top_k"],
        max_steps=r.s["max_steps"],
        tol=r.s["tol"],
        gen=generator(seed),
        min_budget=r.s["lambda_min_steps"],
    )
    return eigen_results(r, res)


def eigen_results(r: MeasureRun, res: EigenResult) -> Results:
    """lambda_max and lambda_min, each with its own flag and the products it needed.

    A quantity's ``n_hvp`` is the number of products after which its residual met the tolerance,
    which is what it costs when it is the only quantity asked for (same seed, same Krylov space);
    unconverged, it is its budget. ``n_steps`` in the details is what the shared run spent.
    """
    s = r.s
    common = dict(n_steps=res.n_matvec, top_k=list(res.eigenvalues),
                  top_k_converged=res.steps_top is not None, steps_top=res.steps_top)  # fmt: skip
    lam_max = r.result("lambda_max", res.eigenvalues[0], converged=res.steps_max is not None,
                       n_hvp=res.steps_max or min(res.n_matvec, s["max_steps"]),
                       residual=res.residuals[0], **common)  # fmt: skip
    if s["lambda_min_steps"] == 0:
        lam_min = r.result("lambda_min", math.nan, converged=False, n_hvp=0,
                           skipped="lambda_min_steps=0")  # fmt: skip
    else:
        lam_min = r.result("lambda_min", res.lambda_min, converged=res.steps_min is not None,
                           n_hvp=res.steps_min or res.n_matvec, residual=res.residual_min,
                           **common)  # fmt: skip
    return lam_max, lam_min


def power_iteration_measure(model, data, settings, seed, context) -> Results:
    r = MeasureRun("power_iteration", model, data, settings, context)
    op = HessianOperator(r.obj)
    res = power_iteration(
        op, top_k=r.s["top_k"], max_iter=r.s["max_iter"], tol=r.s["tol"], gen=generator(seed)
    )
    return (
        r.result(
            "lambda_max_power",
            res.eigenvalues[0],
            converged=res.converged,
            eigenvalues=list(res.eigenvalues),
            n_iter=res.n_matvec,
        ),
    )


def hessian_trace(model, data, settings, seed, context) -> Results:
    r = MeasureRun("hessian_trace", model, data, settings, context)
    op = HessianOperator(r.obj)
    gen = generator(seed)
    if r.s["method"] == "hutchpp":
        res = hutchpp(op, n_matvec=r.s["n_matvec"], gen=gen)
    else:
        res = hutchinson(op, n_probes=r.s["n_matvec"], gen=gen)
    return trace_results(r, res)


def trace_results(r: MeasureRun, res: TraceEstimate) -> Results:
    return (
        r.result("hessian_trace", res.estimate, stderr=_honest(res.stderr), n_hvp=res.n_matvec,
                 method=r.s["method"], n_probes=len(res.samples)),
    )  # fmt: skip


def spectral_density(model, data, settings, seed, context) -> Results:
    r = MeasureRun("spectral_density", model, data, settings, context)
    res = slq(
        HessianOperator(r.obj),
        n_probes=r.s["n_probes"],
        n_steps=r.s["n_steps"],
        gen=generator(seed),
    )
    return slq_results(r, res)


def slq_results(r: MeasureRun, res: SLQResult) -> Results:
    trace, se = res.trace()
    return (
        r.result(
            "slq_trace",
            trace,
            stderr=_honest(se),
            n_hvp=res.n_matvec,
            nodes=[list(t) for t in res.nodes],
            weights=[list(w) for w in res.weights],
            size=res.size,
            n_probes=len(res.nodes),
        ),
    )


def _honest(stderr: float) -> float | None:
    """A trace's standard error, or None where too few probes were drawn to estimate one."""
    return stderr if math.isfinite(stderr) else None
