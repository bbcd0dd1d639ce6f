"""Study expansion: the fast path equals Hydra per run, the cache is safe, bad study files fail early."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flatness import study as study_module
from flatness.config import CONF_DIR, ConfigError, compose_run, group_id, plain, run_id
from flatness.study import available_studies, load_study

REPO = Path(__file__).resolve().parents[1]
SAMPLE = 3  # runs per study composed the slow way (about 0.3 s each)


def _sample(runs: list, k: int = SAMPLE) -> list:
    """A deterministic spread of runs: the first, the last and evenly spaced ones between."""
    if len(runs) <= k:
        return runs
    return [runs[round(i * (len(runs) - 1) / (k - 1))] for i in range(k)]


def _same_as_hydra(spec, conf_dir=None) -> None:
    slow = compose_run(spec.overrides, conf_dir=conf_dir)
    assert plain(slow) == spec.config, spec.overrides
    assert run_id(slow) == spec.run_id


@pytest.mark.parametrize("name", available_studies())
def test_every_study_expands_as_hydra_composes_each_run(name, monkeypatch):
    monkeypatch.setenv("FLATNESS_DATA_ROOT", "/data")  # torchvision studies need a root to compose
    study = load_study(name)
    assert study.runs, f"study {name} has no runs"
    for spec in _sample(list(study.runs.values())):
        _same_as_hydra(spec)


@pytest.fixture
def conf(tmp_path) -> Path:
    """A writable copy of conf/ (studies written here are found through conf_dir/FLATNESS_CONF)."""
    shutil.copytree(CONF_DIR, tmp_path / "conf")
    return tmp_path / "conf"


def _write_study(conf: Path, name: str, text: str) -> None:
    (conf / "study" / f"{name}.yaml").write_text(f"name: {name}\n{text}")


TRICKY = """\
seeds: [3]
overrides: [data.n_train=200, '+data.note=added', model.width=8]
grids:
  g:
    overrides: [optim.weight_decay=0.0, optim.lr=1e-3, model.batch_norm=true]
    sweep:
      optim: [sgd, adam]                    # a config-group choice per point
      train.steps: [null, 7]
      model.dropout: [0]                    # an int where the file says 0.0
  h:
    family: width
    seeds: [0, 1]
    sweep:
      tracking.entity: ["a b"]              # a string Hydra must parse back (not in run ids)
      data.corruption.type: [labels]
"""


def test_fast_expansion_equals_hydra_on_every_kind_of_override(conf):
    _write_study(conf, "tricky", TRICKY)
    study = load_study("tricky", conf_dir=conf)
    assert len(study.runs) == 2 * 2 + 2
    for spec in study.runs.values():
        _same_as_hydra(spec, conf_dir=conf)
    some = next(iter(study.runs.values()))
    assert some.config["data"]["note"] == "added" and some.config["seed"] == 3
    assert {r.config["optim"]["name"] for r in study.runs.values()} == {"sgd", "adam"}


def test_an_override_read_by_an_interpolation_is_resolved_after_it(conf):
    cfg = (conf / "config.yaml").read_text()
    (conf / "config.yaml").write_text(
        cfg.replace("  study: manual", "  study: manual\n  tag: w${model.width}")
    )
    _write_study(conf, "interp", "grids:\n  g:\n    sweep:\n      model.width: [8, 16]\n")
    study = load_study("interp", conf_dir=conf)
    assert sorted(r.config["tracking"]["tag"] for r in study.runs.values()) == ["w16", "w8"]
    for spec in study.runs.values():
        _same_as_hydra(spec, conf_dir=conf)


def test_the_cache_is_read_instead_of_expanding_and_rebuilt_when_corrupt(
    conf, tmp_path, monkeypatch
):
    _write_study(
        conf, "small", "seeds: [0, 1]\ngrids:\n  g:\n    sweep:\n      model.width: [8, 16]\n"
    )
    cache = tmp_path / "cache"
    first = load_study("small", conf_dir=conf, cache_dir=cache)
    (path,) = cache.glob("small-*.json")
    json.loads(path.read_text())  # data, never pickle

    def no_expansion(*args):
        raise AssertionError("expanded although the cache was valid")

    with monkeypatch.context() as m:
        m.setattr(study_module, "_expand", no_expansion)
        cached = load_study("small", conf_dir=conf, cache_dir=cache, group_size=2)
    assert cached.runs == first.runs and cached.group_size == 2
    assert [r.config for r in cached.runs.values()] == [r.config for r in first.runs.values()]
    assert cached.group_keys == first.group_keys and cached.seedless_ids == first.seedless_ids
    assert all(group_id(r.config) == first.seedless_ids[r.run_id] for r in first.runs.values())
    # the measure rule's params: each run's settings as sorted JSON, each distinct text stored once
    texts = {rid: json.dumps(r.config["measures"], sort_keys=True) for rid, r in first.runs.items()}
    assert cached.measure_settings == first.measure_settings == texts
    assert json.loads(path.read_text())["measure_settings"] == list(dict.fromkeys(texts.values()))

    path.write_text('{"format": 4, "runs": [')  # truncated
    with pytest.warns(UserWarning, match="ignoring the unreadable study cache"):
        again = load_study("small", conf_dir=conf, cache_dir=cache)
    assert again.runs == first.runs and json.loads(path.read_text())["name"] == "small"

    _write_study(
        conf, "small", "seeds: [0]\ngrids:\n  g:\n    sweep:\n      model.width: [8, 16]\n"
    )
    assert len(load_study("small", conf_dir=conf, cache_dir=cache).runs) == 2  # conf changed
    (new,) = cache.glob("small-*.json")  # the stale file is gone
    assert new != path


GRID = "grids:\n  g:\n    sweep:\n      model.width: [8]\n"
BAD_STUDIES = [
    (
        "grids:\n  g:\n    sweep:\n      optim.lr: []\n",
        "grids.g.sweep.optim.lr=[]",
        "a non-empty list",
    ),
    (
        "grids:\n  g:\n    sweep:\n      optim.lr: 0.1\n",
        "grids.g.sweep.optim.lr=0.1",
        "a non-empty list",
    ),
    ("grids: {}\n", "grids={}", "at least one grid"),
    ("seeds: []\n" + GRID, "seeds=[]", "a non-empty list of integers"),
    (GRID + "    seeds: [0, -1]\n", "grids.g.seeds[1]=-1", "integers >= 0"),
    (GRID + "    family: widths\n", "grids.g.family='widths'", "random_labels"),
    (GRID + "    sweeps: {}\n", "unknown key 'grids.g.sweeps'", "allowed keys: family"),
    (
        GRID + "stages:\n  reparam:\n    alpha: [1.0]\n",
        "unknown key 'stages.reparam.alpha'",
        "alphas",
    ),
    (
        GRID + "stages:\n  reparam:\n    alphas: [1.0, 0]\n",
        "stages.reparam.alphas[1]=0",
        "numbers > 0",
    ),
    (GRID + "stages:\n  reparam:\n    alphas: []\n", "stages.reparam.alphas=[]", "non-empty list"),
    (
        GRID + "stages:\n  reparam:\n    grid: G\n",
        "stages.reparam.grid='G'",
        "a grid of this study: g",
    ),
    (GRID + "stages:\n  reparam:\n    n_runs: 0\n", "stages.reparam.n_runs=0", "an integer >= 1"),
    (
        GRID + "stages:\n  landscape:\n    bezier_steps: ten\n",
        "stages.landscape.bezier_steps='ten'",
        "an integer >= 1",
    ),
    (
        GRID + "stages:\n  landscape:\n    grid: nope\n",
        "stages.landscape.grid='nope'",
        "null (all runs)",
    ),
    (
        GRID + "stages:\n  landscape:\n    n_pairs: 0\n",
        "stages.landscape.n_pairs=0",
        "an integer >= 1",
    ),
    (GRID + "stages:\n  topology: {}\n", "unknown key 'stages.topology'", "measures, reparam"),
    (GRID + "stages:\n  measures: 1\n", "stages.measures=1", "true or false"),
    (GRID + "group_size: 0\n", "group_size=0", "an integer >= 1"),
    (
        "grids:\n  g:\n    sweep:\n      model.widht: [8]\n",
        "grid g: Could not override 'model.widht'",
        "+model.widht=8",
    ),
    (
        "grids:\n  g:\n    sweep:\n      model.width: [0]\n",
        "grid g: model.width=0",
        "an integer >= 1",
    ),
    (
        "grids:\n  g:\n    family: width\n    sweep:\n      model.width: [8]\n"
        "  h:\n    family: width\n    overrides: [data=digits]\n    sweep:\n"
        "      model.width: [8]\n",
        "grids.h.family='width' is not allowed: grid h trains on data digits",
        "one data set and data.n_train per family",
    ),
]


@pytest.mark.parametrize("text,path,allowed", BAD_STUDIES)
def test_a_bad_study_names_the_full_key_path(conf, text, path, allowed):
    _write_study(conf, "bad", text)
    with pytest.raises(ConfigError) as err:
        load_study("bad", conf_dir=conf)
    message = str(err.value)
    assert message.startswith("study bad") and path in message and allowed in message, message


def test_dry_run_of_a_bad_study_fails_with_the_message_and_writes_nothing(conf, tmp_path):
    _write_study(conf, "bad", GRID + "stages:\n  reparam:\n    alphas: [0.1, -1]\n")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"),
         "--directory", str(work), "-n", "--config", "study=bad"],
        capture_output=True, text=True, timeout=300,
        env=os.environ | {"FLATNESS_CONF": str(conf)},
    )  # fmt: skip
    assert proc.returncode != 0
    assert "study bad: stages.reparam.alphas[1]=-1 is not allowed" in proc.stdout + proc.stderr
    assert not (work / "results").exists()
    assert not list(work.rglob("*.json"))  # no study cache, no manifest
