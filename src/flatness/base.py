"""What every module may import at no cost: where conf/ is and the config error.

Kept free of heavy imports so that reading a cached study (every Snakemake process does, once per
SLURM job) never pays for importing torch, Hydra or OmegaConf."""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CONF_DIR = Path(os.environ.get("FLATNESS_CONF", Path(__file__).resolve().parents[2] / "conf"))


class ConfigError(ValueError):
    """A config value that is not allowed; the message names key, value and what is allowed."""


def digest(obj: Any) -> str:
    """12 hex digits of the SHA-256 of ``obj`` as sorted JSON: the one hash that names runs,
    groups and group keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]
