import functools
import glob
import json
import os
import shlex
import sys

from flatness.io import atomic_write_text
from flatness.stages import figure_list

PYTHON = shlex.quote(sys.executable)  # jobs use the interpreter that runs Snakemake



def run_overrides(wildcards):
    """The Hydra overrides of one run, quoted for the shell."""
    return " ".join(shlex.quote(o) for o in STUDY.runs[wildcards.run_id].overrides)


def measure_settings(run_id):
    """The run's measure settings as JSON: a change in conf/measures/ reruns the measure stage
    (serialized once, when the study is expanded, and cached with it)."""
    return STUDY.measure_settings[run_id]


def measures_enabled():
    return bool(STUDY.stages.get("measures", True))


REPARAM = STUDY.stages.get("reparam") or {}


def reparam_runs():
    """The first ``n_runs`` runs of the grid named in ``stages.reparam`` (empty: no stage)."""
    if not REPARAM:
        return []
    grid = REPARAM.get("grid")
    runs = [rid for rid, r in STUDY.runs.items() if grid is None or grid in r.grids]
    return runs[: int(REPARAM.get("n_runs", 1))]


def reparam_targets():
    return [f"{R}/reparam/summary.json"] if REPARAM else []


LANDSCAPE = STUDY.stages.get("landscape") or {}


@functools.cache
def landscape_pair():
    """Two runs of the landscape grid's first configuration that differ only in their seed (the
    first pair in study order; seeds vary fastest there, so usually the grid's first two runs)."""
    grid = LANDSCAPE.get("grid")
    first_of = {}
    for r in STUDY.runs.values():
        if grid is None or grid in r.grids:
            gid = STUDY.seedless_ids[r.run_id]  # flatness.config.group_id, cached with the study
            if gid in first_of:
                return first_of[gid], r.run_id
            first_of[gid] = r.run_id
    raise ValueError(
        f"stages.landscape.grid={grid!r}: no configuration with two seeds; the landscape stage "
        "needs two runs that differ only in their seed"
    )


def extra_mode_pairs():
    """Disjoint seed pairs beyond landscape_pair(), from every configuration of the landscape
    grid, up to stages.landscape.n_pairs pairs in all: mode connectivity gets an interval."""
    n_pairs = LANDSCAPE.get("n_pairs", 3)  # validated with the study (flatness.study_checks)
    grid, first = LANDSCAPE.get("grid"), set(landscape_pair())
    by_config = {}
    for r in STUDY.runs.values():
        if (grid is None or grid in r.grids) and r.run_id not in first:
            by_config.setdefault(STUDY.seedless_ids[r.run_id], []).append(r.run_id)
    pairs = [(ids[i], ids[i + 1]) for ids in by_config.values() for i in range(0, len(ids) - 1, 2)]
    return pairs[: n_pairs - 1]


def landscape_targets():
    return [f"{R}/landscape/landscape.json"] if LANDSCAPE else []


GROUPS = STUDY.groups()  # group id -> its run ids, in study order (flatness.training.grouping)
GROUP_OF = {rid: gid for gid, members in GROUPS.items() for rid in members}


def group_run_args(wildcards):
    """``--run <overrides>`` for every run of the job's group, quoted for the shell."""
    return _group_run_args(wildcards.group)


@functools.cache  # a group's train and measure jobs ask for the same text
def _group_run_args(group):
    return " ".join(
        "--run " + " ".join(shlex.quote(o) for o in STUDY.runs[rid].overrides)
        for rid in GROUPS[group]
    )


def trained(run_id):
    """The marker that stands for a run's training files (train.smk)."""
    return f"{R}/groups/{GROUP_OF[run_id]}/trained.json"


def measured(run_id):
    """The marker that stands for a run's measures.json (measure.smk)."""
    return f"{R}/groups/{GROUP_OF[run_id]}/measured.json"


def group_markers(name):
    """Every group's marker ``name`` (trained.json or measured.json): all runs' files."""
    return [f"{R}/groups/{gid}/{name}" for gid in GROUPS]


def figure_names():
    stages = {s for s in figure_list.STAGES if STUDY.stages.get(s)}
    return figure_list.figure_names(set(STUDY.grids.values()), stages)


def figure_category(name):
    return figure_list.category(name)


def figure_targets():
    """Every figure and the captions the report shows under them."""
    return [f"{R}/figures/{name}.png" for name in figure_names()] + [f"{R}/captions"]


CAPTION_TEMPLATES = sorted(glob.glob(os.path.join(workflow.basedir, "workflow/report/*.rst")))


def caption_file(name):
    """The caption the analyze stage writes: the figure's claim plus its verdicts from the data."""
    return os.path.abspath(f"{R}/captions/{name}.rst")
