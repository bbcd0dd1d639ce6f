"""Algorithms written as step generators, so one run alone and a group in lockstep share them.

A perturbation algorithm (an SGLD chain, a projected ascent, a Monte-Carlo average) is written as a
generator that yields the next point it needs evaluated and is sent back that point's evaluation
(the loss, or the loss and gradient); its return value is the result. Everything else (the update
rule, the random draws, the stopping rule) lives in the generator, once:

- ``drive`` evaluates each point with one run's closure (``Objective.loss_grad``): the lone path;
- ``algorithms.lockstep.drive_group`` drives R runs' generators together, one batched evaluation
  of all R points per step (``core.stacked.StackedObjective``).

Each run's generator draws from its own ``torch.Generator``, so its draws, and with them its
numbers, do not depend on whether it is measured alone or in a group.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

import torch

R = TypeVar("R")
Steps = Generator[torch.Tensor, Any, R]  # yields points, is sent their evaluations, returns R


def drive(steps: Steps[R], evaluate: Callable[[torch.Tensor], Any]) -> R:
    """Run ``steps`` to its end, evaluating every point it yields with ``evaluate``."""
    try:
        point = next(steps)
        while True:
            point = steps.send(evaluate(point))
    except StopIteration as stop:
        return stop.value
