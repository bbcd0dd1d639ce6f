"""The flatness study DAG: train -> measure -> aggregate -> figures -> report.

    snakemake --cores all                          # the default study (MNIST-1D, no downloads)
    snakemake --cores all --config study=width     # another study in conf/study/
    snakemake --report results/report.html         # the HTML report with every figure

Every grid lives in conf/study/<name>.yaml; this file asks flatness.study for the runs and restates
nothing. Run folders are named by the hash of each run's result-determining config. Runs are
trained and measured a group per job, whatever the group size (a lone run is a group of one):
workflow/rules/train.smk says how.
"""

import os

from flatness.study import load_study


configfile: os.path.join(workflow.basedir, "workflow/config.yaml")


# Expanded once, then read from a JSON cache by every Snakemake process (each SLURM job parses
# this file again): the cache is named by a hash of conf/, the flatness sources and these arguments.
STUDY = load_study(
    config["study"],
    results_dir=config["results"],
    group_size=config.get("group_size"),
    cache_dir=".snakemake/flatness/studies",
)
R = f"{config['results']}/{STUDY.name}"
RUN_DIR = f"{R}/runs/{{run_id}}"


wildcard_constraints:
    run_id="[0-9a-f]{12}",
    group="[0-9a-f]{12}",


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/measure.smk"
include: "workflow/rules/reparam.smk"
include: "workflow/rules/landscape.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/analyze.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        f"{R}/table.csv",
        f"{R}/correlations.csv",
        f"{R}/verdicts.json",
        figure_targets(),
        reparam_targets(),
        landscape_targets(),
