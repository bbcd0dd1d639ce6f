rule reparam:
    """Rescale one trained run over the alpha grid; recompute every measure (Dinh et al.)."""
    input:
        measured=lambda wildcards: measured(wildcards.run_id),  # model.pt and measures.json
    output:
        reparam=f"{RUN_DIR}/reparam.json",
    params:
        overrides=run_overrides,
        alphas=",".join(str(a) for a in REPARAM.get("alphas", [0.01, 0.1, 1.0, 10.0, 100.0])),
        settings=lambda wildcards: measure_settings(wildcards.run_id),
        python=PYTHON,
    threads: 1
    conda:
        "../envs/flatness.yaml"
    log:
        f"{R}/logs/reparam/{{run_id}}.log",
    shell:
        "OMP_NUM_THREADS={threads} {params.python} -m flatness.stages.reparam run"
        " --alphas {params.alphas} {params.overrides} > {log} 2>&1"


rule reparam_summary:
    """Measured invariance of every measure and Dinh's flip for the study (numbers only)."""
    input:
        table=f"{R}/table.csv",
        reparam=[f"{R}/runs/{rid}/reparam.json" for rid in reparam_runs()],
    output:
        summary=f"{R}/reparam/summary.json",
    params:
        python=PYTHON,
        results=lambda wildcards, input: os.path.dirname(input.table),
    threads: 1
    conda:
        "../envs/flatness.yaml"
    log:
        f"{R}/logs/reparam_summary.log",
    shell:
        "OMP_NUM_THREADS={threads} {params.python} -m flatness.stages.reparam summary"
        " {params.results} {input.reparam} > {log} 2>&1"
