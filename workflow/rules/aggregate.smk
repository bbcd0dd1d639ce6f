rule manifest:
    """What later stages need to know about the study (runs, grids, stages)."""
    output:
        f"{R}/manifest.json",
    params:
        manifest=json.dumps(STUDY.manifest(), indent=2),
    localrule: True
    log:
        f"{R}/logs/manifest.log",
    run:
        atomic_write_text(output[0], params.manifest)
        atomic_write_text(log[0], f"{len(STUDY.runs)} runs\n")


rule aggregate:
    """One row per run, after a completeness check."""
    localrule: True
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


rule analyze:
    """Correlations of measures with generalization, and every claim's verdict."""
    localrule: True
    input:
        table=f"{R}/table.csv",
        manifest=f"{R}/manifest.json",
        reparam=reparam_targets(),
        landscape=landscape_targets(),
    output:
        correlations=f"{R}/correlations.csv",
        points=f"{R}/correlation_points.csv",
        verdicts=f"{R}/verdicts.json",
        reproduction=report(
            f"{R}/reproduction.csv",
            caption="../report/reproduction.rst",
            category="0. Reproduction table",
        ),
    params:
        python=PYTHON,
        results=lambda wildcards, input: os.path.dirname(input.table),
    conda:
        "../envs/flatness.yaml"
    log:
        f"{R}/logs/analyze.log",
    shell:
        "{params.python} -m flatness.stages.analyze {params.results} > {log} 2>&1"
