"""Flatness, sharpness and norm measures of trained networks (see ``base`` for the interface).

Layers, bottom to top: ``objective`` (the loss as a function of a flat parameter vector, on a
private eval-mode copy of the model), ``operators`` (Hessian-vector products), the algorithms
(``eigen``, ``trace``, ``density``, ``sharpness``, ``pacbayes``, ``entropy``, ``norms``), and
``registry`` / ``suite`` (uniform callables, per-measure seeds, the config-driven run).
"""

from .base import MeasureContext, MeasureData, MeasureResult
from .registry import MEASURES, RESULT_NAMES
from .settings import DEFAULTS, validate_settings
from .suite import (
    derive_seed,
    enabled_measures,
    make_context,
    results_to_json,
    run_suite,
    select_subset,
)

__all__ = [
    "DEFAULTS",
    "MEASURES",
    "RESULT_NAMES",
    "MeasureContext",
    "MeasureData",
    "MeasureResult",
    "derive_seed",
    "enabled_measures",
    "make_context",
    "results_to_json",
    "run_suite",
    "select_subset",
    "validate_settings",
]
