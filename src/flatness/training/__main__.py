"""``python -m flatness.training <overrides>``: train one run by hand (a group of one).

    python -m flatness.training model.width=64 data.corruption.type=labels data.corruption.fraction=1

writes ``out_dir`` (default ``results/manual/run``) with the files of ``driver.run_group``. The
Snakefile trains every run through the ``train_group`` stage, which calls the same driver.

Start-up is kept to what the run needs: the config is composed and the W&B sidecar started
(``flatness.tracking.start``) before the driver, and with it torch, is imported.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from flatness import tracking
from flatness.config import CONF_DIR, resolved, validate


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    cfg = resolved(cfg)
    validate(cfg)  # a bad value fails before anything starts
    tracking.start([cfg.tracking])
    from flatness.training.driver import run_group  # torch: imported while the sidecar starts

    progress = cfg.progress if isinstance(cfg.progress, bool) else sys.stderr.isatty()
    metrics = run_group([cfg], progress=progress)[0]
    print(
        f"{metrics['run_id']}: {metrics['status']}, train acc {metrics['train_acc']:.4f}, "
        f"test acc {metrics['test_acc']:.4f} after {metrics['epochs']} epochs -> {cfg.out_dir}"
    )


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
