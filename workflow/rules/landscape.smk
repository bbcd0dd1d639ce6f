rule landscape:
    """Interpolations, filter-normalized surfaces, Bezier curves and spectral density (numbers)."""
    input:
        pair=lambda wildcards: sorted({measured(rid) for rid in landscape_pair()}),
        extra=lambda wildcards: sorted(
            {trained(rid) for pair in extra_mode_pairs() for rid in pair}
        ),
    output:
        landscape=f"{R}/landscape/landscape.json",
    params:
        python=PYTHON,
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.landscape)),
        pair=lambda wildcards: " ".join(landscape_pair()),
        extra=lambda wildcards: " ".join(f"{a},{b}" for a, b in extra_mode_pairs()),
        bezier_steps=LANDSCAPE.get("bezier_steps", 300),
    threads: 1
    conda:
        "../envs/flatness.yaml"
    log:
        f"{R}/logs/landscape.log",
    shell:
        "OMP_NUM_THREADS={threads} {params.python} -m flatness.stages.landscape"
        " {params.results} {params.pair} --bezier-steps {params.bezier_steps}"
        " --extra-pairs {params.extra} > {log} 2>&1"
