"""The interface every flatness measure shares.

A measure is a function ``measure(model, data, settings, seed, context) -> MeasureResult``:

- ``model``: a trained ``nn.Module``; measures never modify it (they work on a deep copy or on
  detached parameter tensors) and always evaluate it in eval mode (batch norm running stats, no
  dropout).
- ``data``: a fixed ``MeasureData`` subset (inputs and labels), logged by the caller.
- ``settings``: the measure's own mapping from ``conf/measures/*.yaml``.
- ``seed``: seeds a local ``torch.Generator``; no global RNG is touched.
- ``context``: extras some measures need (initial weights, device, dtype), see ``MeasureContext``.

It returns a frozen ``MeasureResult`` that carries the value, its uncertainty when the measure is
stochastic, how many loss / gradient / Hessian-vector evaluations it spent and whether it converged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class MeasureData:
    """A fixed data subset a measure is evaluated on (held as tensors, never a loader)."""

    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor | None = None  # rows of the source set (``select_subset`` records them)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device=None, dtype=None) -> MeasureData:
        x = self.x.to(device=device, dtype=dtype if self.x.is_floating_point() else None)
        return MeasureData(x, self.y.to(device=device), self.indices)


@dataclass(frozen=True)
class MeasureContext:
    """What some measures need beyond the model and data."""

    init_model: nn.Module | None = None  # weights at initialization (distance to init)
    device: str = "cpu"
    dtype: torch.dtype = torch.float64


@dataclass(frozen=True)
class MeasureResult:
    """One measure's outcome. ``stderr`` is None for deterministic measures."""

    name: str
    value: float
    stderr: float | None = None
    n_loss: int = 0
    n_grad: int = 0
    n_hvp: int = 0
    converged: bool = True
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["value"] = _finite_or_none(self.value)
        out["stderr"] = None if self.stderr is None else _finite_or_none(self.stderr)
        return out


def _finite_or_none(x: float) -> float | None:
    """JSON has no NaN/inf: a non-finite value is written as null and flagged by ``converged``."""
    x = float(x)
    return x if math.isfinite(x) else None
