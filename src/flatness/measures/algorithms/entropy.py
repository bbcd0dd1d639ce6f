"""Local entropy around a minimum, measured with an SGLD chain (Chaudhari et al., Entropy-SGD).

The local Gibbs measure at the anchor ``x`` (the trained weights, held fixed) is

    P(x') ~ exp(-(f(x') + gamma/2 ||x - x'||^2) / T),

and Entropy-SGD's inner loop samples it by Langevin dynamics,

    x' <- x' - lr (grad f(x') + gamma (x' - x)) + sqrt(2 lr T) xi,   xi ~ N(0, I),

starting at ``x' = x``. After a burn-in the chain's samples give (a design choice of this project,
see claims-and-measures.md 2.7):

- the **local energy gap** ``E_P[f(x')] - f(x)``: small in wide, flat valleys;
- the **mean displacement** ``||x - <x'>||`` (= ``||grad F|| / gamma``, the Entropy-SGD step).

Uncertainties come from batch means (the chain is autocorrelated, so the naive sample standard
error would be too small): the samples are cut into ``n_batches`` consecutive blocks and the spread
of the block means gives the standard error. For the displacement it is the standard error of the
mean vector in norm, ``sqrt(sum_b ||m_b - m||^2 / (B (B - 1)))``.

The gradient is the full-subset gradient (no minibatch noise), so the temperature alone sets the
noise. For a quadratic ``f`` the discrete chain's stationary law is Gaussian with per-eigendirection
variance ``T / (k (1 - lr k / 2))``, ``k = lambda + gamma``, which the tests check.

The chain is written as steps (``sgld_steps``, see ``algorithms.steps``): ``local_entropy_chain``
drives it on one run's closure; a group drives its R chains in lockstep on one stacked objective.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.objective import gaussian
from .sharpness import LossGrad
from .steps import Steps, drive


@dataclass(frozen=True)
class EntropyResult:
    energy_gap: float
    energy_gap_stderr: float
    displacement: float
    displacement_stderr: float
    f0: float
    n_grad: int
    finite: bool  # False if the chain diverged (lr too large for the curvature)


def local_entropy_chain(loss_grad: LossGrad, theta: torch.Tensor, **chain) -> EntropyResult:
    """The chain at ``theta`` on one run's ``loss_grad``: ``sgld_steps(theta, **chain)`` driven
    alone (the group path drives the same steps in lockstep)."""
    return drive(sgld_steps(theta, **chain), loss_grad)


def sgld_steps(
    theta: torch.Tensor,
    *,
    gamma: float,
    temperature: float,
    lr: float,
    burn_in: int,
    n_samples: int,
    n_batches: int = 10,
    gen: torch.Generator,
) -> Steps[EntropyResult]:
    """The chain as steps (``algorithms.steps``): yields points, is sent ``(f, grad)``.

    The first point is ``theta`` itself (``f0``); a non-finite loss ends the chain there, with NaN
    values, ``finite=False`` and the gradients spent so far.
    """
    if gamma < 0 or temperature <= 0 or lr <= 0 or burn_in < 0:
        raise ValueError(
            f"need gamma >= 0, temperature > 0, lr > 0, burn_in >= 0; got {gamma}, {temperature}, {lr}, {burn_in}"
        )
    if n_batches < 2 or n_samples < n_batches:
        raise ValueError(
            f"need n_batches >= 2 and n_samples >= n_batches, got {n_batches}, {n_samples}"
        )
    return _sgld(theta, gamma, math.sqrt(2 * lr * temperature), lr, burn_in,
                 n_samples // n_batches, n_batches, gen)  # fmt: skip


def _sgld(theta, gamma, noise, lr, burn_in, per_batch, n_batches, gen) -> Steps[EntropyResult]:
    f0, _ = yield theta
    xp = theta.clone()
    energy_means, point_means = [], []
    e_sum, x_sum, count = 0.0, torch.zeros_like(theta), 0
    n_grad = 1
    for t in range(burn_in + per_batch * n_batches):
        f, g = yield xp
        n_grad += 1
        if not math.isfinite(f):
            nan = float("nan")
            return EntropyResult(nan, nan, nan, nan, f0, n_grad, False)
        if t >= burn_in:
            e_sum += f
            x_sum += xp
            count += 1
            if count == per_batch:
                energy_means.append(e_sum / per_batch)
                point_means.append(x_sum / per_batch)
                e_sum, x_sum, count = 0.0, torch.zeros_like(theta), 0
        xp = xp - lr * (g + gamma * (xp - theta)) + noise * gaussian(theta.numel(), gen, theta)
    b = len(energy_means)
    e = torch.tensor(energy_means, dtype=torch.float64)
    gap = float(e.mean()) - f0
    gap_se = float(e.std(unbiased=True)) / math.sqrt(b)
    means = torch.stack(point_means)
    center = means.mean(0)
    disp = float(torch.linalg.vector_norm(theta - center))
    disp_se = math.sqrt(float((means - center).pow(2).sum()) / (b * (b - 1)))
    return EntropyResult(gap, gap_se, disp, disp_se, f0, n_grad, True)
