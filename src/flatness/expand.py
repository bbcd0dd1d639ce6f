"""Run configs for many override lists, composing with Hydra once per structural variant.

Hydra's compose plus OmegaConf node creation cost about 45 ms per run, which made a 2,187-run
study take 98 s to expand and a 20,000-run study never finish ``snakemake -n``. Here Hydra composes
once per set of *structural* overrides (config-group choices such as ``optim=adam``, ``+``/``~``
edits, ``hydra`` keys); the plain ``key=value`` overrides are then applied to a plain-dict copy of
that composition, in order, exactly as Hydra applies them after composing (each override string is
parsed once by Hydra's own override parser, so values mean the same). A run whose overrides Hydra
would treat specially (a mapping value, an interpolation, a key an interpolation reads) goes through
OmegaConf as before. ``tests/test_study.py`` checks the result against ``compose_run`` per run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from flatness.base import ConfigError
from flatness.config import copy_data, plain, resolved


class ValueOverride:
    """One parsed ``key=value`` override: ``key`` dotted, ``value`` as Hydra parses it."""

    __slots__ = ("key", "parts", "text", "value")

    def __init__(self, key: str, value: Any, text: str):
        self.key, self.parts, self.value, self.text = key, key.split("."), value, text


class Expander:
    """Turns override lists into resolved run configs (plain dicts), memoizing Hydra's work."""

    def __init__(self, compose, conf_dir: Path):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self._compose = compose  # hydra.compose, inside an initialize_config_dir context
        self._groups = {p.name for p in Path(conf_dir).iterdir() if p.is_dir()}
        self._parser = OverridesParser.create()
        self._parsed: dict[str, ValueOverride | None] = {}
        self._variants: dict[tuple[str, ...], _Variant] = {}

    def config(self, overrides: Sequence[str]) -> dict[str, Any]:
        """The resolved run config for ``overrides`` (not yet validated), without ``hydra``."""
        parsed = [(o, self._parse(o)) for o in overrides]
        structural = tuple(o for o, p in parsed if p is None)
        values = [p for _, p in parsed if p is not None]
        variant = self._variants.get(structural)
        if variant is None:
            variant = self._variants[structural] = _Variant(self._compose(list(structural)))
        return variant.apply(values)

    def _parse(self, override: str) -> ValueOverride | None:
        """A plain value override, or None for one Hydra must compose (group choice, +, ~...)."""
        if override not in self._parsed:
            o = self._parser.parse_override(override)
            key = o.key_or_group
            plain_value = (
                not o.is_add()
                and not o.is_delete()
                and not o.is_force_add()
                and o.package is None
                and not o.is_sweep_override()
                and key not in self._groups
                and not key.startswith("hydra")
            )
            self._parsed[override] = (
                ValueOverride(key, o.value(), override) if plain_value else None
            )
        return self._parsed[override]


class _Variant:
    """One Hydra composition, as unresolved OmegaConf (the slow path) and resolved plain data."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.base = plain(resolved(cfg))
        unresolved = OmegaConf.to_container(cfg, resolve=False)
        self._reads_nodes = any(_reads_nodes(t) for t in _interpolations(unresolved))

    def apply(self, values: list[ValueOverride]) -> dict[str, Any]:
        if self._reads_nodes or any(_hydra_special(v.value) for v in values):
            return self._apply_with_omegaconf(values)
        c = copy_data(self.base)
        for v in values:
            node = c
            for depth, part in enumerate(v.parts[:-1]):
                node = node.get(part) if isinstance(node, dict) else None
                if not isinstance(node, dict):
                    raise ConfigError(_unknown(v, ".".join(v.parts[: depth + 1])))
            if v.parts[-1] not in node:
                raise ConfigError(_unknown(v, v.key))
            if isinstance(node[v.parts[-1]], dict):  # Hydra merges onto a mapping: let it
                return self._apply_with_omegaconf(values)
            node[v.parts[-1]] = copy_data(v.value)
        return c

    def _apply_with_omegaconf(self, values: list[ValueOverride]) -> dict[str, Any]:
        cfg = self.cfg.copy()
        for v in values:
            OmegaConf.update(cfg, v.key, v.value, merge=True)
        return plain(resolved(cfg))


def _hydra_special(value: Any) -> bool:
    """Mappings merge and interpolations resolve in OmegaConf: keep its semantics for those."""
    return isinstance(value, Mapping) or "${" in repr(value)


def _reads_nodes(interpolation: str) -> bool:
    """Whether an interpolation may read another config node (anything but ``${oc.env:...}``),
    so that an override of that node would change its value after our one-time resolution."""
    return "${" in re.sub(r"\$\{oc\.env:[^${}]*\}", "", interpolation)


def _unknown(v: ValueOverride, missing: str) -> str:
    return (
        f"Could not override '{v.key}' ({v.text}): key '{missing}' is not in the config. "
        f"To append to your config use +{v.text}"
    )


def _interpolations(node: Any) -> list[str]:
    """Every interpolation string in an unresolved config (``${...}``)."""
    if isinstance(node, Mapping):
        return [s for v in node.values() for s in _interpolations(v)]
    if isinstance(node, list):
        return [s for v in node for s in _interpolations(v)]
    return [node] if isinstance(node, str) and "${" in node else []
