"""The reparameterization study: does a measure survive Dinh's function-preserving rescalings?

``reparam_sweep`` rescales one trained model over a log grid of alpha, checks in float64 that the
logits did not move, and recomputes every measure through a caller-supplied ``measure_fn``, so the
same code serves the project's measure suite or any single function. ``invariance_verdicts`` then
decides invariance from the numbers alone (largest relative change against a tolerance), never from
a table of expectations. ``dinh_flip`` makes Dinh's point concrete: the flatter, better model A is
rescaled until it is sharper than B, while its test accuracy stays exactly where it was.

Everything returned is a plain JSON-serialisable dict (non-finite numbers become null).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from flatness.reparam import blocks, bn_rescaling, dinh_rescaling, unit_rescaling

TRANSFORMS = ("layer", "unit", "bn")
Transform = str | Callable[[nn.Module, float], nn.Module]


def alpha_grid(low: float = 1e-2, high: float = 1e2, per_decade: int = 2) -> list[float]:
    """A log-spaced grid from ``low`` to ``high``; it contains 1 whenever the decades allow it."""
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"alpha_grid needs 0 < low < high < inf, got low={low}, high={high}")
    if per_decade < 1:
        raise ValueError(f"per_decade must be >= 1, got {per_decade}")
    lo, hi = math.log10(low), math.log10(high)
    n = max(2, round((hi - lo) * per_decade) + 1)
    return [float(a) for a in np.logspace(lo, hi, n)]


def rescale(model: nn.Module, alpha: float, transform: Transform = "layer") -> nn.Module:
    """A rescaled copy of ``model``: one named transform at strength alpha, or a callable.

    - ``"layer"``: Dinh's T_alpha, first affine layer times alpha, second over alpha;
    - ``"unit"``: first hidden layer per unit, even units times alpha, odd units over alpha;
    - ``"bn"``: the batch-norm scale symmetry with c = alpha on every BN layer.
    """
    if callable(transform):
        new = transform(model, alpha)
        if new is model:
            raise ValueError("transform must return a new model, not modify and return its input")
        return new
    if transform == "layer":
        return dinh_rescaling(model, alpha).apply(model)
    if transform == "unit":
        width = blocks(model)[0].channels
        scales = [alpha if u % 2 == 0 else 1.0 / alpha for u in range(width)]
        return unit_rescaling(model, 0, scales).apply(model)
    if transform == "bn":
        return bn_rescaling(model, alpha).apply(model)
    raise ValueError(f"transform={transform!r}; allowed: {', '.join(TRANSFORMS)} or a callable")


def reparam_sweep(
    model: nn.Module,
    measure_fn: Callable[[nn.Module], Mapping[str, Any]],
    x_eval: torch.Tensor,
    alphas: Sequence[float] | None = None,
    transform: Transform = "layer",
    dtype: torch.dtype = torch.float64,
    logit_rtol: float | None = None,
) -> dict[str, Any]:
    """Recompute every measure of ``model`` over a grid of rescalings; see the module docstring.

    ``measure_fn(model)`` returns ``{name: value}`` (a float, or an object with a ``.value`` such
    as a ``MeasureResult``). It is called on the unscaled model (the reference) and once per alpha,
    always on an eval-mode copy in ``dtype``. A row's function counts as preserved when its largest
    absolute logit change is at most ``logit_rtol`` (default 1000 machine epsilons of ``dtype``)
    times max(1, largest absolute reference logit).
    """
    alphas = _check_alphas(alphas if alphas is not None else alpha_grid())
    base = _eval_copy(model, dtype)
    x = _inputs_like(x_eval, base, dtype)
    tol = 1e3 * torch.finfo(dtype).eps if logit_rtol is None else logit_rtol
    with torch.no_grad():
        reference_logits = base(x)
    atol = tol * max(1.0, float(reference_logits.abs().max()))
    reference = _floats(measure_fn(copy.deepcopy(base)))  # measure_fn may not touch base
    rows = []
    for alpha in alphas:
        rescaled = rescale(base, alpha, transform).eval()
        with torch.no_grad():
            change = float((rescaled(x) - reference_logits).abs().max())
        row = {"alpha": alpha, "max_abs_logit_change": change, "function_preserved": change <= atol}
        rows.append({**row, "measures": _floats(measure_fn(rescaled))})
    names = sorted(set(reference).union(*(row["measures"] for row in rows)))
    return {
        "transform": transform if isinstance(transform, str) else _callable_name(transform),
        "dtype": str(dtype).removeprefix("torch."),
        "n_eval": int(x.shape[0]),
        "logit_atol": atol,
        "function_preserved": all(row["function_preserved"] for row in rows),
        "max_abs_logit_change": max(row["max_abs_logit_change"] for row in rows),
        "measures": names,
        "reference": {"alpha": 1.0, "measures": reference},
        "rows": rows,
    }


def invariance_verdicts(
    sweep: Mapping[str, Any], rtol: float | Mapping[str, float] = 1e-6, atol: float = 1e-12
) -> list[dict[str, Any]]:
    """Per measure: is it invariant over the sweep, and the numbers behind the verdict.

    The relative change at each alpha is |v(alpha) - v_ref| / max(|v_ref|, atol); a measure is
    ``invariant`` when the largest one is at most its ``rtol`` (a float, or per-measure mapping
    whose missing names fall back to 1e-6). The verdict is ``undetermined`` when a value is
    missing (non-finite) or the transform did not preserve the function.
    """
    verdicts = []
    for name in sweep["measures"]:
        tol = rtol.get(name, 1e-6) if isinstance(rtol, Mapping) else float(rtol)
        ref = sweep["reference"]["measures"].get(name)
        points = [(row["alpha"], row["measures"].get(name)) for row in sweep["rows"]]
        known = [(a, v) for a, v in points if v is not None]
        changes = [] if ref is None else [(abs(v - ref) / max(abs(ref), atol), a) for a, v in known]
        worst, worst_alpha = max(changes) if changes else (None, None)
        magnitudes = [abs(v) for v in [ref] + [v for _, v in known] if v]
        if not sweep["function_preserved"]:
            verdict = "undetermined"
            reason = f"the transform changed the logits by {sweep['max_abs_logit_change']:.3g}"
        elif ref is None or len(known) < len(points):
            verdict, reason = "undetermined", "non-finite values in the sweep"
        else:
            verdict = "invariant" if worst <= tol else "not invariant"
            reason = f"max relative change {worst:.3g} {'<=' if worst <= tol else '>'} {tol:.3g}"
        verdicts.append(
            {
                "measure": name,
                "verdict": verdict,
                "invariant": None if verdict == "undetermined" else verdict == "invariant",
                "max_rel_change": worst,
                "alpha_of_max_change": worst_alpha,
                "reference_value": ref,
                "min_value": min((v for _, v in known), default=None),
                "max_value": max((v for _, v in known), default=None),
                "fold_range": max(magnitudes) / min(magnitudes) if magnitudes else None,
                "rtol": tol,
                "n_alphas": len(points),
                "reason": reason,
            }
        )
    return verdicts


def sweep_frame(sweep: Mapping[str, Any]) -> pd.DataFrame:
    """Long table (alpha, measure, value, max_abs_logit_change) of a sweep, for plots and CSVs."""
    records = [
        {
            "alpha": row["alpha"],
            "measure": name,
            "value": value,
            "max_abs_logit_change": row["max_abs_logit_change"],
        }
        for row in sweep["rows"]
        for name, value in row["measures"].items()
    ]
    return pd.DataFrame.from_records(
        records, columns=["alpha", "measure", "value", "max_abs_logit_change"]
    )


def dinh_flip(
    model_a: nn.Module,
    model_b: nn.Module,
    measure_fn_scalar: Callable[[nn.Module], float],
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    alphas: Sequence[float] | None = None,
    transform: Transform = "layer",
    dtype: torch.dtype = torch.float64,
    alpha_rtol: float = 1e-3,
) -> dict[str, Any]:
    """Rescale the flatter model A until it is sharper than B; its test accuracy does not move.

    The grid (default 1e-3..1e3) is searched for the alpha closest to 1 (in log distance) at
    which A's measure exceeds B's; bisection in log alpha between 1 and that point then narrows
    the crossing to a relative width ``alpha_rtol``, and ``alpha_flip`` is its sharper end.
    ``ValueError`` if A is not flatter than B to begin with, since then there is nothing to flip.
    """
    alphas = _check_alphas(alphas if alphas is not None else alpha_grid(1e-3, 1e3))
    a, b = _eval_copy(model_a, dtype), _eval_copy(model_b, dtype)
    x = _inputs_like(x_test, a, dtype)
    y = y_test.to(x.device)
    value_a = float(measure_fn_scalar(copy.deepcopy(a)))
    value_b = float(measure_fn_scalar(copy.deepcopy(b)))
    if not value_a < value_b:
        raise ValueError(
            f"model_a must be flatter than model_b under measure_fn_scalar, got "
            f"{value_a:.6g} for A and {value_b:.6g} for B"
        )

    def measure_at(alpha: float) -> float:
        return float(measure_fn_scalar(rescale(a, alpha, transform)))

    curve = [{"alpha": alpha, "measure_a": _finite(measure_at(alpha))} for alpha in alphas]
    sharper = [p["alpha"] for p in curve if p["measure_a"] is not None and p["measure_a"] > value_b]
    acc_a, acc_b = _accuracy(a, x, y), _accuracy(b, x, y)
    result = {
        "transform": transform if isinstance(transform, str) else _callable_name(transform),
        "measure_a": value_a,
        "measure_b": value_b,
        "test_acc_a": acc_a,
        "test_acc_b": acc_b,
        "a_generalizes_better": acc_a > acc_b,
        "curve": curve,
        "flipped": bool(sharper),
        "alpha_flip": None,
        "measure_a_flipped": None,
        "test_acc_a_flipped": None,
        "accuracy_unchanged": None,
        "max_abs_logit_change": None,
    }
    if not sharper:
        return result
    flat_end, sharp_end = 0.0, math.log(min(sharper, key=lambda al: abs(math.log(al))))
    while abs(sharp_end - flat_end) > math.log1p(alpha_rtol):
        middle = 0.5 * (flat_end + sharp_end)
        if measure_at(math.exp(middle)) > value_b:
            sharp_end = middle
        else:
            flat_end = middle
    alpha_flip = math.exp(sharp_end)
    flipped = rescale(a, alpha_flip, transform).eval()
    with torch.no_grad():
        change = float((flipped(x) - a(x)).abs().max())
    acc_flipped = _accuracy(flipped, x, y)
    result.update(
        alpha_flip=alpha_flip,
        measure_a_flipped=_finite(float(measure_fn_scalar(flipped))),
        test_acc_a_flipped=acc_flipped,
        accuracy_unchanged=acc_flipped == acc_a,
        max_abs_logit_change=change,
    )
    return result


def _check_alphas(alphas: Sequence[float]) -> list[float]:
    values = [float(a) for a in alphas]
    if not values or not all(math.isfinite(a) and a > 0 for a in values):
        raise ValueError(f"alphas={list(alphas)}; allowed: a non-empty list of finite values > 0")
    return values


def _eval_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Measures and checks run on an eval-mode copy in ``dtype``: the caller's model is untouched."""
    return copy.deepcopy(model).to(dtype=dtype).eval()


def _inputs_like(x: torch.Tensor, model: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    device = next(model.parameters()).device
    return x.to(device=device, dtype=dtype if x.is_floating_point() else None)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).double().mean())


def _floats(values: Mapping[str, Any]) -> dict[str, float | None]:
    """Measure outputs as JSON numbers: ``.value`` of result objects, non-finite as None."""
    return {str(k): _finite(getattr(v, "value", v)) for k, v in values.items()}


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _callable_name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__
