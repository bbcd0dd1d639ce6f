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


HEAVY_UNUSED = {"pandas", "scipy", "wandb", "matplotlib", "sklearn"}


def test_composing_and_validating_a_config_imports_no_torch():
    code = ("from flatness.config import compose_run\n"
            "cfg = compose_run(['model.width=8', 'measures.subset_size=100'])")  # fmt: skip
    assert not ({"torch", "flatness.measures.suite.registry"} | HEAVY_UNUSED) & _modules_after(code)


def test_a_training_process_imports_only_what_it_uses(tmp_path, compose):
    """``python -m flatness.training`` and the ``train_group`` stage, tracking disabled: torch and
    the driver, but no pandas (history.csv is written with csv), no measure algorithms (scipy), no
    wandb, no plotting."""
    overrides = ["train.epochs=1", "data.n_train=100", "progress=false", "tracking.mode=disabled"]
    load_dataset(compose(*overrides).data)  # cached: generating MNIST-1D imports scipy
    by_hand = (f"import sys\nsys.argv = ['flatness.training', *{overrides!r}, "
               f"'out_dir={tmp_path / 'a'}']\nfrom flatness.training.__main__ import main\nmain()")  # fmt: skip
    stage = ("from flatness.stages.train_group import main\n"
             f"main(['--run', *{overrides!r}, 'out_dir={tmp_path / 'b'}'])")  # fmt: skip
    for code, out in ((by_hand, "a"), (stage, "b")):
        loaded = _modules_after(code)
        assert (tmp_path / out / "metrics.json").is_file()  # it did train
        assert {"torch", "flatness.training.driver"} <= loaded
        assert not HEAVY_UNUSED & loaded, sorted(HEAVY_UNUSED & loaded)
        assert not any(m.startswith("flatness.measures.algorithms") for m in loaded)
