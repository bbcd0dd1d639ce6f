"""Benchmark: a one-epoch run of 100 examples as a whole process, against ``import torch`` alone.

    python bench/bench_startup.py              # 3 rounds, ~1-2 minutes on 2 cores
    python bench/bench_startup.py --rounds 5
    python bench/bench_startup.py --baseline-src /work/main/src   # also another checkout's code

Each round runs, one after another (so machine load hits all alike), with the data cache warm:

- ``python -c "import torch"``: the floor;
- ``python -m flatness.train train.epochs=1 data.n_train=100`` with ``tracking.mode=disabled``;
- the same with ``tracking.mode=offline`` (W&B writes its offline run);
- with ``--baseline-src``: the disabled run again with another source tree first on PYTHONPATH
  (e.g. the main checkout), so a change is measured against its baseline in the same rounds.

Medians are printed side by side, then the heaviest top-level imports of the disabled run from
``python -X importtime`` (what is imported and could be left out). The goal (issue 12): the
training process costs at most ``import torch`` + 1.5 s.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = ("-m", "flatness.train", "train.epochs=1", "data.n_train=100", "progress=false")


def wall(args: list[str], env: dict, src: Path | None = None) -> float:
    if src is not None:
        env = env | {"PYTHONPATH": os.pathsep.join([str(src), env.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


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
    env = os.environ | {"FLATNESS_CACHE": str(tmp / "cache")}
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
        name = f"train, disabled, {args.baseline_src}"
        cases[name] = lambda i: run("disabled", f"baseline-{i}")
        sources[name] = args.baseline_src
        wall(cases[name]("warmup"), env, args.baseline_src)  # its own data cache key, if any
    times: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(args.rounds):
        for name, argv in cases.items():
            times[name].append(wall(argv(i), env, sources[name]))
    floor = statistics.median(times["python -c 'import torch'"])
    print(f"{'process':34s} {'median':>8s} {'- torch':>8s}   all rounds (s)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:34s} {med:8.2f} {med - floor:+8.2f}   {' '.join(f'{t:.2f}' for t in ts)}")
    print("\nheaviest top-level imports of the disabled run (-X importtime, cumulative s):")
    for seconds, name in top_imports(run("disabled", "imports"), env):
        print(f"  {seconds:6.2f}  {name}")


if __name__ == "__main__":
    main()
