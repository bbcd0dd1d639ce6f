rule analyze:
    """Correlations of measures with generalization, and every claim's verdict."""
    localrule: True
    threads: 1
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
