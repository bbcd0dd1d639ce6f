"""Algorithms for a group of runs in lockstep: Hessian ones on one ``StackedHessian``,
perturbation ones (written as steps, ``algorithms.steps``) on one ``StackedObjective``.

- ``group_eigen``: R Lanczos processes in lockstep, each fed its row of one batched product, each
  stopping on its own residuals by the very ``RitzTracker`` a lone run uses (a stopped run's row
  is a zero vector until the slowest run is done);
- ``group_hutchinson``: probe i of every run in one product;
- ``group_slq``: probe p of every run, Lanczos steps in lockstep.

- ``drive_group``: R runs' steps (SGLD chains, projected ascents, Monte-Carlo averages), every
  running run's point evaluated in one batched call; a finished run (a diverged chain) stops
  being sent evaluations while the others go on.

Each run draws its start vectors, probes and noise from its own generator with its own seed,
exactly as when measured alone, so its numbers equal the lone run's up to the rounding of batched
kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..core.objective import gaussian, generator, rademacher
from ..core.operators import Operator
from ..core.stacked import StackedHessian
from .density import SLQResult
from .eigen import EigenResult, LanczosProcess, RitzTracker
from .steps import Steps
from .trace import TraceEstimate, mean_stderr


class _Row(Operator):
    """One run's share of a batched operator: its size, and a count of the products it got."""

    def __init__(self, op: StackedHessian):
        super().__init__()
        self.size, self.device, self.dtype = op.size, op.device, op.dtype

    def _matvec(self, v):
        raise RuntimeError("a run in lockstep gets its products from the batched operator")


def _lockstep(op: StackedHessian, procs: list[LanczosProcess], running: list[bool]) -> None:
    """One batched product for every running process (the rest get a zero row)."""
    rows = torch.zeros(op.n_runs, op.size, device=op.device, dtype=op.dtype)
    for r, proc in enumerate(procs):
        if running[r]:
            rows[r] = proc.current
    products = op.matvec(rows)
    for r, proc in enumerate(procs):
        if running[r]:
            proc.op.n_matvec += 1
            proc.absorb(products[r])


def group_eigen(
    op: StackedHessian, s: Mapping[str, Any], seeds: Sequence[int]
) -> list[EigenResult]:
    like = torch.empty(0, device=op.device, dtype=op.dtype)
    rows = [_Row(op) for _ in seeds]
    procs = [LanczosProcess(row, gaussian(op.size, generator(seed), like))
             for row, seed in zip(rows, seeds, strict=True)]  # fmt: skip
    trackers = [RitzTracker(s["top_k"], s["max_steps"], s["lambda_min_steps"], s["tol"], None,
                            op.size) for _ in seeds]  # fmt: skip
    running = [not t.done(p) for t, p in zip(trackers, procs, strict=True)]
    while any(running):
        _lockstep(op, procs, running)
        for r, (tracker, proc) in enumerate(zip(trackers, procs, strict=True)):
            if running[r]:
                tracker.update(proc)
                running[r] = not tracker.done(proc)
    return [t.result(p, row.n_matvec) for t, p, row in zip(trackers, procs, rows, strict=True)]


def group_hutchinson(
    op: StackedHessian, n_probes: int, seeds: Sequence[int]
) -> list[TraceEstimate]:
    like = torch.empty(0, device=op.device, dtype=op.dtype)
    gens = [generator(seed) for seed in seeds]
    samples: list[list[float]] = [[] for _ in seeds]
    for _ in range(n_probes):
        v = torch.stack([rademacher(op.size, g, like) for g in gens])
        for r, value in enumerate((v * op.matvec(v)).sum(1).tolist()):
            samples[r].append(value)
    return [TraceEstimate(*mean_stderr(x), n_probes, tuple(x)) for x in samples]


def group_slq(op: StackedHessian, n_probes: int, n_steps: int, seeds) -> list[SLQResult]:
    like = torch.empty(0, device=op.device, dtype=op.dtype)
    gens = [generator(seed) for seed in seeds]
    rows = [_Row(op) for _ in seeds]
    nodes: list[list[tuple]] = [[] for _ in seeds]
    weights: list[list[tuple]] = [[] for _ in seeds]
    for _ in range(n_probes):
        procs = [LanczosProcess(row, rademacher(op.size, g, like))
                 for row, g in zip(rows, gens, strict=True)]  # fmt: skip
        running = [True] * len(procs)
        while any(running):
            _lockstep(op, procs, running)
            running = [p.k < n_steps and not p.exhausted for p in procs]
        for r, proc in enumerate(procs):
            theta, w = proc.tridiagonal_eigh()
            nodes[r].append(tuple(float(t) for t in theta))
            weights[r].append(tuple(float(x) for x in w))
    return [SLQResult(tuple(n), tuple(w), op.size, row.n_matvec)
            for n, w, row in zip(nodes, weights, rows, strict=True)]  # fmt: skip


def drive_group(
    steps: Sequence[Steps], evaluate: Callable[[torch.Tensor], Any], idle: torch.Tensor
) -> tuple[list, list[int]]:
    """Drive R runs' steps together: one ``evaluate`` of the ``(R, P)`` stacked points per step.

    ``evaluate`` returns per-run losses, or per-run losses and an ``(R, P)`` gradient
    (``StackedObjective.loss`` / ``loss_grad``); a finished run's row is its ``idle`` row (a
    finite point: its evaluation is discarded). Returns every run's result and how many
    evaluations it was sent (what it would have counted alone).
    """
    points: list[torch.Tensor | None] = [None] * len(steps)
    results: list = [None] * len(steps)
    counts = [0] * len(steps)

    def advance(r: int, value) -> None:
        try:
            points[r] = steps[r].send(value)  # send(None) starts a generator
        except StopIteration as stop:
            points[r], results[r] = None, stop.value

    for r in range(len(steps)):
        advance(r, None)
    while any(p is not None for p in points):
        rows = torch.stack([idle[r] if p is None else p for r, p in enumerate(points)])
        values = evaluate(rows)
        per_run = values if isinstance(values, list) else list(zip(*values, strict=True))
        for r, point in enumerate(points):
            if point is not None:
                counts[r] += 1
                advance(r, per_run[r])
    return results, counts
