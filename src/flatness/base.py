"""What every module may import at no cost: where conf/ is, the config error, the config's choices.

Kept free of heavy imports so that reading a cached study (every Snakemake process does, once per
SLURM job) never pays for importing torch, Hydra or OmegaConf, and so that validating a run config
does not either: an entry point composes and validates its config, starts the W&B sidecar
(``flatness.tracking``), and only then imports torch."""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CONF_DIR = Path(os.environ.get("FLATNESS_CONF", Path(__file__).resolve().parents[2] / "conf"))


# The names a config (or train_group's --engine) may choose from; the modules that implement them
# (corruptions, data, models, training.driver) import these same tuples, so a name is allowed
# exactly when it is implemented.
CORRUPTION_TYPES = ("none", "labels", "shuffled_pixels", "random_pixels", "gaussian")
DATASET_NAMES = ("mnist1d", "digits", "mnist", "cifar10")
MODEL_NAMES = ("mlp", "cnn")
ENGINE_CHOICES = ("auto", "reference", "stacked")


class ConfigError(ValueError):
    """A config value that is not allowed; the message names key, value and what is allowed."""


def digest(obj: Any) -> str:
    """12 hex digits of the SHA-256 of ``obj`` as sorted JSON: the one hash that names runs,
    groups and group keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]
