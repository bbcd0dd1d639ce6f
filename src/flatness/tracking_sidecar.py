"""The W&B sidecar: ``python -m flatness.tracking_sidecar``, started and fed by ``flatness.tracking``.

It imports wandb and warms it up first thing (while its parent imports torch), then reads JSON
lines on stdin, one message each, for any number of runs told apart by ``key``::

    {"op": "init", "key": k, "kwargs": {...}}       wandb.init(**kwargs) (plus quiet settings)
    {"op": "log", "key": k, "data": {...}}          run.log(data)
    {"op": "summary", "key": k, "data": {...}}      run.summary.update(data)
    {"op": "finish", "key": k, "exit_code": 0}      run.finish(exit_code)

Whatever goes wrong (wandb missing, an init that times out, a failed log or finish) is written as
one line ``{"warning": "..."}`` to stdout, which the parent turns into a Python warning, and that
run is dropped: W&B mirrors the run files, it never fails a run. At the end of its input (the
parent closed the pipe, or died) it finishes the runs still open and exits. Anything wandb prints
goes to stderr, so stdout carries only these reports.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import IO, Any


def main(messages: IO[str], reports: IO[str]) -> None:
    def report(text: str) -> None:
        reports.write(json.dumps({"warning": text}) + "\n")
        reports.flush()

    try:
        import wandb
    except Exception as err:  # any import failure means: no W&B in this process
        report(f"W&B tracking is off: import wandb failed ({type(err).__name__}: {err})")
        for _ in messages:
            pass  # drain, so the parent never blocks on a full pipe
        return
    _warm_up(wandb)
    runs: dict[str, Any] = {}
    dropped: set[str] = set()
    for line in messages:
        message = json.loads(line)
        key, op = message["key"], message["op"]
        if key in dropped:
            continue
        try:
            if op == "init":
                runs[key] = wandb.init(
                    **message["kwargs"],
                    reinit="create_new",
                    settings=wandb.Settings(silent=True, init_timeout=30, console="off"),
                )
            elif op == "log":
                runs[key].log(message["data"])
            elif op == "summary":
                runs[key].summary.update(message["data"])
            elif op == "finish":
                runs.pop(key).finish(exit_code=message.get("exit_code", 0))
            else:
                raise ValueError(f"unknown message op={op!r}; allowed: init, log, summary, finish")
        except Exception as err:  # W&B must never stop a run: drop it, say why
            dropped.add(key)
            name = message.get("kwargs", {}).get("name", key)
            report(f"W&B tracking is off for run {name} ({op} failed: {type(err).__name__}: {err})")
            _finish_quietly(runs.pop(key, None))
    for run in runs.values():  # the parent went away without finishing these
        _finish_quietly(run, exit_code=1)


def _warm_up(wandb: Any) -> None:
    """Pay what the first ``wandb.init`` would, before its message comes (while the parent still
    imports torch): the wandb-core service, and the launch module that ``init`` imports on every
    run's start (~1 s of pydantic models, in wandb 0.31). Best effort: ``init`` reports failures."""
    try:
        wandb.setup()
        importlib.import_module("wandb.sdk.launch.inputs.internal")  # for its cost alone
    except Exception as err:  # init will try again, and report what fails
        print(f"W&B warm-up failed ({type(err).__name__}: {err})", file=sys.stderr)


def _finish_quietly(run: Any, exit_code: int = 1) -> None:
    if run is None:
        return
    try:
        run.finish(exit_code=exit_code)
    except Exception as err:  # already reported or at exit: nothing more to do
        print(f"W&B finish failed ({type(err).__name__}: {err})", file=sys.stderr)


if __name__ == "__main__":
    reports = os.fdopen(os.dup(1), "w")  # the channel to the parent ...
    os.dup2(2, 1)  # ... and whatever else is printed to stdout goes to stderr
    main(sys.stdin, reports)
