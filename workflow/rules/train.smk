# Training: one job per group of runs (flatness.training.grouping; study key `group_size`, a lone run is a
# group of one). A rule's outputs cannot be a function of its wildcards, so a group job declares one output,
# its marker `groups/<group>/trained.json`, written last and atomically once every member's run folder
# holds its files (run_outputs()). Later rules reach a run's files through its group's marker
# (trained(run_id)), so one rule serves every group size and `snakemake -n` stays fast.


rule train:
    """Trains every run of one group in one process; rerunning after a kill resumes each run from
    its checkpoint."""
    output:
        marker=f"{R}/groups/{{group}}/trained.json",
    params:
        runs=group_run_args,
        python=PYTHON,
    threads: 1
    conda:
        "../envs/flatness.yaml"
    log:
        f"{R}/logs/train/{{group}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{group}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} {params.python} -m flatness.stages.train_group"
        " {params.runs} --marker {output.marker} > {log} 2>&1"
