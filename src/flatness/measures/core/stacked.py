"""The Hessians and losses of R independent runs as batched operators (a group's stacked pass).

The Hessian of the sum of R independent runs' losses is block diagonal: one Hessian-vector product
of the summed loss at a stacked vector ``(v_1, ..., v_R)`` gives every run's product ``H_r v_r``.
``StackedHessian`` builds that summed loss with the grouped trainer's stacked forward pass
(``flatness.training.stacked_forward.FlatForward``: one batched kernel per layer for all R runs) and keeps its
gradient graph, so a product costs one double backprop for the whole group.

``StackedObjective`` is the same stacked forward pass as a loss (and gradient) of R points at
once, a point per run: what the perturbation measures' steps (``algorithms.steps``) need, one
batched evaluation for the whole group per step.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from flatness.training.stacked_forward import FlatForward, cross_entropy

from .interface import MeasureData


class _Stack:
    """R models' weights stacked along a leading run axis, their data likewise, and the forward
    pass ``FlatForward`` runs them with (eval mode: running batch-norm statistics, no dropout).

    Parameters are flattened in ``named_parameters`` order, as ``Objective`` does, so row r of a
    flat ``(R, P)`` vector is exactly run r's flat vector. Every model must be a flat
    ``nn.Sequential`` ``FlatForward`` accepts, with all parameters trainable and the same shapes
    (``suite.group.stackable`` checks).
    """

    def __init__(self, models: Sequence[nn.Module], data: Sequence[MeasureData], context):
        self.device, self.dtype = torch.device(context.device), context.dtype
        self.forward = FlatForward(copy.deepcopy(models[0]).float(), tuple(data[0].x.shape[1:]))
        states = [{n: p.detach() for n, p in m.named_parameters()} for m in models]
        self.names = list(states[0])
        self.params = [torch.stack([s[n] for s in states]).to(self.device, self.dtype)
                       for n in self.names]  # fmt: skip
        self.shapes = [p.shape[1:] for p in self.params]
        self.numels = [p[0].numel() for p in self.params]
        self.n_runs, self.size = len(models), sum(self.numels)
        self.theta0 = torch.cat([p.reshape(self.n_runs, -1) for p in self.params], 1)  # (R, P)
        buffers = [{n: b for n, b in m.named_buffers()} for m in models]
        self.buffers = {n: torch.stack([b[n] for b in buffers]).to(self.device) for n in buffers[0]}
        self.buffers = {n: b.to(self.dtype) if b.is_floating_point() else b
                        for n, b in self.buffers.items()}  # fmt: skip
        self.x = torch.stack([d.x for d in data]).to(self.device, self.dtype)
        self.y = torch.stack([d.y for d in data]).to(self.device)

    def losses(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """Each run's mean cross-entropy ``(R,)`` at the stacked ``params``."""
        logits, _ = self.forward(dict(zip(self.names, params, strict=True)), self.buffers,
                                 self.x, train=False)  # fmt: skip
        return cross_entropy(logits, self.y)

    def unflatten(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """A flat ``(R, P)`` vector as stacked parameters ``(R, *shape)`` (differentiable)."""
        return [t.reshape(self.n_runs, *shape)
                for t, shape in zip(theta.split(self.numels, 1), self.shapes, strict=True)]  # fmt: skip


class StackedHessian(_Stack):
    """The R runs' Hessians as one batched operator ``(R, P) -> (R, P)`` (rows: runs)."""

    def __init__(self, models: Sequence[nn.Module], data: Sequence[MeasureData], context):
        super().__init__(models, data, context)
        self.params = [p.requires_grad_(True) for p in self.params]
        with torch.enable_grad():
            self._grads = torch.autograd.grad(
                self.losses(self.params).sum(), self.params, create_graph=True
            )
        self.n_matvec = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H_r v_r`` for every row ``r`` of ``v``, from one double backprop of the summed loss."""
        self.n_matvec += 1
        with torch.enable_grad():
            hv = torch.autograd.grad(
                self._grads, self.params, grad_outputs=self.unflatten(v), retain_graph=True
            )
        return torch.cat([h.reshape(self.n_runs, -1) for h in hv], dim=1)


class StackedObjective(_Stack):
    """The R runs' losses (and gradients) at R points in one batched pass: ``Objective``'s
    ``loss`` and ``loss_grad`` for a whole group, a point per run (rows of a flat ``(R, P)``)."""

    @torch.no_grad()
    def loss(self, theta: torch.Tensor) -> list[float]:
        return self.losses(self.unflatten(theta)).tolist()

    def loss_grad(self, theta: torch.Tensor) -> tuple[list[float], torch.Tensor]:
        """Each run's loss and its flat gradient ``(R, P)``: one backprop of the summed loss."""
        with torch.enable_grad():
            theta = theta.detach().requires_grad_(True)
            losses = self.losses(self.unflatten(theta))
            (grad,) = torch.autograd.grad(losses.sum(), theta)
        return losses.detach().tolist(), grad

    def rows(self, index: slice) -> StackedObjective:
        """A view on rows ``index`` of every run's subset (``Objective.rows``, stacked)."""
        view = copy.copy(self)
        view.x, view.y = self.x[:, index], self.y[:, index]
        return view


def stacked_forward_accepts(model: nn.Module, data: MeasureData) -> bool:
    """Whether ``FlatForward`` knows every layer of ``model`` (a flat ``nn.Sequential``)."""
    try:
        FlatForward(copy.deepcopy(model).float(), tuple(data.x.shape[1:]))
    except (ValueError, TypeError, RuntimeError):
        return False
    return True
