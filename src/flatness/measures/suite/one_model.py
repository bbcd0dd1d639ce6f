"""Running the enabled measures on one model, with per-measure seeds and a fixed data subset.

- ``select_subset`` draws a fixed, seeded subset and records its row indices (logged by the caller).
- ``run_suite`` validates the settings, then runs every measure whose block has ``enabled: true``,
  each with its own seed derived from the run seed and the measure name through SHA-256 (stable
  across processes and Python versions, unlike ``hash()``), so enabling or disabling one measure
  never changes another's random draws. The results are flattened into one ``name -> result``
  mapping (``RESULT_NAMES`` gives the names per measure).
- ``results_to_json`` makes that mapping JSON-ready (NaN/inf become null; see ``MeasureResult``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from flatness.io import to_jsonable
from flatness.seeds import derive_seed

from ..core.interface import MeasureContext, MeasureData, MeasureResult
from .registry import MEASURES
from .settings import DEFAULTS, validate_settings

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def select_subset(x: torch.Tensor, y: torch.Tensor, n: int, seed: int) -> MeasureData:
    """``n`` rows drawn without replacement by a local generator (all rows if ``n >= len``).

    The indices are sorted and kept in ``MeasureData.indices``.
    """
    if n < 1:
        raise ValueError(f"measures.subset_size = {n!r} is invalid: must be an integer >= 1")
    total = int(y.shape[0])
    if x.shape[0] != total:
        raise ValueError(f"x has {x.shape[0]} rows but y has {total}")
    if n >= total:
        idx = torch.arange(total)
    else:
        gen = torch.Generator().manual_seed(derive_seed(seed, "subset"))
        idx = torch.randperm(total, generator=gen)[:n].sort().values
    idx_dev = idx.to(x.device)
    return MeasureData(x[idx_dev], y[idx_dev.to(y.device)], idx)


def make_context(
    settings: Mapping[str, Any], *, init_model: nn.Module | None = None, device: str = "cpu"
) -> MeasureContext:
    """A context whose dtype comes from ``settings.dtype`` (default float64)."""
    dtype = settings.get("dtype", "float64")
    if dtype not in _DTYPES:
        raise ValueError(f"measures.dtype = {dtype!r} is invalid; allowed: float32, float64")
    return MeasureContext(init_model=init_model, device=device, dtype=_DTYPES[dtype])


def enabled_measures(settings: Mapping[str, Any]) -> list[str]:
    """Measures whose block says ``enabled: true`` (absent blocks: the default)."""
    out = []
    for name in MEASURES:
        given = settings.get(name) or {}
        if given.get("enabled", DEFAULTS[name]["enabled"]):
            out.append(name)
    return out


def run_suite(
    model: nn.Module,
    data: MeasureData,
    settings: Mapping[str, Any],
    seed: int,
    context: MeasureContext,
) -> dict[str, MeasureResult]:
    """Run the enabled measures; returns ``{result name: MeasureResult}`` in registry order."""
    validate_settings(settings)
    chunk_size = settings.get("chunk_size")
    results: dict[str, MeasureResult] = {}
    for name in enabled_measures(settings):
        block = dict(settings.get(name) or {})
        block.setdefault("chunk_size", chunk_size)
        for result in MEASURES[name](model, data, block, derive_seed(seed, name), context):
            if result.name in results:
                raise RuntimeError(f"two measures returned a result named {result.name!r}")
            results[result.name] = result
    return results


def results_to_json(results: Mapping[str, MeasureResult]) -> dict[str, Any]:
    """``{name: result.to_dict()}`` with NaN/inf as null and tensors/arrays as lists."""
    return {name: to_jsonable(result.to_dict()) for name, result in results.items()}
