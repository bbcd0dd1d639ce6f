"""Flatness, sharpness and norm measures of trained networks (see ``core.interface``).

Three layers, each importing only from those below it:

- ``core``: the matvec and objective core (the loss over a fixed subset as a function of a flat
  parameter vector, Hessian-vector products, the stacked operator of a group);
- ``algorithms``: Lanczos / power iteration, Hutchinson / Hutch++ / SLQ, Keskar's L-BFGS-B search,
  rho ascent, sigma' / alpha' bisections, SGLD local entropy, norms;
- ``suite``: the adapters into the pipeline (settings, registry, per-measure callables, the
  one-model and group runners, results to JSON, the spectral density plot).

This module is the package's interface: what the stages use.
"""

from .core.interface import MeasureContext, MeasureData, MeasureResult
from .suite.density_plot import plot_spectral_density, slq_from_details
from .suite.group import STACKED, run_group_suite
from .suite.one_model import (
    derive_seed,
    enabled_measures,
    make_context,
    results_to_json,
    run_suite,
    select_subset,
)
from .suite.registry import MEASURES, RESULT_NAMES
from .suite.settings import DEFAULTS, validate_settings

__all__ = [
    "DEFAULTS",
    "MEASURES",
    "RESULT_NAMES",
    "STACKED",
    "MeasureContext",
    "MeasureData",
    "MeasureResult",
    "derive_seed",
    "enabled_measures",
    "make_context",
    "plot_spectral_density",
    "results_to_json",
    "run_group_suite",
    "run_suite",
    "select_subset",
    "slq_from_details",
    "validate_settings",
]
