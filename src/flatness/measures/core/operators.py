"""Linear operators: a matvec with a counter, kept apart from the algorithms that use it.

The eigen-, trace- and density algorithms only ever call ``op.matvec(v)`` (hessian-eigenthings
style), so they can be tested on dense matrices with known spectra (``MatrixOperator``) and run
unchanged on the Hessian of a network (``HessianOperator``).

``HessianOperator`` computes Pearlmutter's product ``Hv = d/dtheta <dL/dtheta, v>`` by double
backprop. The gradient graph (``create_graph=True``) of every data chunk is built **once** and reused
for every product (``retain_graph=True``): on this project's CPUs that makes one HVP ~1.9x a gradient
instead of ~3x when rebuilding (environment.md). ``reuse_graph=False`` trades that for memory by
rebuilding the graph per product. Chunk products are weighted by chunk size, so the operator is the
Hessian of the full-subset mean loss for any chunking.
"""

from __future__ import annotations

import torch

from .objective import Objective, flatten


class Operator:
    """A symmetric linear map on vectors of length ``size``; counts its products."""

    size: int
    device: torch.device
    dtype: torch.dtype

    def __init__(self) -> None:
        self.n_matvec = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.n_matvec += 1
        return self._matvec(v)

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        return self.matvec(v)


class MatrixOperator(Operator):
    """A dense symmetric matrix as an operator (for tests and small checks)."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"need a square matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.size = matrix.shape[0]
        self.device, self.dtype = matrix.device, matrix.dtype

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matrix @ v


class HessianOperator(Operator):
    """The Hessian of ``objective`` at ``theta`` (default: the measured point).

    The objective's parameters must not be changed while this operator is in use: the retained
    graphs hold the parameters they were built at (autograd would raise on an in-place change).
    """

    def __init__(
        self, objective: Objective, theta: torch.Tensor | None = None, *, reuse_graph: bool = True
    ):
        super().__init__()
        self.objective = objective
        self.size, self.device, self.dtype = objective.size, objective.device, objective.dtype
        self.reuse_graph = reuse_graph
        objective.set(objective.theta0 if theta is None else theta)
        self._graphs = []
        grad = torch.zeros(self.size, device=self.device, dtype=self.dtype)
        loss = 0.0
        for x, y, w in objective.chunks():
            value, pairs = self._grad_graph(x, y, w)
            grad += flatten(
                [g.detach() if g is not None else None for g in pairs], objective.params
            )
            loss += value
            if reuse_graph:
                self._graphs.append(pairs)
        objective.counts.grad += 1
        self.loss, self.gradient = loss, grad

    def _grad_graph(self, x, y, w) -> tuple[float, list[torch.Tensor | None]]:
        with torch.enable_grad():
            loss = w * self.objective._chunk_loss(x, y)
            grads = torch.autograd.grad(
                loss, self.objective.params, create_graph=True, allow_unused=True
            )
        return float(loss.detach()), list(grads)

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        obj = self.objective
        obj.counts.hvp += 1
        vs = obj.split(v.to(device=self.device, dtype=self.dtype))
        out = torch.zeros(self.size, device=self.device, dtype=self.dtype)
        graphs = (
            self._graphs
            if self.reuse_graph
            else (self._grad_graph(x, y, w)[1] for x, y, w in obj.chunks())
        )
        for grads in graphs:
            used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
            if not used:  # the loss is linear in every selected parameter: zero curvature
                continue
            with torch.enable_grad():
                hv = torch.autograd.grad(
                    [grads[i] for i in used],
                    obj.params,
                    grad_outputs=[vs[i] for i in used],
                    retain_graph=self.reuse_graph,
                    allow_unused=True,
                )
            out += flatten(hv, obj.params)
        return out

    def release(self) -> None:
        """Drop the retained graphs (frees memory; the operator can no longer be used)."""
        self._graphs = []
