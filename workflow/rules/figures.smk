rule figures:
    """Every figure of the study's families, each captioned in the Snakemake report."""
    localrule: True
    input:
        table=f"{R}/table.csv",
        correlations=f"{R}/correlations.csv",
        histories=run_files("history.csv"),
    output:
        **{
            name: report(
                f"{R}/figures/{name}.png",
                caption=caption_file(name),
                category=FIGURES[name][0],
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
