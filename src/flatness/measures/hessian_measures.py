"""Hessian-based measures: Lanczos extremes, power iteration, trace, spectral density."""

from __future__ import annotations

import math

from .density import slq
from .eigen import lanczos_eigen, power_iteration
from .objective import generator
from .operators import HessianOperator
from .runner import MeasureRun, Results
from .trace import hutchinson, hutchpp


def hessian_eigen(model, data, settings, seed, context) -> Results:
    r = MeasureRun("hessian_eigen", model, data, settings, context)
    op = HessianOperator(r.obj, reuse_graph=r.s["reuse_graph"])
    res = lanczos_eigen(
        op, top_k=r.s["top_k"], max_steps=r.s["max_steps"], tol=r.s["tol"], gen=generator(seed)
    )
    # each value is converged when its own residual bound is small (or the space was exhausted)
    scale = max(abs(res.eigenvalues[0]), abs(res.lambda_min), 1e-300)
    ok_max = res.converged or res.residuals[0] <= r.s["tol"] * scale
    ok_min = res.converged or res.residual_min <= r.s["tol"] * scale
    common = dict(n_steps=res.n_matvec, all_converged=res.converged, top_k=list(res.eigenvalues))
    return (
        r.result(
            "lambda_max", res.eigenvalues[0], converged=ok_max, residual=res.residuals[0], **common
        ),
        r.result(
            "lambda_min", res.lambda_min, converged=ok_min, residual=res.residual_min, **common
        ),
    )


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
    return (r.result("hessian_trace", res.estimate, stderr=res.stderr, method=r.s["method"]),)


def spectral_density(model, data, settings, seed, context) -> Results:
    r = MeasureRun("spectral_density", model, data, settings, context)
    res = slq(
        HessianOperator(r.obj),
        n_probes=r.s["n_probes"],
        n_steps=r.s["n_steps"],
        gen=generator(seed),
    )
    trace, se = res.trace()
    return (
        r.result(
            "slq_trace",
            trace,
            stderr=se if math.isfinite(se) else None,
            nodes=[list(t) for t in res.nodes],
            weights=[list(w) for w in res.weights],
            size=res.size,
        ),
    )
