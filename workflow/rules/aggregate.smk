rule manifest:
    """What later stages need to know about the study (runs, grids, stages)."""
    output:
        f"{R}/manifest.json",
    params:
        # a function: only the process that runs this job writes the text, not every cluster job
        manifest=lambda wildcards: json.dumps(STUDY.manifest(), indent=2),
    localrule: True
    threads: 1
    log:
        f"{R}/logs/manifest.log",
    run:
        atomic_write_text(output[0], params.manifest)
        atomic_write_text(log[0], f"{len(STUDY.runs)} runs\n")


rule aggregate:
    """One row per run, after a completeness check."""
    localrule: True
    threads: 1
    input:
        manifest=f"{R}/manifest.json",
        trained=group_markers("trained.json"),
        measured=group_markers("measured.json") if measures_enabled() else [],
    output:
        table=f"{R}/table.csv",
    params:
        python=PYTHON,
        results=lambda wildcards, input: os.path.dirname(input.manifest),
    conda:
        "../envs/flatness.yaml"
    log:
        f"{R}/logs/aggregate.log",
    shell:
        "{params.python} -m flatness.stages.aggregate {params.results} > {log} 2>&1"
