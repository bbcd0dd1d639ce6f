"""W&B tracking through the sidecar (``flatness.tracking``): an offline run's W&B record holds the
run's own numbers, and a broken, missing or hung W&B is a warning, never a failed run."""

from __future__ import annotations

import csv
import json
import os
import signal
import struct
import sys
import textwrap
from pathlib import Path

import pytest

from flatness import tracking
from flatness.io import read_json
from flatness.training.driver import run_group

SMALL = ("data.n_train=100", "data.n_test=100", "model.width=8", "train.epochs=3")


@pytest.fixture
def wandb_on(monkeypatch):
    """Tracking as configured (conftest disables W&B for every other test); no sidecar left over."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tracking.close()
    yield
    tracking.close()


def fake_wandb(monkeypatch, folder: Path, body: str) -> None:
    """Put a ``wandb`` package with ``body`` first on the sidecar's import path."""
    (folder / "wandb").mkdir(parents=True)
    (folder / "wandb" / "__init__.py").write_text(textwrap.dedent(body))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])
    )


def wandb_records(path: Path) -> list:
    """The records of an offline run's ``.wandb`` file (LevelDB log framing: 32 KiB blocks of
    [crc32, length, type] chunks after a 7-byte header; protobuf ``Record`` payloads)."""
    from wandb.proto import wandb_internal_pb2

    buf, block, pos, parts, records = path.read_bytes(), 32768, 7, b"", []
    while pos + 7 <= len(buf):
        room = block - pos % block
        _, length, kind = struct.unpack("<IHB", buf[pos : pos + 7]) if room >= 7 else (0, 0, 0)
        if kind == 0:  # block padding
            pos += room
            continue
        parts += buf[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def items(entries) -> dict:
    """Protobuf key/value items (a history row, a summary update) as a dict."""
    return {e.key or "/".join(e.nested_key): json.loads(e.value_json) for e in entries}


def test_an_offline_run_mirrors_its_history_and_summary(compose, tmp_path, wandb_on):
    cfg = compose(*SMALL, "tracking.mode=offline", f"out_dir={tmp_path}")
    metrics = run_group([cfg])[0]
    assert tracking.running_pid() is not None  # the run did not wait for W&B ...
    tracking.close()  # ... the process does, once, at its end
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.job_type, run.run_group) == ("train", f"manual-{metrics['group_id']}")
    assert run.display_name == f"{metrics['run_id']}-train"
    logged = [items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    with open(tmp_path / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert len(logged) == len(history) == 4  # step 0 and three epochs
    for row, mirrored in zip(history, logged, strict=True):
        assert {k: float(v) for k, v in row.items()} == {k: mirrored[k] for k in row}
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary |= items(r.summary.update)
    for key in ("train_acc", "test_loss", "gen_gap", "n_params", "epochs"):
        assert summary[key] == metrics[key]


def test_missing_wandb_is_a_warning_and_the_run_completes(compose, tmp_path, wandb_on, monkeypatch):
    fake_wandb(monkeypatch, tmp_path / "fake", "raise ImportError('no wandb here')\n")
    cfg = compose(*SMALL, "tracking.mode=offline", f"out_dir={tmp_path / 'run'}")
    with pytest.warns(UserWarning, match="import wandb failed.*no wandb here"):
        metrics = run_group([cfg])[0]
        tracking.close()
    assert metrics["status"] == "ok" and read_json(tmp_path / "run" / "metrics.json") == metrics
    assert not (tmp_path / "run" / "wandb").exists()


def test_a_crashing_sidecar_is_a_warning_and_the_run_completes(compose, tmp_path, wandb_on,
                                                                 monkeypatch):  # fmt: skip
    fake_wandb(monkeypatch, tmp_path / "fake", """
        import os
        def Settings(**kwargs):
            return kwargs
        def init(**kwargs):
            os._exit(3)  # dies at the first run, as a segfaulting extension would
    """)  # fmt: skip
    cfgs = [compose(*SMALL, "tracking.mode=offline", f"seed={s}", f"out_dir={tmp_path / str(s)}")
            for s in (0, 1)]  # fmt: skip
    with pytest.warns(UserWarning, match="W&B sidecar"):
        all_metrics = run_group(cfgs)
        tracking.close()
    assert [m["status"] for m in all_metrics] == ["ok", "ok"]
    assert [read_json(tmp_path / str(s) / "metrics.json") for s in (0, 1)] == all_metrics


def test_a_sidecar_that_cannot_start_is_a_warning(compose, tmp_path, wandb_on, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    cfg = compose(*SMALL, "tracking.mode=offline", f"out_dir={tmp_path / 'run'}")
    with pytest.warns(UserWarning, match="sidecar did not start.*no-python"):
        metrics = run_group([cfg])[0]
    assert metrics["status"] == "ok" and tracking.running_pid() is None


def test_a_hung_sidecar_is_left_after_the_bounded_wait(compose, tmp_path, wandb_on, monkeypatch):
    fake_wandb(monkeypatch, tmp_path / "fake", """
        import time
        def Settings(**kwargs):
            return kwargs
        def init(**kwargs):
            time.sleep(600)  # a W&B server that never answers
    """)  # fmt: skip
    monkeypatch.setenv(tracking.WAIT_ENV, "0.5")
    cfg = compose(*SMALL, "tracking.mode=offline", f"out_dir={tmp_path / 'run'}")
    metrics = run_group([cfg])[0]
    pid = tracking.running_pid()
    try:
        with pytest.warns(UserWarning, match=f"pid {pid}.* still writing after 0.5 s"):
            tracking.close()
    finally:
        os.kill(pid, signal.SIGKILL)
    assert metrics["status"] == "ok" and tracking.running_pid() is None


def test_disabled_tracking_starts_no_sidecar(compose, tmp_path, wandb_on, monkeypatch):
    run_group([compose(*SMALL, "tracking.mode=disabled", f"out_dir={tmp_path / 'a'}")])
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment switch, whatever the config
    tracking.start([compose(*SMALL, "tracking.mode=offline").tracking])
    run_group([compose(*SMALL, "tracking.mode=offline", f"out_dir={tmp_path / 'b'}")])
    assert tracking.running_pid() is None
    assert not list(tmp_path.glob("*/wandb"))


def test_a_bad_wait_names_the_variable(monkeypatch, wandb_on):
    monkeypatch.setenv(tracking.WAIT_ENV, "soon")
    with pytest.raises(ValueError, match=f"{tracking.WAIT_ENV}='soon' is not allowed"):
        tracking.start([type("T", (), {"mode": "offline"})])
