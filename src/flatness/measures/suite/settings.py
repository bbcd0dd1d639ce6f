"""Measure settings: the defaults, and a validator that fails early with a plain message.

``conf/measures/default.yaml`` holds the same keys (under ``cfg.measures``). The defaults are
sized so that the whole enabled suite costs a few seconds per MNIST-1D MLP (~15k parameters, a
1000-point subset) on two CPU threads; ``conf/measures/full.yaml`` has paper-like settings.

The validator raises ``ValueError`` naming the key, the bad value and what is allowed, for unknown
measures, unknown keys, wrong types and out-of-range values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# A rule is (kind, argument): ("int", minimum), ("float>", exclusive minimum), ("float>=", minimum),
# ("prob", None) for 0 < x < 1, ("bool", None), ("choice", options); "?" after the kind allows null.
_RULES: dict[str, dict[str, tuple[str, Any]]] = {
    "hessian_eigen": {
        "top_k": ("int", 1),
        "max_steps": ("int", 1),
        "tol": ("float>", 0.0),
        "lambda_min_steps": ("int", 0),
        "reuse_graph": ("bool", None),
    },
    "power_iteration": {"top_k": ("int", 1), "max_iter": ("int", 1), "tol": ("float>", 0.0)},
    "hessian_trace": {"method": ("choice", ("hutchinson", "hutchpp")), "n_matvec": ("int", 4)},
    "spectral_density": {"n_probes": ("int", 1), "n_steps": ("int", 1)},
    "keskar": {
        "eps": ("float>", 0.0),
        "maxiter": ("int", 1),
        "full_space": ("bool", None),
        "subspace_dim": ("int", 0),
    },
    "rho_sharpness": {
        "norm": ("choice", ("l2", "linf")),
        "rho": ("float>", 0.0),
        "rho_adaptive": ("float>", 0.0),
        "eta": ("float>=", 0.0),
        "n_steps": ("int", 1),
        "n_restarts": ("int", 1),
        "avg_noise": ("choice", ("gaussian", "uniform")),
        "avg_rho": ("float>", 0.0),
        "avg_rho_adaptive": ("float>", 0.0),
        "n_samples": ("int", 2),
        "batch_size": ("int?", 1),
    },
    "pacbayes": {
        "metric": ("choice", ("error", "loss")),
        "target": ("float>", 0.0),
        "tol": ("float>", 0.0),
        "sigma_max": ("float>", 0.0),
        "depth": ("int", 1),
        "n_draws": ("int", 1),
        "magnitude": ("bool", None),
        "eps": ("float>=", 0.0),
        "n_train": ("int?", 1),
    },
    "sharpness_alpha": {
        "metric": ("choice", ("error", "loss")),
        "target": ("float>", 0.0),
        "tol": ("float>", 0.0),
        "alpha_min": ("float>", 0.0),
        "alpha_max": ("float>", 0.0),
        "depth": ("int", 1),
        "n_restarts": ("int", 1),
        "n_steps": ("int", 1),
        "magnitude": ("bool", None),
        "eps": ("float>=", 0.0),
    },
    "local_entropy": {
        "gamma": ("float>=", 0.0),
        "temperature": ("float>", 0.0),
        "lr": ("float>", 0.0),
        "burn_in": ("int", 0),
        "n_samples": ("int", 2),
        "n_batches": ("int", 2),
    },
    "norms": {"margin_percentile": ("prob100", None)},
}

_GLOBAL_RULES: dict[str, tuple[str, Any]] = {
    "subset_size": ("int", 1),
    "dtype": ("choice", ("float32", "float64")),
    "chunk_size": ("int?", 1),
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "hessian_eigen": {
        "enabled": True,
        "top_k": 5,
        "max_steps": 40,
        "tol": 1e-4,
        "lambda_min_steps": 40,
        "reuse_graph": True,
    },
    "power_iteration": {"enabled": False, "top_k": 1, "max_iter": 100, "tol": 1e-3},
    "hessian_trace": {"enabled": True, "method": "hutchinson", "n_matvec": 50},
    "spectral_density": {"enabled": True, "n_probes": 2, "n_steps": 30},
    "keskar": {
        "enabled": True,
        "eps": 1e-3,
        "maxiter": 10,
        "full_space": True,
        "subspace_dim": 100,
    },
    "rho_sharpness": {
        "enabled": True,
        "norm": "l2",
        "rho": 0.05,
        "rho_adaptive": 0.5,
        "eta": 0.0,
        "n_steps": 10,
        "n_restarts": 1,
        "avg_noise": "gaussian",
        "avg_rho": 0.005,
        "avg_rho_adaptive": 0.05,
        "n_samples": 20,
        "batch_size": None,
    },
    "pacbayes": {
        "enabled": True,
        "metric": "error",
        "target": 0.1,
        "tol": 0.01,
        "sigma_max": 2.0,
        "depth": 15,
        "n_draws": 10,
        "magnitude": True,
        "eps": 1e-3,
        "n_train": None,
    },
    "sharpness_alpha": {
        "enabled": True,
        "metric": "error",
        "target": 0.1,
        "tol": 0.01,
        "alpha_min": 1e-5,
        "alpha_max": 2.0,
        "depth": 10,
        "n_restarts": 1,
        "n_steps": 5,
        "magnitude": True,
        "eps": 1e-3,
    },
    "local_entropy": {
        "enabled": True,
        "gamma": 1.0,
        "temperature": 1e-4,
        "lr": 0.005,
        "burn_in": 100,
        "n_samples": 300,
        "n_batches": 10,
    },
    "norms": {"enabled": True, "margin_percentile": 10.0},
}


def _check(path: str, value: Any, rule: tuple[str, Any]) -> None:
    kind, arg = rule
    if kind.endswith("?"):
        if value is None:
            return
        kind = kind[:-1]
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < arg:
            raise ValueError(f"measures.{path} = {value!r} is invalid: must be an integer >= {arg}")
    elif kind in ("float>", "float>="):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or (value <= arg if kind == "float>" else value < arg):
            op = ">" if kind == "float>" else ">="
            raise ValueError(f"measures.{path} = {value!r} is invalid: must be a number {op} {arg}")
    elif kind == "prob100":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not 0 < value < 100:
            raise ValueError(
                f"measures.{path} = {value!r} is invalid: must be a number in (0, 100)"
            )
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"measures.{path} = {value!r} is invalid: must be true or false")
    elif kind == "choice" and value not in arg:
        raise ValueError(f"measures.{path} = {value!r} is invalid; allowed: {', '.join(arg)}")


def validate_settings(settings: Mapping[str, Any]) -> None:
    """Check a ``measures`` config node; raise ``ValueError`` on the first problem."""
    for key, value in settings.items():
        if key in _GLOBAL_RULES:
            _check(key, value, _GLOBAL_RULES[key])
            continue
        if key not in _RULES:
            allowed = ", ".join([*_GLOBAL_RULES, *_RULES])
            raise ValueError(
                f"measures.{key} is not a known measure or setting; allowed: {allowed}"
            )
        if not isinstance(value, Mapping):
            raise ValueError(
                f"measures.{key} = {value!r} is invalid: must be a mapping of settings"
            )
        rules = _RULES[key]
        for sub, subvalue in value.items():
            if sub == "enabled":
                _check(f"{key}.enabled", subvalue, ("bool", None))
            elif sub == "chunk_size":  # a per-measure override of the global chunk size
                _check(f"{key}.chunk_size", subvalue, _GLOBAL_RULES["chunk_size"])
            elif sub not in rules:
                allowed = ", ".join(["enabled", "chunk_size", *rules])
                raise ValueError(f"measures.{key}.{sub} is not a known setting; allowed: {allowed}")
            else:
                _check(f"{key}.{sub}", subvalue, rules[sub])
    if "sharpness_alpha" in settings:
        block = {**DEFAULTS["sharpness_alpha"], **settings["sharpness_alpha"]}
        if block["alpha_min"] >= block["alpha_max"]:
            raise ValueError(
                f"measures.sharpness_alpha.alpha_min = {block['alpha_min']!r} is invalid: "
                f"must be below alpha_max = {block['alpha_max']!r}"
            )
    if "local_entropy" in settings:
        block = {**DEFAULTS["local_entropy"], **settings["local_entropy"]}
        if block["n_samples"] < block["n_batches"]:
            raise ValueError(
                f"measures.local_entropy.n_samples = {block['n_samples']!r} is invalid: "
                f"must be >= n_batches = {block['n_batches']!r}"
            )


def block(settings: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A measure's settings: defaults overlaid with the given block (as a plain dict)."""
    given = settings.get(name) or {}
    return {**DEFAULTS[name], **dict(given)}
