"""The measures of a group of runs, with the Hessian measures in one vectorized pass.

The R runs' Hessians are one block-diagonal operator (``core.stacked.StackedHessian``: one double
backprop per product for the whole group), on which ``hessian_eigen``, ``hessian_trace``
(Hutchinson) and ``spectral_density`` run in lockstep (``algorithms.lockstep``). Each run draws its
start vectors and probes from its own generator with its own seed, exactly as when measured alone,
so its numbers equal the lone run's up to the rounding of batched kernels
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

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from flatness.seeds import derive_seed

from ..algorithms.lockstep import group_eigen, group_hutchinson, group_slq
from ..core.interface import MeasureContext, MeasureData, MeasureResult
from ..core.stacked import StackedHessian, stacked_forward_accepts
from .bookkeeping import finished_result
from .hessian_measures import eigen_results, slq_results, trace_results
from .one_model import enabled_measures, run_suite
from .registry import MEASURES, RESULT_NAMES
from .settings import DEFAULTS, validate_settings

STACKED = ("hessian_eigen", "hessian_trace", "spectral_density")


def stackable(models: Sequence[nn.Module], data: Sequence[MeasureData], settings) -> bool:
    """Whether the group's Hessian measures can run stacked (else: one run at a time)."""
    if not stacked_forward_accepts(models[0], data[0]):
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


class _Share:
    """A run's share of a stacked measure: its settings and results shaped as ``MeasureRun``'s
    (one gradient graph per run, its own products, the group's seconds split evenly)."""

    def __init__(self, name: str, block: Mapping[str, Any], seconds: float):
        self.s = {**DEFAULTS[name], **dict(block)}
        self.seconds = seconds

    def result(self, name, value, *, stderr=None, converged=True, n_hvp=0, **details):
        return finished_result(name, value, stderr=stderr, converged=converged, n_loss=0,
                               n_grad=1, n_hvp=n_hvp, seconds=self.seconds, details=details)  # fmt: skip


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
