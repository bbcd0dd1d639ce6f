rule manifest:
    """What later stages need to know about the study (runs, grids, stages)."""
    output:
        f"{R}/manifest.json",
    params:
        manifest=json.dumps(STUDY.manifest(), indent=2),
    localrule: True
    run:
        atomic_write_text(output[0], params.manifest)


rule aggregate:
    """One row per run, after a completeness check."""
    input:
        manifest=f"{R}/manifest.json",
        metrics=run_files("metrics.json"),
    output:
        table=f"{R}/table.csv",
    log:
        f"{R}/logs/aggregate.log",
    shell:
        "{PYTHON} -m flatness.stages.aggregate {R} > {log} 2>&1"
