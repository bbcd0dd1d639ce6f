rule train:
    """One training run; rerunning after a kill resumes from its checkpoint."""
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        history=f"{RUN_DIR}/history.csv",
        model=f"{RUN_DIR}/model.pt",
        init=f"{RUN_DIR}/model_init.pt",
        config=f"{RUN_DIR}/config.yaml",
    params:
        overrides=run_overrides,
        python=PYTHON,
    threads: 1
    conda:
        "../envs/flatness.yaml"
    log:
        f"{R}/logs/train/{{run_id}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{run_id}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} {params.python} -m flatness.training {params.overrides}"
        " progress=false > {log} 2>&1"
