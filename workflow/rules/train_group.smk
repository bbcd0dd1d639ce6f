# Grouped training and measures (study key `group_size` > 1): one job trains, and one job measures,
# a group of up to `group_size` runs that differ only in what the stacked engine vectorizes (seed,
# lr, weight decay, momentum, schedule, corruption, augmentation, stopping rules). The per-run files
# are exactly those of train.smk/measure.smk, so every later rule is unchanged. The groups come from
# flatness.training.grouping (deterministic, named by the hash of their members); a rule per group, since a
# rule's outputs cannot be a function of its wildcards.

RUN_OUTPUTS = ("metrics.json", "history.csv", "model.pt", "model_init.pt", "config.yaml")
GROUPS = STUDY.groups()


def group_runs_args(members):
    """``--run <overrides>`` for every run of a group, quoted for the shell."""
    return " ".join(
        "--run " + " ".join(shlex.quote(o) for o in STUDY.runs[rid].overrides) for rid in members
    )


def group_files(members, names):
    return [f"{R}/runs/{rid}/{name}" for rid in members for name in names]


for _gid, _members in GROUPS.items():

    rule:
        name:
            f"train_group_{_gid}"
        output:
            group_files(_members, RUN_OUTPUTS),
        params:
            runs=group_runs_args(_members),
            python=PYTHON,
        threads: 1
        conda:
            "../envs/flatness.yaml"
        log:
            f"{R}/logs/train_group/{_gid}.log",
        shell:
            "OMP_NUM_THREADS={threads} {params.python} -m flatness.stages.train_group"
            " {params.runs} > {log} 2>&1"

    rule:
        name:
            f"measure_group_{_gid}"
        input:
            group_files(_members, ("metrics.json", "model.pt")),
        output:
            group_files(_members, ("measures.json",)),
        params:
            runs=group_runs_args(_members),
            settings=json.dumps([measure_settings(rid) for rid in _members]),
            python=PYTHON,
        threads: 1
        conda:
            "../envs/flatness.yaml"
        log:
            f"{R}/logs/measure_group/{_gid}.log",
        shell:
            "OMP_NUM_THREADS={threads} {params.python} -m flatness.stages.measure_group"
            " {params.runs} > {log} 2>&1"
