"""The measures of a group of runs, each in one vectorized pass where the measure allows it.

Stacked: each run draws its start vectors, probes and noise from its own generator with its own
seed, exactly as when measured alone, so its numbers equal the lone run's up to the rounding of
batched kernels, with the same counts and flags (tests/test_measures_group.py: relative 1e-9).

- ``hessian_eigen``, ``hessian_trace`` (Hutchinson), ``spectral_density``: the R runs' Hessians
  are one block-diagonal operator (``core.stacked.StackedHessian``: one double backprop per
  product for the whole group), on which Lanczos, Hutchinson and SLQ run in lockstep
  (``algorithms.lockstep``);
- ``local_entropy``, ``rho_sharpness`` (``group_perturbation``): their steps (``algorithms.steps``:
  the SGLD chain, the projected ascents, the Monte-Carlo averages, the very code a lone run
  drives) run in lockstep on one ``core.stacked.StackedObjective``, one batched loss (and
  gradient) of the R runs' points per step; a diverged chain stops there while the others go on.

Not stacked, run per run unchanged:

- ``keskar``: scipy's L-BFGS-B drives its own line search and stopping in compiled code, one run
  per call; R runs would need R optimizers stepping in lockstep, which scipy does not offer;
- ``pacbayes``, ``sharpness_alpha``: the sigma'/alpha' bisections branch per run on
  data-dependent comparisons, so after the first step the runs ask for different radii, depths
  and kinds of evaluation (0-1 error, loss, an ascent's gradients) at the same moment;
- ``norms``: closed forms, ~0.03 s a run, nothing to batch;
- Hutch++ (its QR sketch is per run; it could be stacked, it is not the default);
- a measure given a ``chunk_size``, or the Hessian measures with ``reuse_graph: false`` (both
  ask for less memory than a pass over all R runs takes); and a whole group with frozen
  parameters, differently shaped runs or subsets, or layers ``FlatForward`` does not know.

On CPU a stacked pass buys no speed: products and gradients are compute-bound float64 kernels.
For 16 MNIST-1D MLPs (bench/bench_measure_group.py --runs 16 --steps 200, 1 thread, process CPU
seconds one by one / stacked, a shared 2-core machine) width 100 / width 32 gave: Hessian measures
0.95x / 1.00x, local entropy 0.88x / 1.00x, rho-sharpness 1.04x / 0.69x (1.1x rerun alone), the
whole suite 0.99x / 0.94x; the same code before this change gave 1.03x / 1.09x for the suite,
i.e. all within the machine's noise. What stacking saves is per-kernel launch overhead, which is
what dominates small models on a GPU (not measured here: no GPU).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from flatness.seeds import derive_seed

from ..algorithms.lockstep import group_eigen, group_hutchinson, group_slq
from ..core.interface import MeasureContext, MeasureData, MeasureResult
from ..core.stacked import StackedHessian, StackedObjective, stacked_forward_accepts
from .bookkeeping import GroupShare
from .group_perturbation import STACKED_PERTURBATION, group_local_entropy, group_rho_sharpness
from .hessian_measures import eigen_results, slq_results, trace_results
from .one_model import enabled_measures, run_suite
from .registry import MEASURES, RESULT_NAMES
from .settings import DEFAULTS, validate_settings

HESSIAN = ("hessian_eigen", "hessian_trace", "spectral_density")
STACKED = (*HESSIAN, *STACKED_PERTURBATION)


def _same_architecture(models: Sequence[nn.Module], data: Sequence[MeasureData]) -> bool:
    """All runs: one ``FlatForward``-able architecture, all trainable, same-shaped subsets."""
    if not stacked_forward_accepts(models[0], data[0]):
        return False
    shapes = [[(n, p.shape, p.requires_grad) for n, p in m.named_parameters()] for m in models]
    same_data = len({(tuple(d.x.shape), d.x.dtype) for d in data}) == 1
    trainable = all(req for _, _, req in shapes[0])
    return same_data and trainable and all(s == shapes[0] for s in shapes)


def stacked_measures(
    models: Sequence[nn.Module], data: Sequence[MeasureData], settings: Mapping[str, Any]
) -> list[str]:
    """The enabled measures this group runs stacked, in ``STACKED`` order (the rest: per run).

    A measure given a ``chunk_size`` (its own or the global one) asks for less memory than a
    stacked pass over R runs takes, and so does ``hessian_eigen.reuse_graph: false`` for the
    Hessian measures (they share one stacked graph); Hutch++ is not stacked.
    """
    if not _same_architecture(models, data):
        return []
    low_memory = not (settings.get("hessian_eigen") or {}).get("reuse_graph", True)
    out = []
    for name in enabled_measures(settings):
        block = {**DEFAULTS[name], **(settings.get(name) or {})}
        if (
            name not in STACKED
            or block.get("chunk_size", settings.get("chunk_size")) is not None
            or (name in HESSIAN and low_memory)
            or (name == "hessian_trace" and block["method"] != "hutchinson")
        ):
            continue
        out.append(name)
    return sorted(out, key=STACKED.index)


def stackable(models: Sequence[nn.Module], data: Sequence[MeasureData], settings) -> bool:
    """Whether any of the group's measures run stacked (else: one run at a time)."""
    return bool(stacked_measures(models, data, settings))


def _stacked_hessian(name: str, op: StackedHessian, block, seeds) -> list:
    s = {**DEFAULTS[name], **dict(block)}
    if name == "hessian_eigen":
        return [(eigen_results, res) for res in group_eigen(op, s, seeds)]
    if name == "hessian_trace":
        return [(trace_results, res) for res in group_hutchinson(op, s["n_matvec"], seeds)]
    return [(slq_results, res) for res in group_slq(op, s["n_probes"], s["n_steps"], seeds)]


def _run_hessian(out, names, models, data, settings, seeds, context) -> None:
    """The Hessian measures ``names`` on one stacked graph (freed on return), into ``out``."""
    op = StackedHessian(models, data, context)
    for name in names:
        started = time.perf_counter()
        block = settings.get(name) or {}
        per_run = _stacked_hessian(name, op, block, [derive_seed(s, name) for s in seeds])
        share = (time.perf_counter() - started) / len(models)
        for results, (make, res) in zip(out, per_run, strict=True):
            for result in make(GroupShare(name, block, share), res):
                results[result.name] = result


def _run_perturbation(out, names, models, data, settings, seeds, context) -> None:
    """Local entropy and rho-sharpness (``names``) on one ``StackedObjective``, into ``out``."""
    obj = StackedObjective(models, data, context)
    for name in names:
        run = group_local_entropy if name == "local_entropy" else group_rho_sharpness
        per_run = run(obj, settings.get(name) or {}, [derive_seed(s, name) for s in seeds])
        for results, res in zip(out, per_run, strict=True):
            for result in res:
                results[result.name] = result


def run_group_suite(
    models: Sequence[nn.Module],
    data: Sequence[MeasureData],
    settings: Mapping[str, Any],
    seeds: Sequence[int],
    context: MeasureContext,
    init_models: Sequence[nn.Module | None] | None = None,
) -> list[dict[str, MeasureResult]]:
    """``run_suite`` for every run of a group (same settings), what can be stacked stacked.

    Returns one ``{result name: MeasureResult}`` per run, in registry order, as ``run_suite`` does.
    """
    validate_settings(settings)
    init_models = init_models or [context.init_model] * len(models)
    stacked = stacked_measures(models, data, settings)
    rest = {**settings, **{n: {**(settings.get(n) or {}), "enabled": False} for n in stacked}}
    out = [
        run_suite(m, d, rest, seed, MeasureContext(init, context.device, context.dtype))
        for m, d, seed, init in zip(models, data, seeds, init_models, strict=True)
    ]
    if not stacked:
        return out
    for names, run in (
        ([n for n in stacked if n in HESSIAN], _run_hessian),
        ([n for n in stacked if n in STACKED_PERTURBATION], _run_perturbation),
    ):
        if names:
            run(out, names, models, data, settings, seeds, context)
    order = [n for m in MEASURES for n in RESULT_NAMES[m]]
    return [dict(sorted(r.items(), key=lambda kv: order.index(kv[0]))) for r in out]
