"""Flatness, sharpness and norm measures of trained networks (see ``core.interface``).

Three layers, each importing only from those below it:

- ``core``: the matvec and objective core (the loss over a fixed subset as a function of a flat
  parameter vector, Hessian-vector products, the stacked operator of a group);
- ``algorithms``: Lanczos / power iteration, Hutchinson / Hutch++ / SLQ, Keskar's L-BFGS-B search,
  rho ascent, sigma' / alpha' bisections, SGLD local entropy, norms;
- ``suite``: the adapters into the pipeline (settings, registry, per-measure callables, the
  one-model and group runners, results to JSON, the spectral density plot).

This module is the package's interface: what the stages use. Its names are imported on first
use (PEP 562), so that importing a submodule (``suite.settings``, which config validation needs)
does not import the algorithms, scipy and matplotlib, a second of start-up in every training process.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {  # name -> the submodule that defines it
    "MeasureContext": ".core.interface",
    "MeasureData": ".core.interface",
    "MeasureResult": ".core.interface",
    "plot_spectral_density": ".suite.density_plot",
    "slq_from_details": ".suite.density_plot",
    "STACKED": ".suite.group",
    "run_group_suite": ".suite.group",
    "derive_seed": ".suite.one_model",
    "enabled_measures": ".suite.one_model",
    "make_context": ".suite.one_model",
    "results_to_json": ".suite.one_model",
    "run_suite": ".suite.one_model",
    "select_subset": ".suite.one_model",
    "MEASURES": ".suite.registry",
    "RESULT_NAMES": ".suite.registry",
    "DEFAULTS": ".suite.settings",
    "validate_settings": ".suite.settings",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name], __name__), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
