rule figures:
    """Every figure of the study, each captioned in the Snakemake report, drawn from files alone:
    the table, the runs' histories, what analyze wrote and the reparam and landscape numbers."""
    localrule: True
    threads: 1
    input:
        table=f"{R}/table.csv",
        manifest=f"{R}/manifest.json",
        correlations=f"{R}/correlations.csv",
        points=f"{R}/correlation_points.csv",
        trained=group_markers("trained.json"),  # the runs' history.csv
        reparam=reparam_targets(),
        landscape=landscape_targets(),
    output:
        **{
            name: report(
                f"{R}/figures/{name}.png",
                caption=caption_file(name),
                category=figure_category(name),
            )
            for name in figure_names()
        },
    params:
        python=PYTHON,
        results=lambda wildcards, input: os.path.dirname(input.table),
    conda:
        "../envs/flatness.yaml"
    log:
        f"{R}/logs/figures.log",
    shell:
        "{params.python} -m flatness.stages.figures {params.results} {output} > {log} 2>&1"


rule captions:
    """Each figure's report caption: its template, then the verdicts of its claims. The templates
    are inputs, so editing one reruns this rule."""
    localrule: True
    threads: 1
    input:
        verdicts=f"{R}/verdicts.json",
        templates=CAPTION_TEMPLATES,
    output:
        captions=directory(f"{R}/captions"),
    params:
        python=PYTHON,
        results=lambda wildcards, input: os.path.dirname(input.verdicts),
    conda:
        "../envs/flatness.yaml"
    log:
        f"{R}/logs/captions.log",
    shell:
        "{params.python} -m flatness.stages.captions {params.results} {input.templates}"
        " > {log} 2>&1"
