"""The measures of a group of runs, with the Hessian measures in one vectorized pass.

The Hessian of the sum of R independent runs' losses is block diagonal: one Hessian-vector product
of the summed loss at a stacked vector ``(v_1, ..., v_R)`` gives every run's product ``H_r v_r``.
``StackedHessian`` builds that summed loss with the grouped trainer's stacked forward pass
(``flatness.training.stacked_forward.FlatForward``: one batched kernel per layer for all R runs) and keeps its
gradient graph, so a product costs one double backprop for the whole group. On it:

- ``hessian_eigen``: R Lanczos processes in lockstep, each fed its row of one batched product, each
  stopping on its own residuals by the very ``RitzTracker`` a lone run uses (a stopped run's row
  is a zero vector until the slowest run is done);
- ``hessian_trace`` (Hutchinson): probe i of every run in one product;
- ``spectral_density``: probe p of every run, Lanczos steps in lockstep.

Each run draws its start vectors and probes from its own generator with its own seed, exactly as
when measured alone, so its numbers equal the lone run's up to the rounding of batched kernels
(tests/test_measures_group.py: relative 1e-9). What is not stacked runs per run, unchanged:

- Hutch++ (its QR sketch is per run; it could be stacked, it is not the default);
- chunked subsets (``chunk_size``), ``reuse_graph: false`` (both ask for less memory, and the
  stacked graph holds all R runs' graphs), frozen parameters, or layers ``FlatForward`` does not
  know: the whole group then falls back to one run at a time;
- the perturbation measures: Keskar's L-BFGS-B lives in scipy, one run per call; the sigma'/alpha'
  bisections branch per run on data-dependent comparisons; local entropy, rho-sharpness and the
  averages could be stacked like the Hessian measures, but see the next point.

On CPU a stacked pass buys no speed: the products are compute-bound float64 kernels, and 16
MNIST-1D MLPs' Hessian measures took 0.8x (width 4) and 0.8x (width 100) the time stacked as one
by one on a shared 2-core machine (bench/bench_measure_group.py). What it saves is per-kernel
launch overhead, which is what dominates small models on a GPU (not measured here: no GPU).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from flatness.seeds import derive_seed
from flatness.training.stacked_forward import FlatForward, cross_entropy

from .base import MeasureContext, MeasureData, MeasureResult
from .density import SLQResult
from .eigen import EigenResult, LanczosProcess, RitzTracker
from .hessian_measures import eigen_results, slq_results, trace_results
from .objective import gaussian, generator, rademacher
from .operators import Operator
from .registry import MEASURES, RESULT_NAMES
from .settings import DEFAULTS, validate_settings
from .suite import enabled_measures, run_suite
from .trace import TraceEstimate, mean_stderr

STACKED = ("hessian_eigen", "hessian_trace", "spectral_density")


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


def stackable(models: Sequence[nn.Module], data: Sequence[MeasureData], settings) -> bool:
    """Whether the group's Hessian measures can run stacked (else: one run at a time)."""
    try:
        FlatForward(copy.deepcopy(models[0]).float(), tuple(data[0].x.shape[1:]))
    except (ValueError, TypeError, RuntimeError):
        return False
    shapes = [[(n, p.shape, p.requires_grad) for n, p in m.named_parameters()] for m in models]
    same_data = len({(tuple(d.x.shape), d.x.dtype) for d in data}) == 1
    chunked = any(
        (settings.get(name) or {}).get("chunk_size", settings.get("chunk_size")) is not None
        for name in STACKED
    )
    trainable = all(req for _, _, req in shapes[0])
    low_memory = not (settings.get("hessian_eigen") or {}).get("reuse_graph", True)
    same_shapes = all(s == shapes[0] for s in shapes)
    return same_data and not chunked and not low_memory and trainable and same_shapes


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


class _Share:
    """A run's share of a stacked measure: its settings and results shaped as ``MeasureRun``'s
    (one gradient graph per run, its own products, the group's seconds split evenly)."""

    def __init__(self, name: str, block: Mapping[str, Any], seconds: float):
        self.s = {**DEFAULTS[name], **dict(block)}
        self.seconds = seconds

    def result(self, name, value, *, stderr=None, converged=True, n_hvp=0, **details):
        value = float(value)
        return MeasureResult(name, value, None if stderr is None else float(stderr), 0, 1, n_hvp,
                             bool(converged) and math.isfinite(value), self.seconds, details)  # fmt: skip


def _stacked_measure(name: str, op: StackedHessian, block, seeds) -> Callable[[], list]:
    s = {**DEFAULTS[name], **dict(block)}
    if name == "hessian_eigen":
        return lambda: [(eigen_results, res) for res in group_eigen(op, s, seeds)]
    if name == "hessian_trace":
        return lambda: [(trace_results, res) for res in group_hutchinson(op, s["n_matvec"], seeds)]
    return lambda: [(slq_results, res) for res in group_slq(op, s["n_probes"], s["n_steps"], seeds)]


def run_group_suite(
    models: Sequence[nn.Module],
    data: Sequence[MeasureData],
    settings: Mapping[str, Any],
    seeds: Sequence[int],
    context: MeasureContext,
    init_models: Sequence[nn.Module | None] | None = None,
) -> list[dict[str, MeasureResult]]:
    """``run_suite`` for every run of a group (same settings), the Hessian measures stacked.

    Returns one ``{result name: MeasureResult}`` per run, in registry order, as ``run_suite`` does.
    """
    validate_settings(settings)
    init_models = init_models or [context.init_model] * len(models)
    enabled = enabled_measures(settings)
    stacked = [n for n in STACKED if n in enabled]
    if not stackable(models, data, settings):
        stacked = []
    if (
        "hessian_trace" in stacked
        and (settings.get("hessian_trace") or {}).get("method", DEFAULTS["hessian_trace"]["method"])
        != "hutchinson"
    ):
        stacked.remove("hessian_trace")
    rest = {**settings, **{n: {**(settings.get(n) or {}), "enabled": False} for n in stacked}}
    out = [
        run_suite(m, d, rest, seed, MeasureContext(init, context.device, context.dtype))
        for m, d, seed, init in zip(models, data, seeds, init_models, strict=True)
    ]
    if not stacked:
        return out
    op = StackedHessian(models, data, context)
    for name in stacked:
        started = time.perf_counter()
        block = settings.get(name) or {}
        per_run = _stacked_measure(name, op, block, [derive_seed(s, name) for s in seeds])()
        share = (time.perf_counter() - started) / len(models)
        for results, (make, res) in zip(out, per_run, strict=True):
            for result in make(_Share(name, block, share), res):
                results[result.name] = result
    order = [n for m in MEASURES for n in RESULT_NAMES[m]]
    return [dict(sorted(r.items(), key=lambda kv: order.index(kv[0]))) for r in out]
