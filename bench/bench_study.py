"""Benchmark: expanding a paper-scale study, and what each Snakemake process pays for it.

    python bench/bench_study.py                      # 10,000 runs: load_study + snakemake -n
    python bench/bench_study.py --runs-only          # load_study only (seconds)
    python bench/bench_study.py --group-sizes 16     # snakemake -n for one group size only

Writes a generated study (5 widths x 4 depths x 5 learning rates x 5 batch sizes x 4 weight
decays x 5 seeds = 10,000 MNIST-1D runs) into a temp copy of conf/ and times, side by side:

- load_study cold: Hydra composes once per structural variant, every run validated and hashed;
- load_study cached: the JSON cache every later Snakemake process (each SLURM job) reads;
- a whole process that imports flatness.study and loads the cached study (a cluster job's share);
- ``snakemake -n`` end to end, cold (no cache) and warm (cache present), per group size; the
  Snakefile's own parse (its imports) is reported separately, so Snakemake's DAG time shows.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flatness.config import CONF_DIR
from flatness.study import load_study

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

PAPER_SCALE = """\
name: paper_scale
description: A generated 10,000-run flatness-vs-generalization study (bench/bench_study.py).
seeds: [0, 1, 2, 3, 4]
overrides: [data.n_train=1000, train.epochs=100, train.target_train_loss=0.01]
grids:
  generalization:
    family: generalization
    sweep:
      model.width: [16, 32, 64, 128, 256]
      model.depth: [1, 2, 3, 4]
      optim.lr: [0.003, 0.01, 0.03, 0.1, 0.3]
      train.batch_size: [16, 32, 64, 128, 256]
      optim.weight_decay: [0.0, 0.0001, 0.0005, 0.001]
stages:
  measures: true
  reparam: {grid: generalization, n_runs: 2}
  landscape: {grid: generalization}
allow_gaps: false
"""


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def process(cmd: list[str], cwd: Path, env: dict) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of a child process; its CPU seconds land in ``proc.cpu`` (less affected by
    machine load than wall time on a shared machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc.cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-only", action="store_true", help="skip snakemake -n")
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[16, 1])
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-study-"))
    conf = tmp / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "study" / "paper_scale.yaml").write_text(PAPER_SCALE)
    cache = tmp / "cache"

    study, cold = timed(lambda: load_study("paper_scale", conf_dir=conf, cache_dir=cache))
    _, cached = timed(lambda: load_study("paper_scale", conf_dir=conf, cache_dir=cache))
    (size,) = [p.stat().st_size for p in cache.glob("*.json")]
    groups, grouping = timed(lambda: load_study("paper_scale", conf_dir=conf, cache_dir=cache,
                                                group_size=16).groups())  # fmt: skip
    env = os.environ | {"FLATNESS_CONF": str(conf), "WANDB_MODE": "disabled"}
    code = ("from flatness.study import load_study; "
            f"load_study('paper_scale', conf_dir={str(conf)!r}, cache_dir={str(cache)!r})")  # fmt: skip
    job, job_proc = process([sys.executable, "-c", code], tmp, env)
    bare, _ = process([sys.executable, "-c", "pass"], tmp, env)
    print(
        f"study: {len(study.runs)} runs, {len(groups)} groups of <= 16, cache {size / 1e6:.1f} MB"
    )
    print(
        f"load_study cold:               {cold:7.2f} s  ({1e3 * cold / len(study.runs):.2f} ms/run)"
    )
    print(f"load_study cached:             {cached:7.2f} s")
    print(f"groups (size 16), cached load: {grouping:7.2f} s")
    print(f"process: import + cached load: {job:7.2f} s  (cpu {job_proc.cpu:.2f} s; bare python: "
          f"{bare:.2f} s)")  # fmt: skip
    if args.runs_only:
        return

    imports = "import flatness.study, flatness.io, flatness.stages.figure_list"  # as the Snakefile
    parse, parse_proc = process([sys.executable, "-c", imports], tmp, env)
    print(f"Snakefile imports (process):   {parse:7.2f} s  (cpu {parse_proc.cpu:.2f} s)")
    for group_size in args.group_sizes:
        work = tmp / f"work-{group_size}"
        work.mkdir()
        cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(work), "-n",
               "--quiet", "rules", "--config", "study=paper_scale", f"group_size={group_size}"]  # fmt: skip
        for label in ("cold", "warm"):
            seconds, proc = process(cmd, tmp, env)
            jobs = re.findall(r"^total\s+(\d+)", proc.stdout + proc.stderr, flags=re.M)
            status = "ok" if proc.returncode == 0 else f"rc={proc.returncode}"
            print(f"snakemake -n group_size={group_size:<3} {label}: {seconds:7.2f} s  "
                  f"(cpu {proc.cpu:.2f} s; {jobs[0] if jobs else '?'} jobs, {status})")  # fmt: skip
            if proc.returncode != 0:
                print((proc.stdout + proc.stderr)[-2000:])
                break
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
