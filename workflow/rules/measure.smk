# Measuring: one job per group, like train.smk; the Hessian measures run stacked over the group's
# runs. Its marker `groups/<group>/measured.json` stands for the members' measures.json files.


rule measure:
    """The flatness-measure suite on every run of one group (settings: conf/measures/)."""
    input:
        trained=f"{R}/groups/{{group}}/trained.json",
    output:
        marker=f"{R}/groups/{{group}}/measured.json",
    params:
        runs=group_run_args,
        settings=lambda wildcards: json.dumps(
            [measure_settings(rid) for rid in GROUPS[wildcards.group]]
        ),
        python=PYTHON,
    threads: 1
    conda:
        "../envs/flatness.yaml"
    log:
        f"{R}/logs/measure/{{group}}.log",
    benchmark:
        f"{R}/benchmarks/measure/{{group}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} {params.python} -m flatness.stages.measure_group"
        " {params.runs} --marker {output.marker} > {log} 2>&1"
