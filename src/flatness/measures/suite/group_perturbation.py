"""Local entropy and rho-sharpness for a group of runs, stacked: one batched evaluation per step.

Both measures are written as steps (``algorithms.steps``), and here each run's steps are the very
ones ``perturbation_measures`` drives alone (``entropy_steps``, ``rho_cases``), each with its own
generator and seed, driven in lockstep on one ``StackedObjective`` (``algorithms.lockstep``):

- local entropy: R SGLD chains, one loss and gradient of all R points per step; a chain that
  diverges stops there, with exactly its lone result, while the others go on;
- rho-sharpness: per case and batch, R projected ascents (or Monte-Carlo averages) in lockstep;
  each run keeps its own accept/halve decisions, and its generator passes through the cases and
  batches in the lone order.

Every run gets the counts it would have spent alone; the group's seconds are split evenly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..algorithms.lockstep import drive_group
from ..core.interface import MeasureResult
from ..core.objective import generator
from ..core.stacked import StackedObjective
from .bookkeeping import GroupShare
from .perturbation_measures import entropy_results, entropy_steps, rho_batches, rho_cases

STACKED_PERTURBATION = ("rho_sharpness", "local_entropy")


def group_local_entropy(
    obj: StackedObjective, block: Mapping[str, Any], seeds: Sequence[int]
) -> list[tuple[MeasureResult, ...]]:
    started = time.perf_counter()
    s = GroupShare("local_entropy", block, 0.0).s
    steps = [entropy_steps(s, theta, seed) for theta, seed in zip(obj.theta0, seeds, strict=True)]
    results, counts = drive_group(steps, obj.loss_grad, idle=obj.theta0)
    seconds = (time.perf_counter() - started) / obj.n_runs
    return [entropy_results(GroupShare("local_entropy", block, seconds, n_grad=n), res)
            for res, n in zip(results, counts, strict=True)]  # fmt: skip


def group_rho_sharpness(
    obj: StackedObjective, block: Mapping[str, Any], seeds: Sequence[int]
) -> list[tuple[MeasureResult, ...]]:
    s = GroupShare("rho_sharpness", block, 0.0).s
    batches = [obj.rows(b) for b in rho_batches(s, obj.x.shape[1])]
    gens = [generator(seed) for seed in seeds]
    cases = [rho_cases(s, theta) for theta in obj.theta0]  # per run: its adaptive scale
    out: list[list[MeasureResult]] = [[] for _ in seeds]
    for k, case in enumerate(cases[0]):
        started = time.perf_counter()
        outcomes: list[list] = [[] for _ in seeds]
        counts = [0] * len(seeds)
        for b in batches:
            steps = [run_cases[k].steps(theta, gen)
                     for run_cases, theta, gen in zip(cases, obj.theta0, gens, strict=True)]  # fmt: skip
            results, n = drive_group(steps, b.loss_grad if case.worst else b.loss, obj.theta0)
            for r in range(obj.n_runs):
                outcomes[r].append(results[r])
                counts[r] += n[r]
        seconds = (time.perf_counter() - started) / obj.n_runs
        for r in range(obj.n_runs):
            value, stderr, details = cases[r][k].summary(outcomes[r])
            n_grad, n_loss = (counts[r], 0) if case.worst else (0, counts[r])
            share = GroupShare("rho_sharpness", block, seconds, n_loss=n_loss, n_grad=n_grad)
            out[r].append(share.result(case.name, value, stderr=stderr, **details))
    return [tuple(results) for results in out]
