"""Sharpness by perturbation: Keskar's epsilon-sharpness and rho-sharpness (standard / adaptive).

The cores take a loss closure over a flat parameter vector, so they are tested on quadratics with
closed-form answers and run unchanged on networks (``Objective.loss_grad``).

**Keskar et al. (2017) epsilon-sharpness.** With a projection ``A`` (n x p; ``A = I`` is the full
space) and the box ``C = {|y_i| <= eps (|(A^+ x)_i| + 1)}``,

    phi = 100 * (max_{y in C} f(x + A y) - f(x)) / (1 + f(x)),

maximized approximately by L-BFGS-B under box bounds from ``y = 0`` (10 iterations in the
re-implementations). The "+1" makes the box only partly scale-aware. The random subspace uses a
Gaussian ``A`` with unit-norm columns (our choice: it keeps ``A y`` on the scale of ``y``).

**rho-sharpness (Kwon et al. 2021; Andriushchenko et al. 2023).** With a scale vector ``c``
(``c = 1`` standard, ``c = |w| + eta`` adaptive), in coordinates ``z = delta / c``:

- worst case ``max_{||z||_p <= rho} L(w + c z) - L(w)``, p in {2, inf}, by projected (normalized-
  or sign-) gradient ascent from a random start in the set, with the step halved whenever it fails
  to increase the loss (a simplified APGD: no momentum); the best point seen is kept;
- average case ``E_xi[L(w + rho c xi) - L(w)]`` with Gaussian or Uniform[-1, 1] ``xi``, by
  Monte-Carlo with its standard error.

Both rho-sharpness cores are written as steps (``ascent_steps``, ``average_steps``, see
``algorithms.steps``), driven on one closure here and in lockstep for a group of runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch

from ..core.blas import one_blas_thread
from ..core.objective import gaussian, uniform_pm1
from .steps import Steps, drive

LossGrad = Callable[[torch.Tensor], tuple[float, torch.Tensor]]
LossFn = Callable[[torch.Tensor], float]


@dataclass(frozen=True)
class KeskarResult:
    value: float  # percentage relative loss increase
    f0: float
    f_max: float
    n_eval: int
    n_iter: int
    converged: bool  # L-BFGS-B's own status says converged (not: iteration limit, abnormal stop)
    status: int = 0  # L-BFGS-B's status: 0 converged, 1 iteration or evaluation limit, 2 other
    message: str = ""


def keskar_sharpness(
    loss_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x: np.ndarray,
    *,
    eps: float,
    A: np.ndarray | None = None,
    maxiter: int = 10,
) -> KeskarResult:
    """Keskar's metric at ``x`` for a float64 numpy closure ``loss_grad(x) -> (f, grad)``."""
    if eps <= 0 or maxiter < 1:
        raise ValueError(f"need eps > 0 and maxiter >= 1, got {eps}, {maxiter}")
    x = np.asarray(x, dtype=np.float64)
    f0, _ = loss_grad(x)
    best = [f0]
    n_eval = [1]

    if A is None:
        radius = eps * (np.abs(x) + 1.0)

        def point(y):
            return x + y

        def pull(g):
            return g
    else:
        with one_blas_thread():
            coords = np.linalg.lstsq(A, x, rcond=None)[0]  # A^+ x
        radius = eps * (np.abs(coords) + 1.0)

        def point(y):
            return x + A @ y

        def pull(g):
            return A.T @ g

    def negative(y):
        f, g = loss_grad(point(y))
        n_eval[0] += 1
        best[0] = max(best[0], f)
        return -f, -pull(g)

    with one_blas_thread():
        res = scipy.optimize.minimize(
            negative,
            np.zeros_like(radius),
            jac=True,
            method="L-BFGS-B",
            bounds=scipy.optimize.Bounds(-radius, radius),
            options={"maxiter": maxiter, "maxfun": 20 * maxiter, "gtol": 1e-12, "ftol": 1e-15},
        )
    f_max = max(best[0], -float(res.fun))
    value = 100.0 * (f_max - f0) / (1.0 + f0)
    converged = res.status == 0 and bool(np.isfinite(value))
    return KeskarResult(value, f0, f_max, n_eval[0], int(res.nit), converged, int(res.status),
                        str(res.message))  # fmt: skip


def random_subspace(n: int, p: int, gen: torch.Generator) -> np.ndarray:
    """A Gaussian n x p projection with unit-norm columns."""
    a = torch.randn(n, p, generator=gen, dtype=torch.float64).numpy()
    return a / np.linalg.norm(a, axis=0, keepdims=True)


@dataclass(frozen=True)
class AscentResult:
    gain: float  # max loss found minus the unperturbed loss (>= 0: delta = 0 is feasible)
    f0: float
    delta: torch.Tensor  # the best perturbation found (parameter coordinates)
    n_grad: int


def _project(z: torch.Tensor, rho: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return z.clamp(-rho, rho)
    r = float(torch.linalg.vector_norm(z))
    return z if r <= rho else z * (rho / r)


def _ascent_direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return torch.sign(g)
    r = torch.linalg.vector_norm(g)
    return g / r if float(r) > 0 else g


def projected_ascent(loss_grad: LossGrad, theta: torch.Tensor, **ascent) -> AscentResult:
    """Maximize ``L(theta + scale * z)`` over ``||z||_norm <= rho`` (see the module docstring):
    ``ascent_steps(theta, **ascent)`` driven alone."""
    return drive(ascent_steps(theta, **ascent), loss_grad)


def ascent_steps(
    theta: torch.Tensor,
    *,
    rho: float,
    scale: torch.Tensor | float = 1.0,
    norm: str = "l2",
    n_steps: int = 10,
    n_restarts: int = 1,
    step_size: float | None = None,
    gen: torch.Generator,
) -> Steps[AscentResult]:
    """``projected_ascent`` as steps (``algorithms.steps``): yields points, is sent ``(f, grad)``;
    always ``1 + n_restarts * (n_steps + 1)`` of them."""
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    if rho <= 0 or n_steps < 1 or n_restarts < 1:
        raise ValueError(
            f"need rho > 0, n_steps >= 1, n_restarts >= 1; got {rho}, {n_steps}, {n_restarts}"
        )
    return _ascent(theta, rho, scale, norm, n_steps, n_restarts, step_size, gen)


def _ascent(theta, rho, scale, norm, n_steps, n_restarts, step_size, gen) -> Steps[AscentResult]:
    f0, _ = yield theta
    n_grad = 1
    best_f, best_delta = f0, torch.zeros_like(theta)
    for _ in range(n_restarts):
        if norm == "linf":
            z = rho * uniform_pm1(theta.numel(), gen, theta)
        else:
            z = gaussian(theta.numel(), gen, theta)
            z = rho * z / torch.linalg.vector_norm(z)
        f, g = yield theta + scale * z
        n_grad += 1
        alpha = 2.0 * rho if step_size is None else step_size
        for _ in range(n_steps):
            z_new = _project(z + alpha * _ascent_direction(scale * g, norm), rho, norm)
            f_new, g_new = yield theta + scale * z_new
            n_grad += 1
            if f_new > f:
                z, f, g = z_new, f_new, g_new
            else:
                alpha /= 2.0
        if f > best_f:
            best_f, best_delta = f, scale * z
    return AscentResult(best_f - f0, f0, best_delta, n_grad)


def average_sharpness(
    loss: LossFn, theta: torch.Tensor, **average
) -> tuple[float, float, tuple[float, ...]]:
    """``E[L(theta + rho * scale * xi)] - L(theta)``: mean, standard error and the samples
    (``average_steps(theta, **average)`` driven alone)."""
    return drive(average_steps(theta, **average), loss)


def average_steps(
    theta: torch.Tensor,
    *,
    rho: float,
    scale: torch.Tensor | float = 1.0,
    noise: str = "gaussian",
    n_samples: int = 20,
    gen: torch.Generator,
) -> Steps[tuple[float, float, tuple[float, ...]]]:
    """``average_sharpness`` as steps: yields ``1 + n_samples`` points, is sent their losses."""
    if noise not in ("gaussian", "uniform"):
        raise ValueError(f"noise must be 'gaussian' or 'uniform', got {noise!r}")
    if rho <= 0 or n_samples < 1:
        raise ValueError(f"need rho > 0 and n_samples >= 1, got {rho}, {n_samples}")
    return _average(theta, rho, scale, gaussian if noise == "gaussian" else uniform_pm1,
                    n_samples, gen)  # fmt: skip


def _average(theta, rho, scale, draw, n_samples, gen) -> Steps[tuple]:
    f0 = yield theta
    samples = []
    for _ in range(n_samples):
        samples.append((yield theta + rho * scale * draw(theta.numel(), gen, theta)) - f0)
    samples = tuple(samples)
    mean = float(np.mean(samples))
    se = float(np.std(samples, ddof=1) / math.sqrt(n_samples)) if n_samples > 1 else math.inf
    return mean, se, samples
