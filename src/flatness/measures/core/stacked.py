"""The Hessians of R independent runs as one batched operator (a group's stacked matvec).

The Hessian of the sum of R independent runs' losses is block diagonal: one Hessian-vector product
of the summed loss at a stacked vector ``(v_1, ..., v_R)`` gives every run's product ``H_r v_r``.
``StackedHessian`` builds that summed loss with the grouped trainer's stacked forward pass
(``flatness.training.stacked_forward.FlatForward``: one batched kernel per layer for all R runs) and keeps its
gradient graph, so a product costs one double backprop for the whole group.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from flatness.training.stacked_forward import FlatForward, cross_entropy

from .interface import MeasureData


class StackedHessian:
    """The R runs' Hessians as one batched operator ``(R, P) -> (R, P)`` (rows: runs).

    Parameters are flattened in ``named_parameters`` order, as ``Objective`` does, so row r is
    exactly run r's flat vector. Every model must be a flat ``nn.Sequential`` ``FlatForward``
    accepts, with all parameters trainable and the same shapes (``stackable`` checks).
    """

    def __init__(self, models: Sequence[nn.Module], data: Sequence[MeasureData], context):
        self.device, self.dtype = torch.device(context.device), context.dtype
        self.forward = FlatForward(copy.deepcopy(models[0]).float(), tuple(data[0].x.shape[1:]))
        states = [{n: p.detach() for n, p in m.named_parameters()} for m in models]
        self.names = list(states[0])
        self.params = [
            torch.stack([s[n] for s in states]).to(self.device, self.dtype).requires_grad_(True)
            for n in self.names
        ]
        self.numels = [p[0].numel() for p in self.params]
        self.n_runs, self.size = len(models), sum(self.numels)
        buffers = [{n: b for n, b in m.named_buffers()} for m in models]
        self.buffers = {n: torch.stack([b[n] for b in buffers]).to(self.device) for n in buffers[0]}
        self.buffers = {n: b.to(self.dtype) if b.is_floating_point() else b
                        for n, b in self.buffers.items()}  # fmt: skip
        x = torch.stack([d.x for d in data]).to(self.device, self.dtype)
        y = torch.stack([d.y for d in data]).to(self.device)
        with torch.enable_grad():
            logits, _ = self.forward(dict(zip(self.names, self.params, strict=True)),
                                     self.buffers, x, train=False)  # fmt: skip
            self._grads = torch.autograd.grad(
                cross_entropy(logits, y).sum(), self.params, create_graph=True
            )
        self.n_matvec = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H_r v_r`` for every row ``r`` of ``v``, from one double backprop of the summed loss."""
        self.n_matvec += 1
        parts = [
            t.reshape(p.shape) for t, p in zip(v.split(self.numels, 1), self.params, strict=True)
        ]
        with torch.enable_grad():
            hv = torch.autograd.grad(
                self._grads, self.params, grad_outputs=parts, retain_graph=True
            )
        return torch.cat([h.reshape(self.n_runs, -1) for h in hv], dim=1)


def stacked_forward_accepts(model: nn.Module, data: MeasureData) -> bool:
    """Whether ``FlatForward`` knows every layer of ``model`` (a flat ``nn.Sequential``)."""
    try:
        FlatForward(copy.deepcopy(model).float(), tuple(data.x.shape[1:]))
    except (ValueError, TypeError, RuntimeError):
        return False
    return True
