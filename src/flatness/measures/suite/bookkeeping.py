"""Per-call bookkeeping shared by the measure callables (see ``registry``).

``MeasureRun`` merges a measure's settings with ``settings.DEFAULTS``, builds the call's own
``Objective`` (a private deep copy of the model on ``context.device`` in ``context.dtype``), starts
the clock and turns values into ``MeasureResult`` objects that carry the evaluation counts.

Counts and seconds in a result cover the work since the last ``mark()`` (or the start of the
call): results computed together (lambda_max and lambda_min from one Lanczos run, the norm block)
share their cost; a wrapper calls ``mark()`` between independent computations so each result
reports its own. ``GroupShare`` plays ``MeasureRun``'s part for a run whose measure ran stacked
over its group (``suite.group``), with the counts the stacked pass kept for that run.
"""

from __future__ import annotations

import math
import time

import torch

from ..core.interface import MeasureContext, MeasureResult
from ..core.objective import Objective
from .settings import DEFAULTS

Results = tuple[MeasureResult, ...]  # what every measure callable returns


class MeasureRun:
    """Per-call bookkeeping: merged settings, the objective, the clock, result construction."""

    def __init__(self, name, model, data, settings, context):
        self.s = {**DEFAULTS[name], **dict(settings or {})}
        self.context = context
        self.obj = Objective(
            model,
            data,
            device=context.device,
            dtype=context.dtype,
            chunk_size=self.s.get("chunk_size"),
        )
        self.mark()

    def mark(self) -> None:
        """Start a new cost window: later results count only the work done after this call."""
        c = self.obj.counts
        self._base = (c.loss, c.grad, c.hvp, time.perf_counter())

    def result(self, name, value, *, stderr=None, converged=True, n_hvp=None, **details):
        c, (loss0, grad0, hvp0, t0) = self.obj.counts, self._base
        return finished_result(name, value, stderr=stderr, converged=converged,
                               n_loss=c.loss - loss0, n_grad=c.grad - grad0,
                               n_hvp=c.hvp - hvp0 if n_hvp is None else n_hvp,
                               seconds=time.perf_counter() - t0, details=details)  # fmt: skip


class GroupShare:
    """A run's share of a measure stacked over its group, shaped as ``MeasureRun`` for the result
    builders: its settings, its own evaluation counts, the group's seconds split evenly."""

    def __init__(self, name, block, seconds, *, n_loss=0, n_grad=1):
        self.s = {**DEFAULTS[name], **dict(block or {})}
        self.seconds, self.n_loss, self.n_grad = seconds, n_loss, n_grad

    def result(self, name, value, *, stderr=None, converged=True, n_hvp=0, **details):
        return finished_result(name, value, stderr=stderr, converged=converged,
                               n_loss=self.n_loss, n_grad=self.n_grad, n_hvp=n_hvp,
                               seconds=self.seconds, details=details)  # fmt: skip


def finished_result(
    name, value, *, stderr, converged, n_loss, n_grad, n_hvp, seconds, details
) -> MeasureResult:
    """A ``MeasureResult`` in plain floats; a non-finite value is never flagged converged."""
    value = float(value)
    return MeasureResult(
        name=name,
        value=value,
        stderr=None if stderr is None else float(stderr),
        n_loss=n_loss,
        n_grad=n_grad,
        n_hvp=n_hvp,
        converged=bool(converged) and math.isfinite(value),
        seconds=seconds,
        details=details,
    )


def init_vector(obj: Objective, context: MeasureContext) -> torch.Tensor | None:
    """The initial weights of the measured parameters (same names), or None without init_model."""
    if context.init_model is None:
        return None
    named = dict(context.init_model.named_parameters())
    bad = [
        n
        for n, p in zip(obj.names, obj.params, strict=True)
        if n not in named or named[n].shape != p.shape
    ]
    if bad:
        raise ValueError(f"context.init_model does not match the model at parameters {bad}")
    return torch.cat([named[n].detach().to(obj.device, obj.dtype).reshape(-1) for n in obj.names])
