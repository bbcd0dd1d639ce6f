"""Benchmark: a one-epoch run of 100 examples as a whole process, against ``import torch`` alone.

    python bench/bench_startup.py              # 3 rounds, ~1-2 minutes on 2 cores
    python bench/bench_startup.py --rounds 5
    python bench/bench_startup.py --baseline-src /tmp/base/src    # also another checkout (its conf/
                                                                  # beside src/), e.g. from git archive

Each round runs, one after another (so machine load hits all alike), with the data cache warm:

- ``python -c "import torch"``: the floor;
- ``python -m flatness.training train.epochs=1 data.n_train=100`` with ``tracking.mode=disabled``;
- the same with ``tracking.mode=offline`` (W&B writes its offline run);
- with ``--baseline-src``: both runs again with another source tree first on PYTHONPATH (e.g. an
  earlier commit), so a change is measured against its baseline in the same rounds.

W&B runs in a sidecar process (``flatness.tracking``) that the training process waits for at its
end, so the offline run's times include W&B's (its CPU seconds too: the sidecar is a child).

Medians of wall-clock and CPU seconds (user + system of the child, which machine load
inflates far less than wall time on a shared machine) are printed side by side, then the heaviest top-level imports of the disabled run from
``python -X importtime`` (what is imported and could be left out). The goal (issue 12): the
training process costs at most ``import torch`` + 1.5 s.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = ("-m", "flatness.training", "train.epochs=1", "data.n_train=100", "progress=false")


def wall(args: list[str], env: dict, src: Path | None = None) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one child process."""
    if src is not None:
        env = env | {"PYTHONPATH": os.pathsep.join([str(src), env.get("PYTHONPATH", "")])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, cpu


def top_imports(args: list[str], env: dict, n: int = 12) -> list[tuple[float, str]]:
    """The slowest top-level imports (cumulative seconds) of one process."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], env=env,
                          capture_output=True, text=True)  # fmt: skip
    rows = re.findall(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", proc.stderr, flags=re.M)
    top = [(int(us) / 1e6, name) for us, name in rows if not name.startswith(" ")]
    return sorted(top, reverse=True)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src/ to compare")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    env = os.environ | {"FLATNESS_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_MODE", None)
    run = lambda mode, i: [*TRAIN, f"tracking.mode={mode}", f"out_dir={tmp}/{mode}-{i}"]  # noqa: E731
    wall(run("disabled", "warmup"), env)  # generates and caches MNIST-1D once
    cases = {
        "python -c 'import torch'": lambda i: ["-c", "import torch"],
        "train, tracking.mode=disabled": lambda i: run("disabled", i),
        "train, tracking.mode=offline": lambda i: run("offline", i),
    }
    sources = {name: None for name in cases}
    if args.baseline_src:
        for mode in ("disabled", "offline"):
            name = f"baseline train, {mode}"
            cases[name] = lambda i, mode=mode: run(mode, f"baseline-{i}")
            sources[name] = args.baseline_src
        wall(run("disabled", "baseline-warmup"), env, args.baseline_src)  # its data cache key
        print(f"baseline: {args.baseline_src}")
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for i in range(args.rounds):
        for name, argv in cases.items():
            times[name].append(wall(argv(i), env, sources[name]))
    floor = [statistics.median(t[k] for t in times["python -c 'import torch'"]) for k in (0, 1)]
    print(
        f"{'process':42s} {'wall':>6s} {'- torch':>8s} {'cpu':>6s} {'- torch':>8s}   wall, all rounds"
    )
    for name, ts in times.items():
        wall_s, cpu_s = (statistics.median(t[k] for t in ts) for k in (0, 1))
        rounds = " ".join(f"{t[0]:.2f}" for t in ts)
        print(f"{name:42s} {wall_s:6.2f} {wall_s - floor[0]:+8.2f} {cpu_s:6.2f} "
              f"{cpu_s - floor[1]:+8.2f}   {rounds}")  # fmt: skip
    print("\nheaviest top-level imports of the disabled run (-X importtime, cumulative s):")
    for seconds, name in top_imports(run("disabled", "imports"), env):
        print(f"  {seconds:6.2f}  {name}")


if __name__ == "__main__":
    main()
