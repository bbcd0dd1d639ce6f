"""Claims decided from the reparam and landscape stages' numbers: Dinh's rescaling ("dinh") and
mode connectivity over several seed pairs ("mode"). The stages write numbers; the decision is here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flatness.analysis._verdict_base import (
    CONTRADICTED,
    INCONCLUSIVE,
    REPRODUCED,
    Counts,
    Verdict,
    decide,
    inconclusive,
    interval_text,
    verdict,
)
from flatness.analysis.claims import CLAIMS
from flatness.analysis.stats import Interval, mean_interval


def dinh_rescaling(models: Sequence[Mapping]) -> Verdict:
    """Deterministic: every model's rescaling must keep the logits (the reparam stage's
    float64 check, ``function_preserved``) and move lambda_max by more than the declared fold range; contradicted when the logits are
    kept and lambda_max moves by less in every model; inconclusive if the logits moved (the
    rescaling itself failed, so nothing is learned about sharpness) or there is no model.

    ``models``: per rescaled model ``{"max_abs_logit_change", "function_preserved",
    "fold_range_lambda_max"}``.
    """
    counts = Counts(len(models))
    if not models:
        return inconclusive("dinh", counts, "no rescaled model to judge.")
    change = max(m["max_abs_logit_change"] for m in models)
    folds = [m["fold_range_lambda_max"] for m in models if m["fold_range_lambda_max"] is not None]
    numbers = {"max_abs_logit_change": change, "fold_ranges_lambda_max": folds}
    if not all(m["function_preserved"] for m in models) or len(folds) < len(models):
        why = f"the rescaling moved the logits (by up to {change:.2g}) or gave no lambda_max."
        return inconclusive("dinh", counts, why, numbers)
    claim = CLAIMS["dinh"]
    outcome = (REPRODUCED if min(folds) > claim.threshold
               else CONTRADICTED if max(folds) < claim.contradict_at else INCONCLUSIVE)  # fmt: skip
    finding = (
        f"Over {len(models)} model(s), layer-wise alpha-scaling changed the logits by at most "
        f"{change:.2g} while lambda_max moved by a factor of {min(folds):.3g} to {max(folds):.3g} "
        "across the alpha grid."
    )
    iv = Interval(min(folds), min(folds), max(folds), 0.0, np.inf)
    return verdict("dinh", counts, outcome, finding, numbers, iv)


def mode_connectivity(pairs: Sequence[Mapping]) -> Verdict:
    """Garipov et al.: the trained Bezier curve's barrier above the endpoints' loss (max_t L(t)
    minus the straight interpolation of the two endpoint losses) is near zero. The mean over seed
    pairs gets a t interval; reproduced when it is below the declared margin, contradicted when
    above. The straight line's barrier is printed for contrast, not used as the yardstick.

    ``pairs``: per seed pair ``{"curve_barrier", "linear_barrier"}``.
    """
    curve = np.array([p["curve_barrier"] for p in pairs], dtype=float)
    linear = np.array([p["linear_barrier"] for p in pairs], dtype=float)
    finite = np.isfinite(curve) & np.isfinite(linear)
    counts = Counts(2 * int(finite.sum()), diverged=2 * int((~finite).sum()))
    curve, linear = curve[finite], linear[finite]
    numbers = {"n_pairs": int(finite.sum()), "curve_barriers": curve.tolist(),
               "linear_barriers": linear.tolist()}  # fmt: skip
    if curve.size < 2:
        return inconclusive("mode", counts, f"{curve.size} seed pair(s); need >= 2.", numbers)
    iv = mean_interval(curve)
    finding = (
        f"Over {curve.size} seed pairs the trained curve's barrier is {interval_text(iv)} "
        f"(straight line: mean {linear.mean():.3g})."
    )
    return verdict("mode", counts, decide(CLAIMS["mode"], iv.low, iv.high), finding, numbers, iv)


__all__ = ["INCONCLUSIVE", "dinh_rescaling", "mode_connectivity"]
