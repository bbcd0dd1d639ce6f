import json
import os
import shlex
import sys

from flatness.io import atomic_write_text

PYTHON = shlex.quote(sys.executable)  # jobs use the interpreter that runs Snakemake

# Figures per study family: (family whose grids feed it, caption file in workflow/report/).
FIGURES = {
    "learning_curves": "random_labels",
    "corruption_sweep": "random_labels",
    "regularizers": "regularizers",
    "width": "width",
    "loss_spread": "width",
}


def run_overrides(wildcards):
    """The Hydra overrides of one run, quoted for the shell."""
    return " ".join(shlex.quote(o) for o in STUDY.runs[wildcards.run_id].overrides)


def run_files(name):
    return [f"{R}/runs/{rid}/{name}" for rid in STUDY.runs]


def figure_names():
    families = set(STUDY.grids.values())
    return [name for name, family in FIGURES.items() if family in families]


def figure_targets():
    return [f"{R}/figures/{name}.png" for name in figure_names()]
