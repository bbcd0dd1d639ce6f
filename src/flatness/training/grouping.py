"""Which runs of a study train together in one process (study key ``group_size``).

Runs can share a vectorized loop (the stacked engine, ``stacked_step``) when they differ only in what that loop
varies per run: the seed (init, data order, dropout, corruption draw), the optimizer's scalars
(lr, weight decay, momentum, schedule), the corruption, the augmentation switch and the stopping
rules. Everything else (architecture, data set and size, batch size, optimizer type, device) forms
the *group key*. Runs with one key are cut, in study order, into balanced groups of at most
``group_size``; a group is named by the hash of its members' run ids, so the grouping is
deterministic and a group whose membership changes gets a new name (its rule reruns).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Dotted keys a group may vary per run (the stacked engine trains them exactly as alone).
PER_RUN_KEYS = (
    "seed",
    "optim.lr",
    "optim.weight_decay",
    "optim.momentum",
    "optim.schedule",
    "optim.step_every",
    "optim.gamma",
    "optim.warmup_epochs",
    "data.corruption",
    "data.augment",
    "data.augment_shift",
    "train.epochs",
    "train.steps",
    "train.target_train_loss",
    "train.stop_at_full_accuracy",
    "train.eval_every",
)


def group_key(cfg: Any) -> str:
    """The hash of what runs of one group must share (the run config less ``PER_RUN_KEYS``).

    ``cfg``: a run config, plain data or a DictConfig (imported here, not at the top: a
    Snakemake process that reads a cached study groups it without importing torch)."""
    from flatness.config import digest, result_view

    c = result_view(cfg)  # shares cfg's nodes: _without copies only the dicts it changes
    for dotted in PER_RUN_KEYS:
        c = _without(c, dotted.split("."))
    c["device"] = cfg["device"]  # bookkeeping for run ids, but one group runs on one device
    return digest(c)


def _without(node: Any, path: list[str]) -> Any:
    """``node`` less the key at ``path``, copying only the dicts along it; ``node`` is unchanged."""
    head, *rest = path
    if not isinstance(node, Mapping) or head not in node:
        return node
    out = dict(node)
    if rest:
        out[head] = _without(node[head], rest)
    else:
        del out[head]
    return out


def make_groups(
    runs: Mapping, size: int, keys: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """Group name -> run ids, for ``runs`` (run id -> spec with ``.config``) in their order.

    ``keys`` (run id -> ``group_key``), where given, saves hashing every config again.
    With ``size`` 1 every run is its own group. A key with k runs is split into ceil(k / size)
    groups of near-equal size (16 runs with size 12 give 8 + 8, not 12 + 4).
    """
    from flatness.base import digest  # no torch: naming groups of a cached study stays cheap

    if size < 1:
        raise ValueError(f"group_size={size!r} is not allowed; allowed: an integer >= 1")
    buckets: dict[str, list[str]] = {}
    for rid, spec in runs.items():
        key = keys[rid] if keys and rid in keys else group_key(spec.config)
        buckets.setdefault(key, []).append(rid)
    groups: dict[str, list[str]] = {}
    for members in buckets.values():
        n_groups = math.ceil(len(members) / size)
        base, extra = divmod(len(members), n_groups)
        start = 0
        for i in range(n_groups):
            chunk = members[start : start + base + (i < extra)]
            start += len(chunk)
            name = digest(chunk)
            groups[name] = chunk
    return groups


def check_compatible(cfgs, models, splits, n: int, batch: int) -> None:
    """Runs of a group must share what the vectorized loop cannot vary per run."""
    shapes = {k: tuple(v.shape) for k, v in models[0].state_dict().items()}
    for c, m, s in zip(cfgs, models, splits, strict=True):
        if {k: tuple(v.shape) for k, v in m.state_dict().items()} != shapes:
            raise ValueError(f"seed={c.seed}: the model's layers differ from the group's first run")
        if int(c.train.batch_size) != batch:
            raise ValueError(f"train.batch_size={c.train.batch_size} differs within the group "
                             f"(first run: {batch}); allowed: one batch size per group")  # fmt: skip
        sizes = (len(s.y_train), tuple(s.x_train.shape[1:]), tuple(s.x_test.shape))
        first = (n, tuple(splits[0].x_train.shape[1:]), tuple(splits[0].x_test.shape))
        if sizes != first:
            raise ValueError(f"seed={c.seed}: data shapes {sizes} differ from the group's {first}")
