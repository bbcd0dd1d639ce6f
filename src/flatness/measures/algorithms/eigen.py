"""Extreme Hessian eigenvalues: Lanczos with full reorthogonalization, and power iteration.

Lanczos is the default. After k products it holds a tridiagonal ``T_k`` whose extreme Ritz values
converge at a Chebyshev (square-root-of-the-gap) rate, so the top eigenvalue of a network Hessian,
whose outliers often cluster, needs far fewer products than power iteration. Every new Lanczos
vector is reorthogonalized (twice) against all earlier ones: in floating point, plain three-term
Lanczos loses orthogonality and produces spurious copies of converged Ritz values (Paige 1976),
which would corrupt top-k lists and SLQ weights. For k <= a few hundred this costs little next to
the products. One run yields both ends of the spectrum: lambda_max and the most negative eigenvalue
(lambda_min < 0 marks a saddle rather than a minimum).

Convergence is judged by the standard residual bound: for the Ritz pair ``(theta_i, s_i)`` of
``T_k`` the residual norm is ``|beta_k * s_i[k-1]|``, and some eigenvalue of ``H`` lies within it.
Each asked-for quantity stops on its own residual: lambda_max and the top-k within ``max_steps``
products, lambda_min within its own budget. lambda_min sits at the edge of the dense bulk of a
network Hessian and rarely converges in a few dozen products, so waiting for it (as one joint test
would) spends the whole budget on every model even when only lambda_max was wanted.

Power iteration (PyHessian's method) is kept for comparison: it converges to the eigenvalue of
largest magnitude at rate |lambda_2/lambda_1|, and its stopping rule on the relative change of the
Rayleigh quotient can stop far from the answer when the top eigenvalues are close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from ..core.blas import one_blas_thread
from ..core.objective import gaussian
from ..core.operators import Operator


@dataclass(frozen=True)
class EigenResult:
    eigenvalues: tuple[float, ...]  # top-k, descending
    lambda_min: float  # the smallest (most negative) Ritz value
    residuals: tuple[float, ...]  # residual bounds of the top-k
    residual_min: float
    n_matvec: int  # products the run spent
    converged: bool  # the top-k converged, and lambda_min too where it was wanted
    ritz_history: tuple[float, ...]  # the top Ritz value after each step (for benchmarks)
    steps_max: int | None = None  # products after which lambda_max converged (None: never)
    steps_top: int | None = None  # ... after which all top-k converged
    steps_min: int | None = None  # ... after which lambda_min converged


@dataclass(frozen=True)
class PowerResult:
    eigenvalues: tuple[float, ...]
    n_matvec: int
    converged: bool
    history: tuple[float, ...]  # Rayleigh quotients of the first eigenvalue, one per product


class LanczosProcess:
    """Incremental Lanczos with full reorthogonalization, one product per ``step()``."""

    def __init__(self, op: Operator, v0: torch.Tensor):
        self.op = op
        q = v0.to(device=op.device, dtype=op.dtype)
        # the Lanczos vectors as rows of one preallocated matrix (grown by doubling), so the
        # reorthogonalization is two matrix-vector products without restacking every step
        self._basis = torch.empty((min(32, op.size), op.size), device=op.device, dtype=op.dtype)
        self._basis[0] = q / torch.linalg.vector_norm(q)
        self._n = 1
        self.alphas: list[float] = []
        self.betas: list[float] = []  # betas[j] couples basis j and j+1
        self.exhausted = False  # the Krylov space became invariant: Ritz values are exact
        self._scale = 0.0
        self._eps = torch.finfo(op.dtype).eps

    def step(self) -> None:
        if not self.exhausted:
            self.absorb(self.op.matvec(self.current))

    @property
    def current(self) -> torch.Tensor:
        """The Lanczos vector whose product comes next."""
        return self._basis[self._n - 1]

    def absorb(self, w: torch.Tensor) -> None:
        """Extend the basis with ``w = H q`` for ``q = current`` (computed here by ``step``, or
        by a batched operator for many processes in lockstep, see ``lockstep``)."""
        q = self.current
        alpha = float(torch.dot(q, w))
        w = w - alpha * q
        if self.betas:
            w = w - self.betas[-1] * self._basis[self._n - 2]
        basis = self._basis[: self._n]
        for _ in range(2):  # "twice is enough" (Kahan / Parlett)
            w = w - basis.T @ (basis @ w)
        beta = float(torch.linalg.vector_norm(w))
        self.alphas.append(alpha)
        self._scale = max(self._scale, abs(alpha) + beta)
        if beta <= 1e3 * self._eps * max(self._scale, 1e-300) or self._n >= self.op.size:
            self.exhausted = True
            self.betas.append(0.0)
            return
        self.betas.append(beta)
        if self._n == self._basis.shape[0]:
            grown = torch.empty(
                (min(2 * self._n, self.op.size), self.op.size), device=w.device, dtype=w.dtype
            )
            grown[: self._n] = self._basis
            self._basis = grown
        self._basis[self._n] = w / beta
        self._n += 1

    @property
    def k(self) -> int:
        return len(self.alphas)

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and their residual bounds ``|beta_k s_i[k-1]|``."""
        a = np.asarray(self.alphas)
        b = np.asarray(self.betas[: self.k - 1])
        with one_blas_thread():
            if self.k == 1:
                return a.copy(), np.array([abs(self.betas[0])])
            theta, s = scipy.linalg.eigh_tridiagonal(a, b)
        return theta, np.abs(self.betas[self.k - 1] * s[-1, :])

    def tridiagonal_eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """Nodes and Gauss-quadrature weights (squared first components) of ``T_k``."""
        a = np.asarray(self.alphas)
        b = np.asarray(self.betas[: self.k - 1])
        with one_blas_thread():
            if self.k == 1:
                return a.copy(), np.ones(1)
            theta, s = scipy.linalg.eigh_tridiagonal(a, b)
        return theta, s[0, :] ** 2


def lanczos_eigen(
    op: Operator,
    *,
    top_k: int = 1,
    max_steps: int = 100,
    tol: float = 1e-6,
    gen: torch.Generator,
    min_steps: int | None = None,
    min_budget: int | None = None,
) -> EigenResult:
    """Top-``top_k`` eigenvalues within ``max_steps`` products, and the smallest within ``min_budget``.

    A Ritz value has converged when its residual bound is below ``tol * max|Ritz|`` (checked from
    ``min_steps`` products on, default ``top_k + 2``, so a tiny Krylov space cannot look converged
    by accident). The run steps while a wanted quantity has neither converged nor spent its own
    budget: lambda_max, the top-k (budget ``max_steps``) and lambda_min (budget ``min_budget``,
    default ``max_steps``; ``0``: not wanted, its value is then whatever the run gave). An exhausted
    Krylov space makes every Ritz value exact. Each quantity's ``steps_*`` is the number of products
    after which it converged (``None``: it never did).
    """
    if top_k < 1 or max_steps < 1:
        raise ValueError(f"need top_k >= 1 and max_steps >= 1, got {top_k}, {max_steps}")
    min_budget = max_steps if min_budget is None else min_budget
    if min_budget < 0:
        raise ValueError(f"need min_budget >= 0, got {min_budget}")
    start = op.n_matvec
    lz = LanczosProcess(
        op, gaussian(op.size, gen, torch.empty(0, dtype=op.dtype, device=op.device))
    )
    tracker = RitzTracker(top_k, max_steps, min_budget, tol, min_steps, op.size)
    while not tracker.done(lz):
        lz.step()
        tracker.update(lz)
    return tracker.result(lz, op.n_matvec - start)


class RitzTracker:
    """Which wanted Ritz values of one Lanczos run have converged, and after how many products.

    Kept apart from the loop so that a batch of Lanczos runs in lockstep (``lockstep``) applies the
    very same stopping rule to each run as a lone run does.
    """

    def __init__(self, top_k, max_steps, min_budget, tol, min_steps, size):
        self.top_k, self.max_steps, self.min_budget, self.tol = top_k, max_steps, min_budget, tol
        self.min_steps = min(top_k + 2 if min_steps is None else min_steps, size)
        self.steps = {"max": None, "top": None, "min": None}
        self.history: list[float] = []

    def update(self, lz: LanczosProcess) -> None:
        theta, res = lz.ritz()
        self.history.append(float(theta[-1]))
        if lz.exhausted:
            for key in self.steps:
                self.steps[key] = self.steps[key] or lz.k
            return
        if lz.k < self.min_steps:
            return
        ok = res <= self.tol * max(float(np.abs(theta).max()), 1e-300)
        for key, good in (("max", ok[-1]), ("top", ok[-self.top_k :].all()), ("min", ok[0])):
            if self.steps[key] is None and good:
                self.steps[key] = lz.k

    def done(self, lz: LanczosProcess) -> bool:
        if lz.exhausted:
            return True
        top_open = self.steps["top"] is None and lz.k < self.max_steps
        min_open = self.steps["min"] is None and lz.k < self.min_budget
        return not (top_open or min_open)

    def result(self, lz: LanczosProcess, n_matvec: int) -> EigenResult:
        theta, res = lz.ritz()
        k = min(self.top_k, theta.size)
        steps = self.steps
        min_ok = self.min_budget == 0 or steps["min"] is not None
        return EigenResult(
            eigenvalues=tuple(float(t) for t in theta[::-1][:k]),
            lambda_min=float(theta[0]),
            residuals=tuple(float(r) for r in res[::-1][:k]),
            residual_min=float(res[0]),
            n_matvec=n_matvec,
            converged=steps["top"] is not None and min_ok,
            ritz_history=tuple(self.history),
            steps_max=steps["max"],
            steps_top=steps["top"],
            steps_min=steps["min"],
        )


def power_iteration(
    op: Operator,
    *,
    top_k: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    gen: torch.Generator,
) -> PowerResult:
    """PyHessian-style power iteration with deflation by reorthonormalization.

    Each eigenvalue stops when ``|l_k - l_{k-1}| / (|l_{k-1}| + 1e-6) < tol``. It converges to the
    eigenvalue of largest magnitude, which is negative at some saddles: the sign is kept.
    """
    if top_k < 1 or max_iter < 1:
        raise ValueError(f"need top_k >= 1 and max_iter >= 1, got {top_k}, {max_iter}")
    start = op.n_matvec
    like = torch.empty(0, dtype=op.dtype, device=op.device)
    found: list[torch.Tensor] = []
    values: list[float] = []
    history: list[float] = []
    converged = True
    for i in range(top_k):
        v = _orthonormalize(gaussian(op.size, gen, like), found)
        lam_prev = None
        ok = False
        for _ in range(max_iter):
            w = op.matvec(v)
            lam = float(torch.dot(v, w))
            if i == 0:
                history.append(lam)
            v = _orthonormalize(w, found)
            if lam_prev is not None and abs(lam - lam_prev) / (abs(lam_prev) + 1e-6) < tol:
                ok = True
                break
            lam_prev = lam
        converged = converged and ok
        values.append(lam)
        found.append(v)
    return PowerResult(tuple(values), op.n_matvec - start, converged, tuple(history))


def _orthonormalize(v: torch.Tensor, basis: list[torch.Tensor]) -> torch.Tensor:
    for b in basis:
        v = v - torch.dot(v, b) * b
    return v / torch.linalg.vector_norm(v)
