"""The Snakemake SLURM profile against a real single-node SLURM cluster (scripts/slurm_cluster.sh).

What is checked, each through ``workflow/profiles/slurm`` and the snakemake-executor-plugin-slurm:

- a tiny workflow runs, and the profile batches the ``train`` jobs into one SLURM job;
- a failing job makes Snakemake exit non-zero (no hang), and ``keep-going`` still finishes the rest;
- a job killed with ``scancel`` is reported as failed, and the same command afterwards finishes the
  workflow without redoing finished jobs;
- the real project's smoke study gives the same numbers through SLURM as locally.

The session fixture starts the cluster when it is not running (needs root) and stops it, by PID, at the
end if it started it. Every Snakemake call runs in its own process session under a deadline: on expiry it
gets SIGINT (the SLURM plugin ignores SIGTERM; SIGINT makes it cancel its jobs), then SIGKILL, and the
jobs of this test file (job names start with ``flatnesstest_``) are cancelled. Nothing here can hang.

Run: ``pytest -m slurm tests/test_slurm.py`` (root, after ``scripts/slurm_cluster.sh install``). The full
smoke-study comparison (table.csv through SLURM vs locally, ~10 min on 2 cores) runs only with
``FLATNESS_SLURM_FULL=1``; by default two runs of the smoke study are compared. Both run side by side,
so both most likely see the same code even while the tree is being edited.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
STATE_DIR = Path(os.environ.get("FLATNESS_SLURM_DIR", "/tmp/flatness-slurm"))
PREFIX = "flatnesstest"  # SLURM job-name prefix of every job this file submits
SIGINT_GRACE_S = 45  # the plugin handles SIGINT at its next status check

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        shutil.which("slurmctld") is None,
        reason="SLURM is not installed (slurmctld missing); install it with "
        "`sudo scripts/slurm_cluster.sh install` to run the SLURM tests",
    ),
]


# --------------------------------------------------------------------------- helpers


@dataclass
class Finished:
    rc: int
    log: str
    seconds: float
    timed_out: bool

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.splitlines()[-n:])


class Snakemake:
    """One Snakemake process in its own session, with output to a log file."""

    def __init__(self, args: list[str], workdir: Path, env: dict[str, str], log_name: str):
        self.env = env
        self.log_path = workdir / log_name
        self._out = open(self.log_path, "w")  # noqa: SIM115 - closed in wait()
        self.start = time.monotonic()
        self.end: float | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *args],
            cwd=workdir,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def done(self) -> bool:
        """Whether the process has ended; notes when it was first seen ended."""
        if self.end is None and self.proc.poll() is not None:
            self.end = time.monotonic()
        return self.end is not None

    def wait(self, timeout: float) -> Finished:
        """Wait until the process ends or ``timeout`` seconds after its start have passed."""
        timed_out = False
        try:
            while not self.done():
                if time.monotonic() - self.start > timeout:
                    timed_out = True
                    self.stop()
                    self.done()
                    break
                time.sleep(0.25)
            seconds = self.end - self.start
        except BaseException:  # KeyboardInterrupt in pytest included: never leave jobs behind
            self.stop()
            raise
        finally:
            self._out.close()
        return Finished(
            rc=self.proc.returncode,
            log=self.log_path.read_text(errors="replace"),
            seconds=seconds,
            timed_out=timed_out,
        )

    def stop(self) -> None:
        """SIGINT (the plugin then cancels its jobs), SIGKILL after a grace period, then scancel."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=SIGINT_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        cancel_our_jobs(self.env)


def run_snakemake(args, workdir, env, timeout, log_name="snakemake.log") -> Finished:
    return Snakemake(args, workdir, env, log_name).wait(timeout)


def slurm_args(*extra: str, jobs: int = 3) -> list[str]:
    """The profile under test, with settings that only make the tests faster."""
    return [
        "--profile",
        str(PROFILE),
        "--jobs",
        str(jobs),
        # First status check after 5 s instead of 40 s (squeue needs MinJobAge >= 3x this).
        "--slurm-init-seconds-before-status-checks",
        "5",
        "--slurm-jobname-prefix",
        PREFIX,
        "--latency-wait",
        "10",
        *extra,
    ]


def our_jobs(env: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Active SLURM jobs of this file: job id -> (state, comment); the comment names the rule."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i|%j|%T|%k"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, name, state, comment = line.split("|", 3)
        if name.startswith(PREFIX + "_"):
            jobs[job_id] = (state, comment)
    return jobs


def cancel_our_jobs(env: dict[str, str]) -> None:
    try:
        ids = list(our_jobs(env))
        if ids:
            subprocess.run(["scancel", *ids], env=env, timeout=30, check=False)
    except (subprocess.SubprocessError, OSError):
        pass


def job_stats(log: str) -> dict[str, int]:
    """Snakemake's last 'Job stats' table: rule -> number of jobs it planned."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Job stats:")]
    assert starts, "no 'Job stats' table in the Snakemake log"
    stats = {}
    for line in lines[starts[-1] + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        stats[parts[0]] = int(parts[1])
    return stats


def write_snakefile(workdir: Path, text: str) -> None:
    (workdir / "Snakefile").write_text(textwrap.dedent(text))


def assert_ok(result: Finished, what: str) -> None:
    assert not result.timed_out, f"{what}: Snakemake did not finish in time\n{result.tail()}"
    assert result.rc == 0, f"{what}: Snakemake exited {result.rc}\n{result.tail()}"


# --------------------------------------------------------------------------- the cluster


def _sh(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def slurm_env():
    """Environment for Snakemake calls against the test cluster; starts/stops it if needed."""
    started = False
    if _sh("status", timeout=60).returncode != 0:
        if os.geteuid() != 0:
            pytest.skip("the SLURM test cluster is not running and starting it needs root")
        t0 = time.monotonic()
        r = _sh("start", timeout=180)
        if r.returncode != 0:
            pytest.fail(f"could not start the SLURM test cluster:\n{r.stdout}\n{r.stderr}")
        print(f"SLURM test cluster started in {time.monotonic() - t0:.1f} s")
        started = True
    env = dict(os.environ)
    for key in ("FLATNESS_SLURM_GPUS", "FLATNESS_SLURM_GPU_MODEL", "FLATNESS_SLURM_ACCOUNT"):
        env.pop(key, None)  # the test node has no GPUs and no accounts
    env["SLURM_CONF"] = str(STATE_DIR / "slurm.conf")
    node = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%c %m"], env=env, capture_output=True, text=True, timeout=30
    ).stdout.split()
    assert len(node) >= 2, f"sinfo did not describe the test node: {node}"
    env.update(  # the profile sizes jobs and batches to fit the one test node
        FLATNESS_SLURM_PARTITION="debug",
        FLATNESS_SLURM_MAX_CPUS=node[0],
        FLATNESS_SLURM_MAX_MEM_MB=node[1],
        WANDB_MODE="disabled",
    )
    try:
        yield env
    finally:
        cancel_our_jobs(env)
        if started:
            r = _sh("stop", timeout=120)
            assert r.returncode == 0, f"could not stop the SLURM test cluster:\n{r.stderr}"


# --------------------------------------------------------------------------- tiny workflows


def test_tiny_workflow_runs_and_batches_train_jobs(slurm_env, tmp_path):
    write_snakefile(
        tmp_path,
        """
        SEEDS = [0, 1, 2]

        rule all:
            input: "table.txt"

        rule train:
            output: "runs/{seed}.txt"
            shell: "echo $SLURM_JOB_ID > {output}"

        rule aggregate:
            input: expand("runs/{seed}.txt", seed=SEEDS)
            output: "table.txt"
            shell: "cat {input} > {output}; echo $SLURM_JOB_ID >> {output}"
        """,
    )
    result = run_snakemake(slurm_args(), tmp_path, slurm_env, timeout=150)
    print(f"tiny workflow through SLURM: {result.seconds:.1f} s")
    assert_ok(result, "tiny workflow")

    lines = (tmp_path / "table.txt").read_text().split()
    assert len(lines) == 4 and all(x.isdigit() for x in lines), lines
    train_ids, aggregate_id = set(lines[:3]), lines[3]
    # The profile groups train jobs 8 to a SLURM job: all three ran in one allocation.
    assert len(train_ids) == 1, f"train jobs ran in SLURM jobs {train_ids}, expected one batch"
    assert aggregate_id not in train_ids


def test_failing_job_makes_snakemake_fail(slurm_env, tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "ok.txt", "bad.txt"

        rule ok:
            output: "ok.txt"
            shell: "echo ok > {output}"

        rule bad:
            output: "bad.txt"
            shell: "echo failing on purpose >&2; exit 1"
        """,
    )
    result = run_snakemake(slurm_args(), tmp_path, slurm_env, timeout=150)
    print(f"failing workflow through SLURM: {result.seconds:.1f} s")
    assert not result.timed_out, f"Snakemake hung on a failed SLURM job\n{result.tail()}"
    assert result.rc != 0, f"a failed job did not fail the workflow\n{result.tail()}"
    assert "Error in rule bad" in result.log, result.tail()
    assert "FAILED" in result.log, result.tail()
    assert (tmp_path / "ok.txt").exists(), "keep-going (profile) should still finish rule ok"
    assert not (tmp_path / "bad.txt").exists()


def test_scancel_is_a_failure_and_rerun_resumes(slurm_env, tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "quick/1.txt", "quick/2.txt", "slow.txt"

        rule quick:
            output: "quick/{i}.txt"
            shell: "echo $SLURM_JOB_ID > {output}"

        rule slow:
            output: "slow.txt"
            shell: "if [ -e block ]; then sleep 600; fi; echo $SLURM_JOB_ID > {output}"
        """,
    )
    (tmp_path / "block").touch()
    quick = [tmp_path / "quick" / "1.txt", tmp_path / "quick" / "2.txt"]
    args = slurm_args()

    run = Snakemake(args, tmp_path, slurm_env, "first.log")
    try:
        deadline = time.monotonic() + 120
        slow_job = None
        while time.monotonic() < deadline:
            running = [
                jid
                for jid, (state, comment) in our_jobs(slurm_env).items()
                if comment == "rule_slow" and state == "RUNNING"
            ]
            if running and all(p.exists() for p in quick):
                slow_job = running[0]
                break
            assert run.proc.poll() is None, "Snakemake ended before the slow job ran"
            time.sleep(1)
        assert slow_job, "the slow job never ran beside finished quick jobs"
        subprocess.run(["scancel", slow_job], env=slurm_env, check=True, timeout=30)
    except BaseException:
        run.stop()
        raise
    first = run.wait(timeout=240)
    assert not first.timed_out, f"Snakemake hung after scancel\n{first.tail()}"
    assert first.rc != 0, f"a cancelled job did not fail the workflow\n{first.tail()}"
    assert "CANCELLED" in first.log, first.tail()
    assert not (tmp_path / "slow.txt").exists()

    mtimes = [p.stat().st_mtime_ns for p in quick]
    (tmp_path / "block").unlink()
    second = run_snakemake(args, tmp_path, slurm_env, timeout=150, log_name="second.log")
    print(f"scancel test: first run {first.seconds:.1f} s, rerun {second.seconds:.1f} s")
    assert_ok(second, "rerun after scancel")
    assert (tmp_path / "slow.txt").exists()
    assert [p.stat().st_mtime_ns for p in quick] == mtimes, "finished jobs were redone"
    stats = job_stats(second.log)
    assert stats.get("slow") == 1 and "quick" not in stats, stats


# --------------------------------------------------------------------------- the real project


def _numbers_equal(a, b) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)


def _is_timing(key: str) -> bool:
    """Wall-clock columns differ between any two runs."""
    return key.endswith("seconds") or key.endswith("_time") or key in {"duration", "elapsed"}


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}{k}.")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _flatten(v, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("."), obj


def _differences(local: dict, slurm: dict) -> list[str]:
    diffs = []
    for key in sorted(set(local) | set(slurm)):
        if _is_timing(key.split(".")[-1]):
            continue
        if key not in local or key not in slurm:
            diffs.append(f"{key}: only in {'local' if key in local else 'SLURM'}")
        elif not _numbers_equal(local[key], slurm[key]):
            diffs.append(f"{key}: local {local[key]!r} vs SLURM {slurm[key]!r}")
    return diffs


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    """The smoke study's plan (dry run), or a skip while the project cannot build it."""
    if not (REPO / "Snakefile").exists() or not (REPO / "conf/study/smoke.yaml").exists():
        pytest.skip("the project has no smoke study (conf/study/smoke.yaml) yet")
    workdir = tmp_path_factory.mktemp("dry")
    dry = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", *_project_args(workdir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, f"dry run of the smoke study failed:\n{dry.stdout}\n{dry.stderr}"
    from flatness.study import load_study

    return load_study("smoke", results_dir="results"), job_stats(dry.stdout + dry.stderr)


def _project_args(workdir: Path, *targets: str) -> list[str]:
    # Targets first: --config takes every word after it.
    snakefile = str(REPO / "Snakefile")
    return [*targets, "-s", snakefile, "--directory", str(workdir), "--config", "study=smoke"]


def _local_and_slurm(tmp_path, env, targets, timeout) -> tuple[Path, Path]:
    """The same targets locally and through SLURM, side by side (less wall time than one after the
    other, and both most likely see the same code even while someone edits the tree)."""
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_dir.mkdir()
    slurm_dir.mkdir()
    local_args = [*_project_args(local_dir, *targets), "--cores", "1"]
    local = Snakemake(local_args, tmp_path, env, "local.log")
    try:
        slurm = Snakemake(
            slurm_args(*_project_args(slurm_dir, *targets), jobs=4), tmp_path, env, "slurm.log"
        )
    except BaseException:
        local.stop()
        raise
    try:
        while not (local.done() and slurm.done()):  # each one's end time is noted as it ends
            if time.monotonic() - local.start > timeout:
                break  # wait() below stops whichever still runs
            time.sleep(0.25)
        local_result, slurm_result = local.wait(timeout), slurm.wait(timeout)
    except BaseException:
        local.stop()
        slurm.stop()
        raise
    print(f"local {local_result.seconds:.1f} s, SLURM {slurm_result.seconds:.1f} s")
    assert_ok(local_result, "local run")
    assert_ok(slurm_result, "run through SLURM")
    assert "SLURM jobid" in slurm_result.log, "nothing went through SLURM"
    return local_dir, slurm_dir


def test_smoke_runs_match_local(slurm_env, smoke_study, tmp_path):
    """Two runs of the smoke study (train + measure): SLURM and local give the same numbers."""
    study, planned = smoke_study
    groups = list(study.groups().items())[:2]  # group size 1 in the smoke study: two runs
    markers, names = ["trained.json"], ["metrics.json"]
    if "measure" in planned:
        markers.append("measured.json")
        names.append("measures.json")
    targets = [f"results/smoke/groups/{gid}/{marker}" for gid, _ in groups for marker in markers]

    local_dir, slurm_dir = _local_and_slurm(tmp_path, slurm_env, targets, timeout=300)
    diffs = []
    runs = [
        f"results/smoke/runs/{rid}/{name}" for _, ids in groups for rid in ids for name in names
    ]
    for target in runs:
        a = dict(_flatten(json.loads((local_dir / target).read_text())))
        b = dict(_flatten(json.loads((slurm_dir / target).read_text())))
        diffs += [f"{target}: {d}" for d in _differences(a, b)]
    assert not diffs, "SLURM and local runs differ:\n" + "\n".join(diffs[:40])


@pytest.mark.skipif(
    os.environ.get("FLATNESS_SLURM_FULL") != "1",
    reason="the whole smoke study, locally and through SLURM, takes ~10 min on 2 cores; "
    "set FLATNESS_SLURM_FULL=1",
)
def test_smoke_table_matches_local(slurm_env, smoke_study, tmp_path):
    """The whole smoke study: results/smoke/table.csv is the same through SLURM as locally."""
    local_dir, slurm_dir = _local_and_slurm(tmp_path, slurm_env, [], timeout=1200)

    def rows(workdir: Path) -> dict[str, dict[str, str]]:
        with open(workdir / "results/smoke/table.csv", newline="") as f:
            return {row["run_id"]: row for row in csv.DictReader(f)}

    a, b = rows(local_dir), rows(slurm_dir)
    assert sorted(a) == sorted(b), "the two tables have different runs"
    diffs = [f"{rid}: {d}" for rid in sorted(a) for d in _differences(a[rid], b[rid])]
    assert not diffs, "SLURM and local tables differ:\n" + "\n".join(diffs[:40])
