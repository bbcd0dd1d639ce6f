"""The training loss on a fixed subset as a function of one flat parameter vector.

Every measure in this package reduces to questions about ``L(theta)``: its value, gradient, Hessian,
or its value at perturbed points. ``Objective`` is the single place that turns a model plus a data
subset into that function, and it encodes the conventions that anchors got wrong:

- It works on a **deep copy** of the model, moved to the requested device and dtype and put in
  **eval mode** (BN running statistics, no dropout). The caller's model is never touched: not its
  parameters, not its mode, not ``requires_grad``.
- Parameters are **selected explicitly**: by default those with ``requires_grad=True`` in the
  caller's model. Parameters that the forward pass does not use get zero gradients (``allow_unused``)
  instead of crashing autograd (PyHessian #8/#27, hessian-eigenthings #30).
- The subset may be processed in chunks (to bound memory) with **explicit batch-size weights**
  ``n_b / n``, so every quantity equals the full-subset one regardless of the chunk size.
- It counts loss, gradient and Hessian-vector evaluations so that results can report their cost.

The loss is the mean cross-entropy over the subset.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .interface import MeasureData


@dataclass
class Counts:
    """Evaluation counters, shared by an objective and the views made from it."""

    loss: int = 0
    grad: int = 0
    hvp: int = 0


def flatten(tensors: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one vector; ``None`` entries (unused parameters) become zeros."""
    return torch.cat(
        [
            (torch.zeros_like(p) if t is None else t).reshape(-1)
            for t, p in zip(tensors, like, strict=True)
        ]
    )


class Objective:
    """``L(theta)`` = mean cross-entropy of a private eval-mode copy of ``model`` on ``data``.

    Args:
        model: the trained model (left untouched).
        data: the fixed subset.
        device, dtype: where and in which precision to compute (float64 for exact checks).
        chunk_size: rows per forward pass (``None``: the whole subset at once). Results do not
            depend on it beyond rounding.
        trainable_only: select only parameters with ``requires_grad=True`` (default); otherwise all.
        param_filter: keep only parameters whose name passes it (e.g. one layer's Hessian).
    """

    def __init__(
        self,
        model: nn.Module,
        data: MeasureData,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        chunk_size: int | None = None,
        trainable_only: bool = True,
        param_filter: Callable[[str], bool] | None = None,
    ):
        self.model = copy.deepcopy(model).to(device=device, dtype=dtype)
        self.model.eval()
        named = [
            (n, p)
            for n, p in self.model.named_parameters()
            if (p.requires_grad or not trainable_only) and (param_filter is None or param_filter(n))
        ]
        for p in self.model.parameters():
            p.requires_grad_(False)  # unselected parameters are constants
        if not named:
            raise ValueError(
                "no parameters to measure (all have requires_grad=False or none passed param_filter)"
            )
        for _, p in named:
            p.requires_grad_(True)
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.numels = [p.numel() for p in self.params]
        self.size = sum(self.numels)
        self.device = torch.device(device)
        self.dtype = dtype
        data = data.to(device=device, dtype=dtype)
        self.x, self.y = data.x, data.y
        self.n = len(data)
        if self.n == 0:
            raise ValueError("the measure data subset is empty")
        if chunk_size is not None and chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
        self.chunk_size = chunk_size or self.n
        self.counts = Counts()
        self.theta0 = self.get()

    # ----------------------------------------------------------------- parameters
    def get(self) -> torch.Tensor:
        """The current parameters as one detached flat vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.params]).clone()

    def set(self, theta: torch.Tensor | None) -> None:
        """Write a flat vector into the private copy (``None``: leave as is)."""
        if theta is None:
            return
        if theta.numel() != self.size:
            raise ValueError(f"parameter vector has {theta.numel()} entries, expected {self.size}")
        with torch.no_grad():
            for p, t in zip(self.params, theta.split(self.numels), strict=True):
                p.copy_(t.view_as(p))

    def split(self, v: torch.Tensor) -> list[torch.Tensor]:
        """View a flat vector as a list shaped like the selected parameters."""
        return [t.view_as(p) for t, p in zip(v.split(self.numels), self.params, strict=True)]

    # ----------------------------------------------------------------- data views
    def chunks(self):
        """Yield ``(x, y, weight)`` with ``weight = n_chunk / n`` so weighted sums are means."""
        for i in range(0, self.n, self.chunk_size):
            x, y = self.x[i : i + self.chunk_size], self.y[i : i + self.chunk_size]
            yield x, y, y.shape[0] / self.n

    def rows(self, index: torch.Tensor | slice) -> Objective:
        """A view on a subset of the rows sharing the model copy, parameters and counters."""
        view = copy.copy(self)
        view.x, view.y = self.x[index], self.y[index]
        view.n = int(view.y.shape[0])
        view.chunk_size = min(self.chunk_size, view.n)
        return view

    # ----------------------------------------------------------------- evaluations
    def _chunk_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(x), y)

    @torch.no_grad()
    def loss(self, theta: torch.Tensor | None = None) -> float:
        self.set(theta)
        self.counts.loss += 1
        return float(sum(w * self._chunk_loss(x, y) for x, y, w in self.chunks()))

    @torch.no_grad()
    def error(self, theta: torch.Tensor | None = None) -> float:
        """0-1 training error on the subset (Jiang et al.'s searches use it)."""
        self.set(theta)
        self.counts.loss += 1
        wrong = sum(int((self.model(x).argmax(1) != y).sum()) for x, y, _ in self.chunks())
        return wrong / self.n

    @torch.no_grad()
    def logits(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        self.set(theta)
        return torch.cat([self.model(x) for x, _, _ in self.chunks()])

    def loss_grad(self, theta: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
        """Loss and flat gradient (chunk gradients weighted by chunk size)."""
        self.set(theta)
        self.counts.grad += 1
        total, grad = 0.0, torch.zeros(self.size, device=self.device, dtype=self.dtype)
        with torch.enable_grad():
            for x, y, w in self.chunks():
                loss = w * self._chunk_loss(x, y)
                g = torch.autograd.grad(loss, self.params, allow_unused=True)
                grad += flatten(g, self.params)
                total += float(loss.detach())
        return total, grad

    def numpy_loss_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """``loss_grad`` on float64 numpy arrays, the closure scipy's optimizers want."""
        t = torch.as_tensor(theta, device=self.device, dtype=self.dtype)
        f, g = self.loss_grad(t)
        return f, g.detach().cpu().double().numpy()

    def restore(self) -> None:
        """Put the parameters back to the measured point."""
        self.set(self.theta0)


def generator(seed: int) -> torch.Generator:
    """A local CPU generator: draws are made on CPU and moved, so CPU and CUDA runs agree."""
    return torch.Generator().manual_seed(int(seed))


def rademacher(n: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """A vector of i.i.d. +-1 entries on ``like``'s device and dtype."""
    v = torch.randint(0, 2, (n,), generator=gen, dtype=torch.int8) * 2 - 1
    return v.to(device=like.device, dtype=like.dtype)


def gaussian(n: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(n, generator=gen, dtype=torch.float64).to(
        device=like.device, dtype=like.dtype
    )


def uniform_pm1(n: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Uniform on [-1, 1]."""
    u = torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1
    return u.to(device=like.device, dtype=like.dtype)
