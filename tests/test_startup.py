"""Start-up: a process imports only what its work needs (issue 12; timings in bench/bench_startup.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flatness.data import load_dataset


def _modules_after(code: str, env: dict | None = None) -> set[str]:
    """The modules a fresh interpreter has imported after running ``code``."""
    proc = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True, text=True, timeout=300, env=os.environ | (env or {}),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(proc.stdout.split())


def test_cached_mnist1d_is_read_without_importing_the_generator(tmp_path):
    cfg = {"name": "mnist1d", "root": None, "n_train": 50, "n_test": 50, "subset_seed": 0,
           "mnist1d": {"num_samples": 600, "seed": 5}}  # fmt: skip
    first = load_dataset(cfg, cache_dir=tmp_path)  # a miss: generates and caches
    code = (f"from flatness.data import load_dataset\nd = load_dataset({cfg!r}, "
            f"cache_dir={str(tmp_path)!r})\nassert d.x_train.shape == {tuple(first.x_train.shape)}")  # fmt: skip
    loaded = _modules_after(code)
    assert "mnist1d" not in loaded and "matplotlib" not in loaded


def test_a_cached_study_is_read_without_torch_or_omegaconf(tmp_path):
    from flatness.study import load_study

    load_study("smoke", cache_dir=tmp_path)  # expands and writes the cache
    code = (f"from flatness.study import load_study\ns = load_study('smoke', "
            f"cache_dir={str(tmp_path)!r}, group_size=4)\nassert s.groups()")  # fmt: skip
    loaded = _modules_after(code)
    assert not {"torch", "omegaconf", "hydra"} & loaded


def test_disabled_tracking_never_imports_wandb(tmp_path):
    from flatness.tracking import tracked

    code = (
        "from types import SimpleNamespace\nfrom flatness.tracking import tracked\n"
        "with tracked(SimpleNamespace(mode='disabled'), job_type='train', name='n', group='g', "
        f"config={{}}, run_dir={str(tmp_path)!r}) as run:\n    run.log({{'a': 1}})"
    )
    assert "wandb" not in _modules_after(code, env={"WANDB_MODE": "offline"})
    assert callable(tracked) and not Path(tmp_path, "wandb").exists()
