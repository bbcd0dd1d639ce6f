"""Perturbation measures: Keskar, rho-sharpness, Jiang's sigma'/alpha' searches, local entropy.

Rho-sharpness and local entropy are written as steps (``algorithms.steps``) with their cases and
results factored out (``rho_cases``, ``entropy_steps``, ``entropy_results``), so a group's
stacked pass (``suite.group_perturbation``) runs exactly these definitions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..algorithms.entropy import EntropyResult, sgld_steps
from ..algorithms.pacbayes import (
    SearchResult,
    alpha_search,
    pacbayes_bounds,
    pacbayes_mag_bounds,
    sigma_search,
)
from ..algorithms.sharpness import (
    ascent_steps,
    average_steps,
    keskar_sharpness,
    random_subspace,
)
from ..algorithms.steps import Steps, drive
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


@dataclass(frozen=True)
class RhoCase:
    """One of rho-sharpness's four results: the steps it runs on each batch and how their
    outcomes make the result (one definition for a run alone and for a stacked group)."""

    name: str
    rho: float
    scale: torch.Tensor | float
    s: dict

    @property
    def worst(self) -> bool:
        """Worst case (steps are sent losses and gradients) or average (losses only)."""
        return self.name.startswith("sharpness_worst")

    def steps(self, theta: torch.Tensor, gen: torch.Generator) -> Steps:
        s = self.s
        if self.worst:
            return ascent_steps(theta, rho=self.rho, scale=self.scale, norm=s["norm"],
                                n_steps=s["n_steps"], n_restarts=s["n_restarts"], gen=gen)  # fmt: skip
        return average_steps(theta, rho=self.rho, scale=self.scale, noise=s["avg_noise"],
                             n_samples=s["n_samples"], gen=gen)  # fmt: skip

    def summary(self, outcomes: list) -> tuple[float, float | None, dict]:
        """Value, stderr and details from the batches' outcomes (ascents or averages)."""
        n = len(outcomes)
        if self.worst:
            gains = [o.gain for o in outcomes]
            se = float(torch.tensor(gains).std() / math.sqrt(n)) if n > 1 else None
            return sum(gains) / n, se, dict(rho=self.rho, norm=self.s["norm"], n_batches=n)
        t = torch.tensor([x for o in outcomes for x in o[2]], dtype=torch.float64)
        se = float(t.std() / math.sqrt(len(t)))
        return float(t.mean()), se, dict(rho=self.rho, noise=self.s["avg_noise"], n_batches=n)


def rho_cases(s: dict, theta: torch.Tensor) -> tuple[RhoCase, ...]:
    """The four results in order, for the run at ``theta`` (the adaptive scale is per run)."""
    adaptive = theta.abs() + s["eta"]
    return (RhoCase("sharpness_worst", s["rho"], 1.0, s),
            RhoCase("sharpness_worst_adaptive", s["rho_adaptive"], adaptive, s),
            RhoCase("sharpness_avg", s["avg_rho"], 1.0, s),
            RhoCase("sharpness_avg_adaptive", s["avg_rho_adaptive"], adaptive, s))  # fmt: skip


def rho_batches(s: dict, n: int) -> list[slice]:
    """The subset's rows in batches of ``batch_size`` (``None``: one batch)."""
    size = s["batch_size"] or n
    return [slice(i, i + size) for i in range(0, n, size)]


def rho_sharpness(model, data, settings, seed, context) -> Results:
    r = MeasureRun("rho_sharpness", model, data, settings, context)
    batches = [r.obj.rows(b) for b in rho_batches(r.s, r.obj.n)]
    gen = generator(seed)  # one generator through the four cases and their batches, in order
    out = []
    for case in rho_cases(r.s, r.obj.theta0):
        r.mark()
        outcomes = [drive(case.steps(r.obj.theta0, gen), b.loss_grad if case.worst else b.loss)
                    for b in batches]  # fmt: skip
        value, stderr, details = case.summary(outcomes)
        out.append(r.result(case.name, value, stderr=stderr, **details))
    r.obj.restore()
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
    res = drive(entropy_steps(r.s, r.obj.theta0, seed), r.obj.loss_grad)
    r.obj.restore()
    return entropy_results(r, res)


def entropy_steps(s: dict, theta: torch.Tensor, seed: int) -> Steps[EntropyResult]:
    """The run's SGLD chain at ``theta`` with its own generator (alone or in a stacked group)."""
    return sgld_steps(theta, gamma=s["gamma"], temperature=s["temperature"], lr=s["lr"],
                      burn_in=s["burn_in"], n_samples=s["n_samples"], n_batches=s["n_batches"],
                      gen=generator(seed))  # fmt: skip


def entropy_results(r, res: EntropyResult) -> Results:
    """The energy gap and displacement (``r``: a ``MeasureRun`` or a group's ``GroupShare``)."""
    s = r.s
    kw = dict(converged=res.finite, gamma=s["gamma"], temperature=s["temperature"], f0=res.f0)
    return (
        r.result("local_energy_gap", res.energy_gap, stderr=res.energy_gap_stderr, **kw),
        r.result("local_displacement", res.displacement, stderr=res.displacement_stderr, **kw),
    )
