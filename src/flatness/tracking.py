"""W&B mirroring: offline by default, never blocking and never the source of truth.

The pipeline's own files (metrics.json, history.csv, measures.json, table.csv) are what figures and
tests read; W&B gets the same numbers, grouped by study and config hash (seed removed) with
``job_type`` naming the stage. A W&B failure (missing package, no network in online mode, a full
disk, a crash) is reported as a warning and the run goes on untracked.

W&B runs in a sidecar process (``flatness.tracking_sidecar``), one per Python process, so that
neither ``import wandb`` (~1 s) nor ``wandb.init`` (~1 s a run) nor its flushes sit on the
training path. The process sends it JSON lines (init / log / summary / finish, per run) from a
writer thread, so a slow sidecar never blocks a step; a group of runs shares one sidecar and one
``import wandb``. An entry point that knows its configs calls ``start`` before it imports torch,
so the sidecar imports wandb while the process imports torch; ``tracked`` starts one otherwise.
At exit the process closes the pipe and waits up to ``FLATNESS_TRACKING_WAIT`` seconds (default
120) for the sidecar to finish writing, then warns and leaves it writing. Disabled tracking
(``tracking.mode=disabled`` or ``WANDB_MODE=disabled``) starts no sidecar and imports nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flatness.base import ConfigError

WAIT_ENV = "FLATNESS_TRACKING_WAIT"
DEFAULT_WAIT_S = 120.0
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the folder that holds flatness/


def mode_of(tracking_cfg) -> str:
    """The W&B mode a run gets: ``WANDB_MODE`` overrides the config, except that a run whose config
    says ``disabled`` stays untracked whatever the environment says."""
    env = os.environ.get("WANDB_MODE")
    if tracking_cfg.mode == "disabled" or env == "disabled":
        return "disabled"
    return env or tracking_cfg.mode


def start(tracking_cfgs: Iterable) -> None:
    """Start the sidecar now if any of these runs is tracked: called by entry points before they
    import torch, so that ``import wandb`` runs beside it."""
    if any(mode_of(cfg) != "disabled" for cfg in tracking_cfgs):
        _sidecar()


class _NullRun:
    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    summary: dict = {}  # noqa: RUF012 - a throwaway sink, never read


class _RemoteRun:
    """A run in the sidecar: ``log`` sends a row; ``summary`` is sent when the run ends."""

    def __init__(self, sidecar: _Sidecar, key: str):
        self._sidecar, self._key = sidecar, key
        self.summary: dict = {}

    def log(self, row: dict) -> None:
        self._sidecar.send({"op": "log", "key": self._key, "data": row})


@contextlib.contextmanager
def tracked(tracking_cfg, *, job_type: str, name: str, group: str, config: dict, run_dir):
    """Yield an object with ``log(dict)`` and ``summary``; a no-op when tracking is disabled."""
    mode = mode_of(tracking_cfg)
    if mode == "disabled":
        yield _NullRun()
        return
    sidecar = _sidecar()
    if sidecar is None:
        yield _NullRun()
        return
    key = f"{name}-{job_type}-{next(_KEYS)}"
    init = dict(project=tracking_cfg.project, entity=tracking_cfg.entity, mode=mode,
                group=f"{tracking_cfg.study}-{group}", job_type=job_type, name=f"{name}-{job_type}",
                config=config, dir=str(Path(run_dir).resolve()))  # fmt: skip
    sidecar.send({"op": "init", "key": key, "kwargs": init})
    run = _RemoteRun(sidecar, key)
    exit_code = 1
    try:
        yield run
        exit_code = 0
    finally:
        if run.summary:
            sidecar.send({"op": "summary", "key": key, "data": dict(run.summary)})
        sidecar.send({"op": "finish", "key": key, "exit_code": exit_code})
        sidecar.warn_reported()


def close() -> None:
    """End this process's sidecar: close its pipe, wait for it a bounded time, report its
    warnings. Runs at exit; a later ``tracked`` starts a new sidecar."""
    global _SIDECAR
    with _LOCK:
        sidecar, _SIDECAR = _SIDECAR, None
    if sidecar is not None:
        sidecar.close()


def running_pid() -> int | None:
    """The sidecar's process id, None when this process has none (tests, diagnostics)."""
    return None if _SIDECAR is None else _SIDECAR.proc.pid


_KEYS = itertools.count()
_LOCK = threading.Lock()
_SIDECAR: _Sidecar | None = None


def _sidecar() -> _Sidecar | None:
    """This process's sidecar, started on first use; None (and a warning) if it cannot start."""
    global _SIDECAR
    with _LOCK:
        if _SIDECAR is None:
            wait_s = _wait_s()  # a bad value is the user's error: raised, not a warning
            try:
                _SIDECAR = _Sidecar(wait_s)
            except OSError as err:  # no process to spare (fork failed, no interpreter): untracked
                warnings.warn(f"W&B tracking is off: its sidecar did not start "
                              f"({type(err).__name__}: {err})", stacklevel=3)  # fmt: skip
                return None
            atexit.register(close)  # closing twice is a no-op
        return _SIDECAR


def _wait_s() -> float:
    text = os.environ.get(WAIT_ENV, str(DEFAULT_WAIT_S))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{WAIT_ENV}={text!r} is not allowed; allowed: seconds, a number >= 0")
    return value


class _Sidecar:
    """The sidecar process, a writer thread feeding its stdin and a reader thread collecting the
    warnings it reports on its stdout."""

    def __init__(self, wait_s: float):
        self.wait_s = wait_s
        self.reports: list[str] = []  # appended by the reader thread, emitted by the caller's
        self.broken = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        path = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flatness.tracking_sidecar"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=os.environ | {"PYTHONPATH": path}, start_new_session=True,
        )  # fmt: skip
        self._writer = threading.Thread(
            target=self._write, name="wandb-sidecar-writer", daemon=True
        )
        self._reader = threading.Thread(target=self._read, name="wandb-sidecar-reader", daemon=True)
        self._writer.start()
        self._reader.start()

    def send(self, message: dict) -> None:
        """Queue one message (never blocks); values that JSON lacks (tensors, arrays) become lists."""
        self._queue.put(json.dumps(message, default=_plain) + "\n")

    def _write(self) -> None:
        while (line := self._queue.get()) is not None:
            if self.broken:
                continue  # keep draining so the queue empties; the report is in already
            try:
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
            except (OSError, ValueError) as err:  # the sidecar is gone: untracked from here on
                self.broken = True
                self.reports.append(f"W&B sidecar stopped taking messages ({type(err).__name__}: "
                                    f"{err}); the rest of this process's runs are untracked")  # fmt: skip
        with contextlib.suppress(OSError):  # a sidecar that died already: close() reports it
            self.proc.stdin.close()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.reports.append(str(json.loads(line)["warning"]))
            except (ValueError, KeyError, TypeError):
                self.reports.append(f"W&B sidecar: {line.strip()}")

    def warn_reported(self) -> None:
        """Turn the sidecar's reports so far into warnings (in the caller's thread)."""
        while self.reports:
            warnings.warn(self.reports.pop(0), stacklevel=3)

    def close(self) -> None:
        deadline = time.monotonic() + self.wait_s
        self._queue.put(None)
        self._writer.join(timeout=self.wait_s)
        try:
            code = self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.warn_reported()
            warnings.warn(f"W&B sidecar (pid {self.proc.pid}) is still writing after "
                          f"{self.wait_s:g} s ({WAIT_ENV}); leaving it to finish on its own",
                          stacklevel=3)  # fmt: skip
            return
        self._reader.join(timeout=5)
        self.proc.stdout.close()
        if code != 0 and not self.broken:
            self.reports.append(f"W&B sidecar exited with code {code}; runs it had not finished "
                                "may be missing from W&B (the run files are complete)")  # fmt: skip
        self.warn_reported()


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays, without importing either
        return value.tolist()
    return str(value)
