"""Validation of a study file (``conf/study/<name>.yaml``) before any run is expanded or started.

Run values are checked per run by ``flatness.config.validate``; this module checks what only the
study file says: its keys, the shape of every grid and sweep, and the ``stages:`` block, which the
workflow reads at DAG time and the stages read only after every run has trained. Every message
names the study and the full key path, the value and what is allowed, e.g.
``study default: stages.reparam.alphas[1]=0 is not allowed; allowed: numbers > 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flatness.base import ConfigError

FAMILIES = ("random_labels", "regularizers", "width", "concentration", "generalization", "other")
STUDY_KEYS = (
    "name", "description", "seeds", "overrides", "grids", "stages", "allow_gaps", "group_size",
)  # fmt: skip
GRID_KEYS = ("family", "overrides", "sweep", "seeds")
STAGE_KEYS = ("measures", "reparam", "landscape")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _grid_name(grids: Mapping) -> tuple[Callable[[Any], bool], str]:
    names = ", ".join(grids)
    return (lambda v: v is None or v in grids), f"null (all runs) or a grid of this study: {names}"


# stage -> key -> (check, what is allowed); a grid-name check is filled in per study
_STAGE_RULES: dict[str, dict[str, tuple[Callable[[Any], bool], str] | None]] = {
    "reparam": {
        "grid": None,
        "n_runs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "alphas": (lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list of numbers > 0"),
    },
    "landscape": {
        "grid": None,
        "bezier_steps": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "n_pairs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),  # seed pairs joined
    },
}


def fail(where: str, key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{where}: {key}={value!r} is not allowed; allowed: {allowed}")


def check_keys(where: str, node: Mapping, allowed: tuple[str, ...], prefix: str = "") -> None:
    unknown = [k for k in node if k not in allowed]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {prefix + str(unknown[0])!r}; allowed keys: {', '.join(allowed)}"
        )


def check_study(name: str, spec: Mapping) -> None:
    """Raise ``ConfigError`` for the first problem of a study file (``spec``: plain data)."""
    where = f"study {name}"
    check_keys(where, spec, STUDY_KEYS)
    _check_seeds(where, "seeds", spec.get("seeds", [0]))
    _check_overrides(where, "overrides", spec.get("overrides", []))
    grids = spec.get("grids")
    if not isinstance(grids, Mapping) or not grids:
        raise fail(where, "grids", grids, "a mapping of at least one grid name to its grid")
    for grid_name, grid in grids.items():
        _check_grid(where, f"grids.{grid_name}", grid)
    _check_stages(where, spec.get("stages") or {}, grids)
    if not isinstance(spec.get("allow_gaps", False), bool):
        raise fail(where, "allow_gaps", spec["allow_gaps"], "true or false")
    if not isinstance(spec.get("description", ""), str):
        raise fail(where, "description", spec["description"], "a string")


def check_group_size(name: str, group_size: Any) -> int:
    if not _is_int(group_size) or group_size < 1:
        raise fail(f"study {name}", "group_size", group_size,
                   "an integer >= 1 (1: one process per run)")  # fmt: skip
    return group_size


def _check_grid(where: str, path: str, grid: Any) -> None:
    if not isinstance(grid, Mapping):
        raise fail(where, path, grid, f"a mapping with keys {', '.join(GRID_KEYS)}")
    check_keys(where, grid, GRID_KEYS, prefix=f"{path}.")
    family = grid.get("family", "other")
    if family not in FAMILIES:
        raise fail(where, f"{path}.family", family, ", ".join(FAMILIES))
    _check_overrides(where, f"{path}.overrides", grid.get("overrides", []))
    if "seeds" in grid:
        _check_seeds(where, f"{path}.seeds", grid["seeds"])
    sweep = grid.get("sweep") or {}
    if not isinstance(sweep, Mapping):
        raise fail(where, f"{path}.sweep", sweep, "a mapping of config keys to lists of values")
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise fail(where, f"{path}.sweep.{key}", values, "a non-empty list of values")


def _check_seeds(where: str, path: str, seeds: Any) -> None:
    if not isinstance(seeds, list) or not seeds:
        raise fail(where, path, seeds, "a non-empty list of integers >= 0")
    for i, seed in enumerate(seeds):
        if not _is_int(seed) or seed < 0:
            raise fail(where, f"{path}[{i}]", seed, "integers >= 0")


def _check_overrides(where: str, path: str, overrides: Any) -> None:
    if not isinstance(overrides, list):
        raise fail(where, path, overrides, "a list of Hydra overrides (key=value)")
    for i, override in enumerate(overrides):
        if not isinstance(override, str) or ("=" not in override and not override.startswith("~")):
            raise fail(where, f"{path}[{i}]", override, "Hydra overrides such as optim.lr=0.1")


def _check_stages(where: str, stages: Any, grids: Mapping) -> None:
    if not isinstance(stages, Mapping):
        raise fail(where, "stages", stages, f"a mapping with keys {', '.join(STAGE_KEYS)}")
    check_keys(where, stages, STAGE_KEYS, prefix="stages.")
    if not isinstance(stages.get("measures", True), bool):
        raise fail(where, "stages.measures", stages["measures"], "true or false")
    for stage, rules in _STAGE_RULES.items():
        block = stages.get(stage)
        if block is None or block is False:
            continue
        if not isinstance(block, Mapping):
            raise fail(where, f"stages.{stage}", block,
                       f"null, false or a mapping with keys {', '.join(rules)}")  # fmt: skip
        check_keys(where, block, tuple(rules), prefix=f"stages.{stage}.")
        for key, value in block.items():
            ok, allowed = rules[key] or _grid_name(grids)
            if not ok(value):
                raise fail(where, f"stages.{stage}.{key}", value, allowed)
        for i, alpha in enumerate(block.get("alphas", [])):
            if not _is_number(alpha) or alpha <= 0:
                raise fail(where, f"stages.{stage}.alphas[{i}]", alpha, "numbers > 0")
