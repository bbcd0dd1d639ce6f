"""Every config under conf/ composes; bad values fail early with key, value and what is allowed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flatness.base import digest
from flatness.config import (
    CONF_DIR,
    ConfigError,
    copy_data,
    group_id,
    plain,
    result_config,
    run_id,
    validate,
)
from flatness.study import load_study

GROUPS = {
    g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml"))
    for g in ("data", "model", "optim", "measures")
}


@pytest.mark.parametrize("group,choice", [(g, c) for g, cs in GROUPS.items() for c in cs])
def test_every_group_choice_composes(compose, group, choice):
    cfg = compose(f"{group}={choice}", "data.root=/data")
    assert cfg[group] is not None


def test_run_id_ignores_bookkeeping_and_group_id_ignores_seed(compose):
    a = compose("out_dir=/tmp/a", "tracking.mode=disabled", "train.checkpoint_every=3")
    b = compose("out_dir=/tmp/b")
    assert run_id(a) == run_id(b)
    c = compose("seed=1")
    assert run_id(c) != run_id(b) and group_id(c) == group_id(b)
    assert run_id(compose("model.width=64")) != run_id(b)


def test_hashes_read_the_config_in_place_and_equal_the_hash_of_a_copy(compose):
    """run_id, group_id and group_key hash views that share the config's nodes (a 10^4-run study
    hashes each config three times): the config stays as it was, and each hash is the digest of
    its definition, computed here on a copy."""
    from flatness.training.grouping import PER_RUN_KEYS, group_key

    cfg = plain(compose("seed=3", "optim.lr=0.05", "train.checkpoint_every=2"))
    before = copy_data(cfg)
    ids = run_id(cfg), group_id(cfg), group_key(cfg)
    assert cfg == before
    expected = result_config(cfg)
    assert "measures" not in expected and "checkpoint_every" not in expected["train"]
    assert ids[0] == digest(expected)
    expected.pop("seed")
    assert ids[1] == digest(expected)
    for dotted in PER_RUN_KEYS:
        *path, last = dotted.split(".")
        node = expected
        for part in path:
            node = node.get(part, {})
        node.pop(last, None)
    assert ids[2] == digest({**expected, "device": cfg["device"]})
    result_config(cfg)["model"]["width"] = -1  # a copy: the config is untouched
    assert cfg == before


def test_measure_settings_are_checked_once_per_distinct_json_text(compose):
    """Validation remembers settings it passed by their sorted JSON, which keeps true apart from 1:
    a bool where an integer belongs still fails after the integer passed."""
    cfg = plain(compose("measures.hessian_eigen.top_k=1"))
    validate(cfg)
    validate(cfg)
    cfg["measures"]["hessian_eigen"]["top_k"] = True
    with pytest.raises(ConfigError, match=r"measures\.hessian_eigen\.top_k = True is invalid"):
        validate(cfg)


@pytest.mark.parametrize(
    "override,key,allowed",
    [
        ("model.width=0", "model.width", "an integer >= 1"),
        ("model.width=wide", "model.width", "an integer >= 1"),
        ("data.corruption.fraction=1.5", "data.corruption.fraction", "[0, 1]"),
        ("data.corruption.fraction=-0.1", "data.corruption.fraction", "[0, 1]"),
        ("data.name=imagenet", "data.name", "mnist1d"),
        ("model.name=resnet", "model.name", "mlp"),
        ("optim.name=rmsprop", "optim.name", "sgd"),
        ("train.batch_size=true", "train.batch_size", "an integer >= 1"),
        ("data.corruption.type=blur", "data.corruption.type", "random_pixels"),
    ],
)
def test_bad_values_name_key_value_and_allowed(compose, override, key, allowed):
    with pytest.raises(ConfigError) as err:
        compose(override)
    message = str(err.value)
    value = override.split("=")[1]
    assert key in message and value.lower() in message.lower() and allowed in message


def test_unknown_key_is_refused(compose):
    with pytest.raises(Exception, match=r"model\.widht"):
        compose("model.widht=3")


def test_torchvision_data_needs_a_root(compose):
    with pytest.raises(ConfigError, match=r"data\.root"):
        compose("data=cifar10", "data.root=null")


def test_cli_rejects_bad_config_before_writing_anything(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "flatness.training", "model.width=-3", f"out_dir={out}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "model.width=-3" in proc.stderr and "allowed" in proc.stderr
    assert not out.exists()


def test_unknown_study_and_bad_grid_key(tmp_path):
    with pytest.raises(ConfigError, match="study='nope' is not a known study"):
        load_study("nope")
    conf = tmp_path / "conf"
    subprocess.run(["cp", "-r", str(CONF_DIR), str(conf)], check=True)
    (conf / "study" / "bad.yaml").write_text(
        "name: bad\ngrids:\n  g:\n    family: width\n    sweep:\n      model.width: [0]\n"
    )
    with pytest.raises(ConfigError, match=r"grid g: model.width=0"):
        load_study("bad", conf_dir=conf)
    (conf / "study" / "bad.yaml").write_text("name: bad\ngridz: {}\n")
    with pytest.raises(ConfigError, match="unknown key 'gridz'"):
        load_study("bad", conf_dir=conf)
