"""Jiang et al. (2020) PAC-Bayes sigma search and worst-case sharpness alpha search.

Both find, by bisection, the largest perturbation scale whose effect on the training error stays
at a target deviation ``d`` (0.1), following the Dziugaite et al. re-implementation of Jiang's code:

- **sigma'**: ``|E_{u ~ N(0, s^2)}[err(w + u)] - err(w)| <= d`` with ``s = sigma`` (isotropic) or
  ``s_i^2 = sigma^2 w_i^2 + eps^2`` (magnitude-aware, eps = 1e-3). 15 halvings of [0, 2], 10 Monte-
  Carlo draws per sigma, early stop when ``|deviation - d| < tol`` (0.01). The draws reuse the
  same seed at every sigma (common random numbers), which makes the estimated deviation a smooth,
  nearly monotone function of sigma and the bisection well posed.
- **alpha'**: ``max_{|u_i| <= r_i} err(w + u) - err(w) <= d`` with ``r_i = alpha`` (isotropic) or
  ``r_i = alpha |w_i| + eps`` (magnitude-aware); the inner max is approximated by projected sign-
  gradient ascent on the loss from random starts in the box, and the error is read at the end.

The reported measures are Jiang's ``1/sigma'^2`` and ``1/alpha'^2`` (bigger = sharper); sigma' and
alpha' and the bound-style variants stay in the details. The searched metric is a closure, so
tests can search on a quadratic loss with a closed-form answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core.objective import gaussian, generator
from .sharpness import LossGrad, projected_ascent

Metric = Callable[[torch.Tensor], float]


@dataclass(frozen=True)
class SearchResult:
    scale: float  # sigma' or alpha'
    deviation: float  # the deviation measured at ``scale``
    n_iter: int
    converged: bool  # stopped by the tolerance rule (else: search depth exhausted)
    n_grad: int = 0


def bisect_largest(
    deviation: Callable[[float], float],
    *,
    target: float,
    tol: float,
    lo: float,
    hi: float,
    depth: int,
) -> SearchResult:
    """Largest scale with ``deviation(scale) <= target`` (Jiang's loop: returns the last midpoint)."""
    if not lo < hi or depth < 1 or target <= 0 or tol <= 0:
        raise ValueError(
            f"bad bisection settings: lo={lo}, hi={hi}, depth={depth}, target={target}, tol={tol}"
        )
    mid, dev = lo, 0.0
    for i in range(depth):
        mid = 0.5 * (lo + hi)
        dev = deviation(mid)
        if abs(dev - target) < tol:
            return SearchResult(mid, dev, i + 1, True)
        if dev > target:
            hi = mid
        else:
            lo = mid
    return SearchResult(mid, dev, depth, False)


def sigma_search(
    metric: Metric,
    theta: torch.Tensor,
    *,
    magnitude: bool = False,
    eps: float = 1e-3,
    target: float = 0.1,
    tol: float = 0.01,
    lo: float = 0.0,
    hi: float = 2.0,
    depth: int = 15,
    n_draws: int = 10,
    seed: int,
) -> SearchResult:
    """Jiang's PAC-Bayes sigma' for ``metric`` (training error, or any closure)."""
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    base = metric(theta)
    mag = theta.abs()

    def deviation(sigma: float) -> float:
        gen = generator(seed)  # common random numbers across sigma values
        std = torch.sqrt(sigma**2 * mag**2 + eps**2) if magnitude else sigma
        vals = [metric(theta + std * gaussian(theta.numel(), gen, theta)) for _ in range(n_draws)]
        return abs(sum(vals) / n_draws - base)

    return bisect_largest(deviation, target=target, tol=tol, lo=lo, hi=hi, depth=depth)


def alpha_search(
    metric: Metric,
    loss_grad: LossGrad,
    theta: torch.Tensor,
    *,
    magnitude: bool = False,
    eps: float = 1e-3,
    target: float = 0.1,
    tol: float = 0.01,
    lo: float = 1e-5,
    hi: float = 2.0,
    depth: int = 20,
    n_restarts: int = 15,
    n_steps: int = 20,
    seed: int,
) -> SearchResult:
    """Jiang's worst-case sharpness alpha' (box ascent inside a bisection)."""
    base = metric(theta)
    mag = theta.abs()
    n_grad = [0]

    def deviation(alpha: float) -> float:
        gen = generator(seed)
        if magnitude:  # box |u_i| <= alpha |w_i| + eps, as z in [-1, 1] scaled per coordinate
            rho, scale = 1.0, alpha * mag + eps
        else:
            rho, scale = alpha, 1.0
        worst = 0.0
        for _ in range(n_restarts):
            res = projected_ascent(
                loss_grad, theta, rho=rho, scale=scale, norm="linf", n_steps=n_steps, gen=gen
            )
            n_grad[0] += res.n_grad
            worst = max(worst, metric(theta + res.delta) - base)
        return worst

    res = bisect_largest(deviation, target=target, tol=tol, lo=lo, hi=hi, depth=depth)
    return SearchResult(res.scale, res.deviation, res.n_iter, res.converged, n_grad[0])


def pacbayes_bounds(
    sigma: float, theta: torch.Tensor, theta_init: torch.Tensor | None, m: int
) -> dict[str, float]:
    """Jiang's bound-style variants (eqs. 49/48): ``||w||^2 / (4 s^2) + log(m / s) + 10``."""
    if sigma <= 0:
        return {}
    out = {"pacbayes_orig": float(theta.pow(2).sum()) / (4 * sigma**2) + math.log(m / sigma) + 10}
    if theta_init is not None:
        dist = float((theta - theta_init).pow(2).sum())
        out["pacbayes_init"] = dist / (4 * sigma**2) + math.log(m / sigma) + 10
    return out


def pacbayes_mag_bounds(
    sigma: float, theta: torch.Tensor, theta_init: torch.Tensor | None, m: int, eps: float
) -> dict[str, float]:
    """Magnitude-aware variants (eqs. 57/56), as in the re-implementation's code."""
    if sigma <= 0 or theta_init is None:
        return {}
    omega = theta.numel()
    diff2 = (theta - theta_init).pow(2)
    denominator = eps**2 + sigma**2 * diff2
    out = {}
    for name, sq in (("pacbayes_mag_orig", theta.pow(2).sum()), ("pacbayes_mag_init", diff2.sum())):
        numerator = eps**2 + (sigma**2 + 1) * float(sq) / omega
        out[name] = (
            0.25 * float(torch.log(numerator / denominator).sum()) + math.log(m / sigma) + 10
        )
    return out
