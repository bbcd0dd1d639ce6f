"""Run configs: composition (Hydra compose API), validation, and the run-id hash.

``conf/`` is the single source of truth. The Snakefile and the tests compose run configs through
``compose_run``; ``python -m flatness.training`` composes the same files through ``@hydra.main``. Both
call ``validate`` before any work starts, so a bad value fails with a message that names the key,
the value and what is allowed, and nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from flatness.base import (
    CONF_DIR,
    CORRUPTION_TYPES,
    DATASET_NAMES,
    MODEL_NAMES,
    ConfigError,
    digest,
)

# Keys that say where and how a run is recorded, not what it computes: left out of the run id.
BOOKKEEPING_KEYS = ("out_dir", "device", "progress", "resume", "tracking", "measures", "hydra")
BOOKKEEPING_SUBKEYS = (("train", "checkpoint_every"), ("data", "root"))

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "step", "exponential")
TRACKING_MODES = ("offline", "online", "disabled")
DEVICES = ("auto", "cpu", "cuda")


def compose_run(overrides: Sequence[str] = (), conf_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides, resolve it and validate it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(conf_dir or CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    cfg = resolved(cfg)
    validate(cfg)
    return cfg


def resolved(cfg: DictConfig) -> DictConfig:
    """A resolved, struct-mode copy without the ``hydra`` node (not part of a run)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    out = OmegaConf.create(container)
    OmegaConf.set_struct(out, True)
    return out


def plain(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """A config as plain, resolved data (a fresh copy: the caller's config is never changed)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return copy_data(cfg)


def copy_data(obj: Any) -> Any:
    """A deep copy of plain config data (dicts, lists, scalars); much faster than copy.deepcopy."""
    kind = type(obj)
    if kind is dict or (kind not in _SCALARS and isinstance(obj, Mapping)):
        return {k: copy_data(v) for k, v in obj.items()}
    if kind is list or kind is tuple:
        return [copy_data(v) for v in obj]
    return obj


_SCALARS = frozenset((str, int, float, bool, type(None)))


def select(c: Mapping, key: str, default: Any = None) -> Any:
    """``c["a"]["b"]`` for ``key`` ``"a.b"`` in plain config data; ``default`` when missing."""
    node: Any = c
    for part in key.split("."):
        # a plain dict skips the slow ABC check: a study validates ~40 keys of each of 10^4 runs
        if not (type(node) is dict or isinstance(node, Mapping)) or part not in node:
            return default
        node = node[part]
    return node


def result_config(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """The part of a config that determines a run's results (everything but bookkeeping), as a
    fresh copy."""
    return copy_data(result_view(cfg))


def result_view(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """``result_config`` without the copy: a new top-level dict that shares ``cfg``'s nodes, for
    hashing (a study hashes each of 10^4 configs three times); never mutate it, copy it."""
    c = plain(cfg) if isinstance(cfg, DictConfig) else cfg
    view = {k: v for k, v in c.items() if k not in BOOKKEEPING_KEYS}
    for section, key in BOOKKEEPING_SUBKEYS:
        node = view.get(section)
        if isinstance(node, Mapping) and key in node:
            view[section] = {k: v for k, v in node.items() if k != key}
    return view


def run_id(cfg: DictConfig | Mapping) -> str:
    """Hash of the result-determining config: names the run folder, so stale results can't be reused."""
    return digest(result_view(cfg))


def group_id(cfg: DictConfig | Mapping) -> str:
    """The run id with the seed removed: seeds of one configuration share a W&B group."""
    c = result_view(cfg)  # a new top-level dict: popping from it changes nothing else
    c.pop("seed", None)
    return digest(c)


# ---- validation -----------------------------------------------------------------------------

Check = Callable[[Any], bool]


def _one_of(choices: Sequence[str]) -> tuple[Check, str]:
    return (lambda v: v in choices), f"one of {', '.join(map(str, choices))}"


_INT = (int,)
_NUM = (int, float)
_RULES: dict[str, tuple[tuple[type, ...], bool, Check, str]] = {
    # key: (types, nullable, predicate, what is allowed)
    "seed": (_INT, False, lambda v: v >= 0, "an integer >= 0"),
    "device": ((str,), False, *_one_of(DEVICES)),
    "data.name": ((str,), False, *_one_of(DATASET_NAMES)),
    "data.n_train": (_INT, True, lambda v: v > 0, "null or an integer > 0"),
    "data.n_test": (_INT, True, lambda v: v > 0, "null or an integer > 0"),
    "data.augment": ((bool,), False, lambda v: True, "true or false"),
    "data.augment_shift": (_INT, False, lambda v: v >= 0, "an integer >= 0"),
    "data.corruption.type": ((str,), False, *_one_of(CORRUPTION_TYPES)),
    "data.corruption.fraction": (_NUM, False, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "data.corruption.apply_to_test": ((bool,), False, lambda v: True, "true or false"),
    "model.name": ((str,), False, *_one_of(MODEL_NAMES)),
    "model.depth": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "model.width": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "model.batch_norm": ((bool,), False, lambda v: True, "true or false"),
    "model.dropout": (_NUM, False, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.name": ((str,), False, *_one_of(OPTIMIZERS)),
    "optim.lr": (_NUM, False, lambda v: v > 0, "a number > 0"),
    "optim.momentum": (_NUM, False, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.weight_decay": (_NUM, False, lambda v: v >= 0, "a number >= 0"),
    "optim.schedule": ((str,), False, *_one_of(SCHEDULES)),
    "optim.step_every": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "optim.gamma": (_NUM, False, lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "optim.warmup_epochs": (_INT, False, lambda v: v >= 0, "an integer >= 0"),
    "train.epochs": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "train.steps": (_INT, True, lambda v: v >= 1, "null or an integer >= 1"),
    "train.batch_size": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "train.target_train_loss": (_NUM, True, lambda v: v > 0, "null or a number > 0"),
    "train.stop_at_full_accuracy": ((bool,), False, lambda v: True, "true or false"),
    "train.eval_every": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "train.checkpoint_every": (_INT, False, lambda v: v >= 1, "an integer >= 1"),
    "train.divergence_factor": (_NUM, True, lambda v: v > 1, "null or a number > 1"),
    "resume": ((str,), False, *_one_of(("auto", "restart"))),
    "tracking.mode": ((str,), False, *_one_of(TRACKING_MODES)),
    "progress": ((bool, str), False, lambda v: v in (True, False, "auto"), "auto, true or false"),
}


def validate(cfg: DictConfig | Mapping) -> None:
    """Raise ``ConfigError`` for the first value of the wrong type or out of range.

    Works on plain data (a study expands thousands of runs as dicts); a DictConfig is converted."""
    c = plain(cfg) if isinstance(cfg, DictConfig) else cfg
    for key, (types, nullable, ok, allowed) in _RULES.items():
        value = select(c, key, default=_MISSING)
        if value is _MISSING:
            raise ConfigError(f"{key} is missing from the config; allowed: {allowed}")
        if value is None and nullable:
            continue
        is_bool = isinstance(value, bool)
        type_ok = isinstance(value, types) and (bool in types or not is_bool)
        if not type_ok or not ok(value):
            raise ConfigError(f"{key}={value!r} is not allowed; allowed: {allowed}")
    data = c["data"]
    if data["name"] in ("mnist", "cifar10") and data.get("root") is None:
        raise ConfigError(
            f"data.root=None is not allowed for data.name={data['name']}; allowed: a local folder "
            "in torchvision's layout (or set FLATNESS_DATA_ROOT)"
        )
    if data.get("n_train") is not None:
        check_batch_size(c, int(data["n_train"]))
    _validate_measures(c["measures"])


def check_batch_size(cfg: DictConfig | Mapping, n_train: int) -> None:
    """A batch larger than the training set would silently train full-batch while the config and
    the tables record the larger size; called by ``validate`` (``data.n_train`` set) and again
    right after the data set is loaded (its actual size)."""
    batch = cfg["train"]["batch_size"]  # item access works on DictConfig and plain dicts alike
    if batch > n_train:
        raise ConfigError(
            f"train.batch_size={batch} is not allowed: the training set has "
            f"{n_train} examples (data.n_train={cfg['data'].get('n_train')}); allowed: an integer in "
            f"[1, {n_train}]"
        )


_MISSING = object()


# Measure settings already found valid, as sorted JSON (which keeps 1, 1.0 and true apart): a
# study's runs nearly all share one block, and checking it once, not once per run, saves about a
# second per 10^4 runs.
_VALID_MEASURES: set[str] = set()


def _validate_measures(measures: Mapping) -> None:
    try:
        text = json.dumps(measures, sort_keys=True)
    except (TypeError, ValueError):  # not JSON data: validate_settings names the bad value
        text = None
    if text in _VALID_MEASURES:
        return
    # the settings module alone: the measure algorithms (and scipy) are the measure stage's cost
    from flatness.measures.suite.settings import validate_settings

    try:
        validate_settings(measures)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if text is not None and len(_VALID_MEASURES) < 1024:
        _VALID_MEASURES.add(text)
