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

Power iteration (PyHessian's method) is kept for comparison: it converges to the eigenvalue of
largest magnitude at rate |lambda_2/lambda_1|, and its stopping rule on the relative change of the
Rayleigh quotient can stop far from the answer when the top eigenvalues are close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits

from .objective import gaussian
from .operators import Operator


@dataclass(frozen=True)
class EigenResult:
    eigenvalues: tuple[float, ...]  # top-k, descending
    lambda_min: float  # the smallest (most negative) Ritz value
    residuals: tuple[float, ...]  # residual bounds of the top-k
    residual_min: float
    n_matvec: int
    converged: bool
    ritz_history: tuple[float, ...]  # the top Ritz value after each step (for benchmarks)


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
        if self.exhausted:
            return
        q = self._basis[self._n - 1]
        w = self.op.matvec(q)
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
        with threadpool_limits(1):
            if self.k == 1:
                return a.copy(), np.array([abs(self.betas[0])])
            theta, s = scipy.linalg.eigh_tridiagonal(a, b)
        return theta, np.abs(self.betas[self.k - 1] * s[-1, :])

    def tridiagonal_eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """Nodes and Gauss-quadrature weights (squared first components) of ``T_k``."""
        a = np.asarray(self.alphas)
        b = np.asarray(self.betas[: self.k - 1])
        with threadpool_limits(1):
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
    want_min: bool = True,
) -> EigenResult:
    """Top-``top_k`` eigenvalues and the smallest one, to relative residual ``tol``.

    Stops when the residual bound of each wanted Ritz value is below ``tol * max|Ritz|``, when the
    Krylov space is exhausted (exact), or after ``max_steps`` products (``converged=False``).
    With ``want_min=False`` the smallest Ritz value is still returned but not waited for.
    """
    if top_k < 1 or max_steps < 1:
        raise ValueError(f"need top_k >= 1 and max_steps >= 1, got {top_k}, {max_steps}")
    start = op.n_matvec
    lz = LanczosProcess(
        op, gaussian(op.size, gen, torch.empty(0, dtype=op.dtype, device=op.device))
    )
    history: list[float] = []
    converged = False
    min_steps = min_steps if min_steps is not None else top_k + 2
    while lz.k < max_steps and not lz.exhausted:
        lz.step()
        theta, res = lz.ritz()
        history.append(float(theta[-1]))
        if lz.exhausted:
            converged = True
            break
        if lz.k >= min(min_steps, op.size):
            wanted = np.concatenate([res[-top_k:], res[:1]]) if want_min else res[-top_k:]
            if np.all(wanted <= tol * max(np.abs(theta).max(), 1e-300)):
                converged = True
                break
    theta, res = lz.ritz()
    k = min(top_k, theta.size)
    return EigenResult(
        eigenvalues=tuple(float(t) for t in theta[::-1][:k]),
        lambda_min=float(theta[0]),
        residuals=tuple(float(r) for r in res[::-1][:k]),
        residual_min=float(res[0]),
        n_matvec=op.n_matvec - start,
        converged=converged,
        ritz_history=tuple(history),
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
