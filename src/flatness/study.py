"""Studies: grids of runs declared in ``conf/study/<name>.yaml``, expanded into run configs.

A study file (Hydra composes it under ``study``, so a study can inherit from another through
its defaults list)::

    # conf/study/width.yaml
    name: width
    seeds: [0, 1, 2]
    overrides: [data.n_train=1000]      # applied to every run of the study
    grids:
      width:                            # a grid: a family of figures, overrides and a sweep
        family: width
        overrides: [train.epochs=200]
        sweep:
          model.width: [8, 16, 32]
          data.corruption.fraction: [0.0, 0.15]
    stages:                             # optional later stages (flatness.study_checks: schema)
      measures: true
      reparam: {grid: width, n_runs: 2, alphas: [0.1, 1.0, 10.0]}
      landscape: {grid: width, bezier_steps: 300}

The whole file is validated before any run is expanded (``flatness.study_checks``). Each grid is the product of its sweep values and the seeds; each point is composed with the run
config (``conf/config.yaml``) and validated, and its run id is the hash of the result-determining
config. The Snakefile asks this module for the runs and never restates a grid.

Expansion composes with Hydra once per structural variant (``flatness.expand``) and keeps run
configs as plain dicts. Every Snakemake process (each SLURM job parses the Snakefile again) reads
the expanded study from a JSON cache keyed by a hash of ``conf/``, the flatness sources and the
arguments, instead of expanding it again; a corrupt or stale cache is ignored and rebuilt.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flatness.base import CONF_DIR, ConfigError
from flatness.study_checks import check_group_size, check_study

CACHE_FORMAT = 4


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: the Hydra overrides that define it, its grids and resolved config."""

    run_id: str
    overrides: tuple[str, ...]
    grids: tuple[str, ...]
    config: dict[str, Any] = field(compare=False, repr=False)  # plain data, as compose_run gives


@dataclass(frozen=True)
class Study:
    name: str
    runs: dict[str, RunSpec]
    grids: dict[str, str]  # grid name -> family
    stages: dict[str, Any]
    allow_gaps: bool
    description: str = ""
    group_size: int = 1  # runs trained (and measured) per process; see flatness.training.grouping
    group_keys: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    seedless_ids: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    # run id -> its measure settings as sorted JSON: the measure rule's rerun trigger, serialized
    # once at expansion instead of by every Snakemake process (one text per distinct setting)
    measure_settings: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def groups(self) -> dict[str, list[str]]:
        """Which runs train together in one process (``group_size`` > 1): see flatness.training.grouping."""
        from flatness.training.grouping import make_groups

        return make_groups(self.runs, self.group_size, keys=self.group_keys)

    def manifest(self) -> dict[str, Any]:
        """What later stages need to know about the study, written to ``manifest.json``."""
        return {
            "study": self.name,
            "description": self.description,
            "allow_gaps": self.allow_gaps,
            "grids": self.grids,
            "stages": self.stages,
            "runs": {
                rid: {"grids": list(r.grids), "overrides": list(r.overrides)}
                for rid, r in self.runs.items()
            },
        }

    def runs_in(self, family: str) -> list[RunSpec]:
        names = {g for g, fam in self.grids.items() if fam == family}
        return [r for r in self.runs.values() if names.intersection(r.grids)]

    def to_data(self) -> dict[str, Any]:
        """Everything as plain JSON data (the cache format); ``from_data`` reads it back."""
        texts = {t: i for i, t in enumerate(dict.fromkeys(self.measure_settings.values()))}
        runs = [[r.run_id, list(r.overrides), list(r.grids), r.config, self.group_keys[r.run_id],
                 self.seedless_ids[r.run_id], texts[self.measure_settings[r.run_id]]]
                for r in self.runs.values()]  # fmt: skip
        return {"format": CACHE_FORMAT, "name": self.name, "grids": self.grids,
                "stages": self.stages, "allow_gaps": self.allow_gaps,
                "description": self.description, "group_size": self.group_size,
                "measure_settings": list(texts), "runs": runs}  # fmt: skip

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> Study:
        if d.get("format") != CACHE_FORMAT:
            raise ValueError(f"cache format {d.get('format')!r}, expected {CACHE_FORMAT}")
        runs, keys, seedless, measures, texts = {}, {}, {}, {}, d["measure_settings"]
        for rid, overrides, grids, config, key, sid, text in d["runs"]:
            runs[rid] = RunSpec(rid, tuple(overrides), tuple(grids), config)
            keys[rid], seedless[rid], measures[rid] = str(key), str(sid), str(texts[text])
        return cls(str(d["name"]), runs, dict(d["grids"]), dict(d["stages"]),
                   bool(d["allow_gaps"]), str(d["description"]), int(d["group_size"]), keys,
                   seedless, measures)  # fmt: skip


def available_studies(conf_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (Path(conf_dir or CONF_DIR) / "study").glob("*.yaml"))


def _format(key: str, value: Any) -> str:
    """A Hydra override for one sweep value (null/bools/strings spelled so Hydra parses them back)."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    return f"{key}={value}"


def load_study(
    name: str,
    conf_dir: Path | None = None,
    results_dir: str = "results",
    group_size=None,
    cache_dir: str | os.PathLike | None = None,
) -> Study:
    """Compose ``conf/study/<name>.yaml`` and expand it into validated runs (no work is started).

    ``group_size`` (not None) overrides the study's own (``snakemake --config group_size=16``).
    With ``cache_dir``, the expanded study is read from (or written to) a JSON file there, named by
    a hash of everything the expansion depends on."""
    conf_dir = Path(conf_dir or CONF_DIR)
    known = available_studies(conf_dir)
    if name not in known:
        raise ConfigError(f"study={name!r} is not a known study; allowed: {', '.join(known)}")
    study = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{name}-{_cache_key(name, conf_dir, results_dir)}.json"
        study = _read_cache(cache)
    if study is None:
        with _no_gc():
            study = _expand(name, conf_dir, results_dir)
        if cache_dir is not None:
            from flatness.io import atomic_write_text

            with _no_gc():
                atomic_write_text(cache, json.dumps(study.to_data(), separators=(",", ":")))
            for stale in cache.parent.glob(f"{name}-*.json"):  # older conf/ or sources
                if stale != cache:
                    stale.unlink(missing_ok=True)
    if group_size is not None:
        study = dataclasses.replace(study, group_size=check_group_size(name, group_size))
    return study


def _check_one_dataset_per_family(name: str, grids: dict, runs: dict) -> None:
    """A family's verdicts compare its runs with each other, so its grids must share the data set
    and training-set size (MNIST-1D widths next to digits widths would mix two curves)."""
    seen: dict[str, tuple[str, tuple]] = {}
    for r in runs.values():
        data = (r.config["data"]["name"], r.config["data"].get("n_train"))
        for g in r.grids:
            family = grids[g]
            first = seen.setdefault(family, (g, data))
            if family != "other" and first[1] != data:
                raise ConfigError(
                    f"study {name}: grids.{g}.family={family!r} is not allowed: grid {g} trains on "
                    f"data {data[0]} (n_train {data[1]}) but grid {first[0]} of the same family on "
                    f"{first[1][0]} (n_train {first[1][1]}); allowed: one data set and "
                    "data.n_train per family (give the other grid its own family)"
                )


def _expand(name: str, conf_dir: Path, results_dir: str) -> Study:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from flatness.config import group_id
    from flatness.expand import Expander
    from flatness.training.grouping import group_key

    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        spec = OmegaConf.to_container(compose(config_name=f"study/{name}").study, resolve=True)
        check_study(name, spec)
        expander = Expander(lambda o: compose(config_name="config", overrides=o), conf_dir)
        seeds = spec.get("seeds", [0])
        base = [*spec.get("overrides", []), f"tracking.study={name}"]
        runs: dict[str, RunSpec] = {}
        for grid_name, grid in spec["grids"].items():
            where = f"study {name}, grid {grid_name}"
            for point in _points(grid.get("sweep") or {}, grid.get("seeds", seeds)):
                overrides = [*base, *grid.get("overrides", []), *point]
                cfg, rid = _run_config(expander, overrides, where)
                previous = runs.get(rid)
                grid_names = previous.grids if previous else ()
                grid_names += () if grid_name in grid_names else (grid_name,)
                full = (*overrides, f"out_dir={results_dir}/{name}/runs/{rid}")
                cfg["out_dir"] = full[-1].split("=", 1)[1]
                runs[rid] = RunSpec(rid, full, grid_names, cfg)

    grids = {g: grid.get("family", "other") for g, grid in spec["grids"].items()}
    _check_one_dataset_per_family(name, grids, runs)
    group_size = check_group_size(name, spec.get("group_size", 1))
    keys = {rid: group_key(r.config) for rid, r in runs.items()}
    seedless = {rid: group_id(r.config) for rid, r in runs.items()}
    # the measure rule's params, the text they have always been: upgrading reruns no measures
    measures = {rid: json.dumps(r.config["measures"], sort_keys=True) for rid, r in runs.items()}
    return Study(name, runs, grids, spec.get("stages") or {}, bool(spec.get("allow_gaps", False)),
                 str(spec.get("description", "")), group_size, keys, seedless, measures)  # fmt: skip


def _points(sweep: Mapping, seeds: Sequence[int]):
    keys = list(sweep)
    for values in itertools.product(*(list(sweep[k]) for k in keys)):
        for seed in seeds:
            yield [*(_format(k, v) for k, v in zip(keys, values, strict=True)), f"seed={seed}"]


def _run_config(expander, overrides: list[str], where: str):
    """The validated config of one run and its run id; errors name the study and grid."""
    from flatness.config import run_id, validate

    try:
        cfg = expander.config(overrides)
        validate(cfg)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from err
    except Exception as err:  # Hydra's and our override errors (unknown key, bad syntax)
        raise ConfigError(f"{where}: {type(err).__name__}: {err}") from err
    return cfg, run_id(cfg)


# ---- the cache ---------------------------------------------------------------------------------


def _cache_key(name: str, conf_dir: Path, results_dir: str) -> str:
    """A hash of every input of the expansion: conf/ (all files), the flatness sources (validation
    rules, run ids), Hydra's and OmegaConf's versions, the variables conf/ reads (``oc.env``)."""
    from importlib.metadata import version

    h = hashlib.sha256()
    h.update(json.dumps([CACHE_FORMAT, name, str(results_dir), version("hydra-core"),
                         version("omegaconf")]).encode())  # fmt: skip
    env_names: set[str] = set()
    src = Path(__file__).resolve().parent
    for root in (Path(conf_dir), src):
        for path in sorted(root.rglob("*")):
            if path.is_file() and (root is not src or path.suffix == ".py"):
                text = path.read_bytes()
                h.update(str(path.relative_to(root)).encode() + b"\0" + text)
                if root is not src:
                    env_names.update(re.findall(rb"oc\.env:([A-Za-z_]\w*)", text))
    names = sorted(n.decode() for n in env_names)
    h.update(json.dumps([(n, os.environ.get(n)) for n in names]).encode())
    return h.hexdigest()[:16]


def _read_cache(path: Path) -> Study | None:
    """The cached study, or None when there is none or it cannot be read (then it is rebuilt)."""
    try:
        with open(path) as f, _no_gc():
            return Study.from_data(json.load(f))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        import warnings

        warnings.warn(f"ignoring the unreadable study cache {path} ({err}); rebuilding it",
                      stacklevel=3)  # fmt: skip
        return None


@contextmanager
def _no_gc():
    """Expanding or parsing a big study builds ~10^6 small objects that all live on, and each
    allocation counts toward another pass over the whole heap: pausing the cyclic collector
    meanwhile saves seconds (cycles, e.g. Hydra's, are collected once it runs again)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
