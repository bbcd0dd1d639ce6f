"""Perturbation measures: Keskar, rho-sharpness, Jiang's sigma'/alpha' searches, local entropy."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..algorithms.entropy import local_entropy_chain
from ..algorithms.pacbayes import (
    SearchResult,
    alpha_search,
    pacbayes_bounds,
    pacbayes_mag_bounds,
    sigma_search,
)
from ..algorithms.sharpness import (
    average_sharpness,
    keskar_sharpness,
    projected_ascent,
    random_subspace,
)
from ..core.objective import generator
from .bookkeeping import MeasureRun, Results, init_vector


def keskar(model, data, settings, seed, context) -> Results:
    r = MeasureRun("keskar", model, data, settings, context)
    x = r.obj.theta0.detach().cpu().double().numpy()
    p = min(r.s["subspace_dim"], x.size)
    spaces = [  # (result name, skipped because, random subspace dimension or None for full)
        ("keskar_full", None if r.s["full_space"] else "full_space=false", None),
        ("keskar_subspace", None if p > 0 else "subspace_dim=0", p),
    ]
    out = []
    for name, skipped, dim in spaces:
        r.mark()
        if skipped:
            out.append(r.result(name, math.nan, converged=False, skipped=skipped))
            continue
        A = None if dim is None else random_subspace(x.size, dim, generator(seed))
        res = keskar_sharpness(
            r.obj.numpy_loss_grad, x, eps=r.s["eps"], A=A, maxiter=r.s["maxiter"]
        )
        extra = {} if dim is None else {"dim": dim}
        out.append(r.result(name, res.value, converged=res.converged, f0=res.f0, f_max=res.f_max,
                            n_iter=res.n_iter, eps=r.s["eps"], status=res.status,
                            message=res.message, **extra))  # fmt: skip
    return tuple(out)


def rho_sharpness(model, data, settings, seed, context) -> Results:
    r = MeasureRun("rho_sharpness", model, data, settings, context)
    s, obj, theta = r.s, r.obj, r.obj.theta0
    bs = s["batch_size"] or obj.n
    batches = [obj.rows(slice(i, i + bs)) for i in range(0, obj.n, bs)]
    adaptive_scale = theta.abs() + s["eta"]
    gen = generator(seed)
    out = []
    for suffix, rho, scale in (
        ("", s["rho"], 1.0),
        ("_adaptive", s["rho_adaptive"], adaptive_scale),
    ):
        r.mark()
        gains = [
            projected_ascent(
                b.loss_grad,
                theta,
                rho=rho,
                scale=scale,
                norm=s["norm"],
                n_steps=s["n_steps"],
                n_restarts=s["n_restarts"],
                gen=gen,
            ).gain
            for b in batches
        ]
        se = float(torch.tensor(gains).std() / math.sqrt(len(gains))) if len(gains) > 1 else None
        out.append(
            r.result(
                f"sharpness_worst{suffix}",
                sum(gains) / len(gains),
                stderr=se,
                rho=rho,
                norm=s["norm"],
                n_batches=len(batches),
            )
        )
    for suffix, rho, scale in (
        ("", s["avg_rho"], 1.0),
        ("_adaptive", s["avg_rho_adaptive"], adaptive_scale),
    ):
        r.mark()
        samples: list[float] = []
        for b in batches:
            samples += average_sharpness(
                b.loss,
                theta,
                rho=rho,
                scale=scale,
                noise=s["avg_noise"],
                n_samples=s["n_samples"],
                gen=gen,
            )[2]
        t = torch.tensor(samples, dtype=torch.float64)
        out.append(
            r.result(
                f"sharpness_avg{suffix}",
                float(t.mean()),
                stderr=float(t.std() / math.sqrt(len(samples))),
                rho=rho,
                noise=s["avg_noise"],
                n_batches=len(batches),
            )
        )
    obj.restore()
    return tuple(out)


def pacbayes(model, data, settings, seed, context) -> Results:
    r = MeasureRun("pacbayes", model, data, settings, context)
    s, obj, theta = r.s, r.obj, r.obj.theta0
    metric = obj.error if s["metric"] == "error" else obj.loss
    m = s["n_train"] or obj.n
    theta_init = init_vector(obj, context)
    kw = dict(target=s["target"], tol=s["tol"], hi=s["sigma_max"], depth=s["depth"],
              n_draws=s["n_draws"], seed=seed)  # fmt: skip

    def search(magnitude: bool) -> tuple[SearchResult, dict]:
        res = sigma_search(metric, theta, magnitude=magnitude, eps=s["eps"], **kw)
        if magnitude:
            return res, pacbayes_mag_bounds(res.scale, theta, theta_init, m, s["eps"])
        return res, pacbayes_bounds(res.scale, theta, theta_init, m)

    return _jiang_flatness(r, ("pacbayes_flatness", "pacbayes_mag_flatness"), "sigma", search)


def sharpness_alpha(model, data, settings, seed, context) -> Results:
    r = MeasureRun("sharpness_alpha", model, data, settings, context)
    s, obj, theta = r.s, r.obj, r.obj.theta0
    metric = obj.error if s["metric"] == "error" else obj.loss
    kw = dict(target=s["target"], tol=s["tol"], lo=s["alpha_min"], hi=s["alpha_max"],
              depth=s["depth"], n_restarts=s["n_restarts"], n_steps=s["n_steps"],
              seed=seed)  # fmt: skip

    def search(magnitude: bool) -> tuple[SearchResult, dict]:
        return alpha_search(
            metric, obj.loss_grad, theta, magnitude=magnitude, eps=s["eps"], **kw
        ), {}

    return _jiang_flatness(r, ("sharpness_flatness", "sharpness_mag_flatness"), "alpha", search)


def _jiang_flatness(
    r: MeasureRun,
    names: tuple[str, str],
    scale_name: str,
    search: Callable[[bool], tuple[SearchResult, dict]],
) -> Results:
    """Jiang's plain and magnitude-aware searches as ``1 / scale**2`` flatness results.

    ``search(magnitude)`` runs one bisection and returns it with extra details (the PAC-Bayes
    bounds); the magnitude-aware one is skipped when the settings say ``magnitude: false``.
    """
    out = []
    for name, magnitude in zip(names, (False, True), strict=True):
        r.mark()
        if magnitude and not r.s["magnitude"]:
            out.append(r.result(name, math.nan, converged=False, skipped="magnitude=false"))
            continue
        res, extra = search(magnitude)
        out.append(r.result(name, 1.0 / res.scale**2, converged=res.converged,
                            **{scale_name: res.scale}, deviation=res.deviation,
                            n_iter=res.n_iter, **extra))  # fmt: skip
    r.obj.restore()
    return tuple(out)


def local_entropy(model, data, settings, seed, context) -> Results:
    r = MeasureRun("local_entropy", model, data, settings, context)
    s = r.s
    res = local_entropy_chain(
        r.obj.loss_grad,
        r.obj.theta0,
        gamma=s["gamma"],
        temperature=s["temperature"],
        lr=s["lr"],
        burn_in=s["burn_in"],
        n_samples=s["n_samples"],
        n_batches=s["n_batches"],
        gen=generator(seed),
    )
    r.obj.restore()
    kw = dict(converged=res.finite, gamma=s["gamma"], temperature=s["temperature"], f0=res.f0)
    return (
        r.result("local_energy_gap", res.energy_gap, stderr=res.energy_gap_stderr, **kw),
        r.result("local_displacement", res.displacement, stderr=res.displacement_stderr, **kw),
    )
