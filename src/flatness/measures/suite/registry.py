"""The measures as uniform callables: ``(model, data, settings, seed, context) -> results``.

Every entry of ``MEASURES`` returns a **tuple** of ``MeasureResult`` (one run of Lanczos yields both
lambda_max and lambda_min; the norm block yields a dozen numbers from one pass), and ``RESULT_NAMES``
lists, per measure, the result names it always returns, so tables get stable columns. Each call
builds its own ``Objective`` (a private deep copy of the model on ``context.device`` in
``context.dtype``), so measures are independent of each other and of the caller's model. ``settings``
is the measure's own block; missing keys take ``settings.DEFAULTS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..algorithms.norms import norm_values
from ..core.interface import MeasureContext, MeasureData
from .bookkeeping import MeasureRun, Results
from .hessian_measures import (
    hessian_eigen,
    hessian_trace,
    power_iteration_measure,
    spectral_density,
)
from .perturbation_measures import keskar, local_entropy, pacbayes, rho_sharpness, sharpness_alpha

Measure = Callable[[nn.Module, MeasureData, Mapping[str, Any], int, MeasureContext], Results]


def norms(model, data, settings, seed, context) -> Results:
    r = MeasureRun("norms", model, data, settings, context)
    values = norm_values(
        r.obj.model,
        r.obj.x,
        r.obj.y,
        init_model=context.init_model,
        percentile=r.s["margin_percentile"],
    )
    out = []
    for name, value in values.items():
        extra = (
            {"skipped": "no context.init_model"}
            if name == "dist_init" and math.isnan(value)
            else {}
        )
        out.append(r.result(name, value, percentile=r.s["margin_percentile"], **extra))
    return tuple(out)


MEASURES: dict[str, Measure] = {
    "hessian_eigen": hessian_eigen,
    "power_iteration": power_iteration_measure,
    "hessian_trace": hessian_trace,
    "spectral_density": spectral_density,
    "keskar": keskar,
    "rho_sharpness": rho_sharpness,
    "pacbayes": pacbayes,
    "sharpness_alpha": sharpness_alpha,
    "local_entropy": local_entropy,
    "norms": norms,
}

RESULT_NAMES: dict[str, tuple[str, ...]] = {
    "hessian_eigen": ("lambda_max", "lambda_min"),
    "power_iteration": ("lambda_max_power",),
    "hessian_trace": ("hessian_trace",),
    "spectral_density": ("slq_trace",),
    "keskar": ("keskar_full", "keskar_subspace"),
    "rho_sharpness": (
        "sharpness_worst",
        "sharpness_worst_adaptive",
        "sharpness_avg",
        "sharpness_avg_adaptive",
    ),
    "pacbayes": ("pacbayes_flatness", "pacbayes_mag_flatness"),
    "sharpness_alpha": ("sharpness_flatness", "sharpness_mag_flatness"),
    "local_entropy": ("local_energy_gap", "local_displacement"),
    "norms": (
        "margin",
        "inverse_margin",
        "frobenius_sum",
        "log_prod_frobenius",
        "log_prod_frobenius_margin",
        "log_prod_spectral",
        "log_prod_spectral_margin",
        "path_norm",
        "path_norm_margin",
        "fisher_rao",
        "fisher_rao_empirical",
        "dist_init",
    ),
}
