rule measure:
    """The flatness-measure suite on one trained run (settings: conf/measures/)."""
    input:
        metrics=f"{RUN_DIR}/metrics.json",
        model=f"{RUN_DIR}/model.pt",
    output:
        measures=f"{RUN_DIR}/measures.json",
    params:
        overrides=run_overrides,
        settings=lambda wildcards: measure_settings(wildcards.run_id),
        python=PYTHON,
    threads: 1
    conda:
        "../envs/flatness.yaml"
    log:
        f"{R}/logs/measure/{{run_id}}.log",
    benchmark:
        f"{R}/benchmarks/measure/{{run_id}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} {params.python} -m flatness.stages.measure"
        " {params.overrides} > {log} 2>&1"
