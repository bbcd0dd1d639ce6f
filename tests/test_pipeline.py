"""End to end: the smoke study through Snakemake in a temporary folder, checked against the
output contract (README, "Output contract")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from flatness.study import load_study

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
RUN_FILES = (
    "config.yaml",
    "metrics.json",
    "history.csv",
    "model.pt",
    "model_init.pt",
    "measures.json",
)


def snakemake(
    workdir: Path, *args: str, timeout: int = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    env = os.environ | {"WANDB_MODE": "offline"} | (env or {})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    proc = snakemake(workdir, "--cores", "2", "--config", "study=smoke")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir, workdir / "results" / "smoke"


@pytest.mark.slow
def test_smoke_study_writes_the_output_contract(smoke_run):
    _, results = smoke_run
    study = load_study("smoke")
    table = pd.read_csv(results / "table.csv")
    assert sorted(table["run_id"]) == sorted(study.runs)
    for rid in study.runs:
        run_dir = results / "runs" / rid
        for name in RUN_FILES:
            assert (run_dir / name).is_file(), f"{rid}/{name} missing"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["run_id"] == rid and metrics["status"] in ("ok", "diverged")
        state = torch.load(run_dir / "model.pt", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        history = pd.read_csv(run_dir / "history.csv")
        assert {"epoch", "train_loss", "test_acc"} <= set(history.columns)
    assert {"m.lambda_max", "m.hessian_trace", "m.hessian_trace.stderr", "m.path_norm"} <= set(
        table
    )
    assert table["m.lambda_max"].notna().all()
    correlations = pd.read_csv(results / "correlations.csv")
    assert {"measure", "tau", "tau_ci_low", "tau_ci_high", "psi"} <= set(correlations)
    verdicts = json.loads((results / "verdicts.json").read_text())["verdicts"]
    ids = {v["claim_id"] for v in verdicts}
    assert {"a", "b", "c", "d1", "d2", "e1", "e2", "f1", "f2", "h", "dinh", "mode"} <= ids
    assert all(v["verdict"] in ("reproduced", "contradicted", "inconclusive") for v in verdicts)
    assert all({"paper", "interval", "threshold", "n"} <= set(v["numbers"]) for v in verdicts)
    reproduction = pd.read_csv(results / "reproduction.csv")
    assert set(reproduction["claim"]) == ids
    figures = {p.stem for p in (results / "figures").glob("*.png")}
    assert {"learning_curves", "corruption_sweep", "regularizers", "width", "loss_spread",
            "flatness_scatter", "flatness_correlations", "reparam_measures", "dinh_flip",
            "interpolation", "bezier", "spectral_density"} <= figures  # fmt: skip
    points = pd.read_csv(results / "correlation_points.csv")
    gap = correlations[correlations["target"] == "gen_gap"].set_index("measure")["n_configs"]
    drawn = points[points["target"] == "gen_gap"].groupby("measure").size()
    assert drawn.reindex(gap.index, fill_value=0).tolist() == gap.tolist()  # tau's n = points
    reparam = json.loads((results / "reparam" / "summary.json").read_text())
    assert reparam["dinh_models"] and "verdicts" not in reparam  # numbers only: analysis decides
    captions = (results / "captions" / "width.rst").read_text()
    assert "Verdicts computed from this study's data" in captions and "(e2)" in captions
    leftovers = [
        p for p in results.rglob("*") if p.name.endswith(".tmp") or p.name == "checkpoint.pt"
    ]
    assert not leftovers


@pytest.mark.slow
def test_rerun_is_a_no_op_and_report_builds(smoke_run):
    workdir, results = smoke_run
    dry = snakemake(workdir, "-n", "--config", "study=smoke")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    report = results / "report.html"
    proc = snakemake(workdir, "--config", "study=smoke", "--report", str(report))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert report.stat().st_size > 100_000 and b"dinh_flip" in report.read_bytes()


@pytest.mark.slow
def test_figures_rebuild_from_results_alone(smoke_run):
    _, results = smoke_run
    target = results / "figures" / "width.png"
    target.unlink()
    cmd = [sys.executable, "-m", "flatness.stages.figures", str(results), str(target)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    assert target.stat().st_size > 10_000


@pytest.mark.slow
def test_forcerun_figures_redraws_every_figure(smoke_run):
    """The figures rule alone draws every figure, from files: forcing it rewrites every PNG and
    runs no other rule."""
    workdir, results = smoke_run
    before = {p.name: p.stat().st_mtime_ns for p in (results / "figures").glob("*.png")}
    proc = snakemake(workdir, "--cores", "1", "--forcerun", "figures", "--config", "study=smoke")
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = proc.stdout + proc.stderr
    start = stats.index("Job stats")
    jobs = stats[start : stats.index("total", start)]
    assert "figures" in jobs and not any(r in jobs for r in ("reparam", "landscape", "analyze"))
    after = {p.name: p.stat().st_mtime_ns for p in (results / "figures").glob("*.png")}
    assert after.keys() == before.keys() and len(after) >= 16
    assert [name for name in before if after[name] <= before[name]] == []


@pytest.mark.slow
def test_group_size_16_gives_the_table_of_group_size_1(smoke_run, tmp_path):
    """The smoke study trained and measured in groups of up to 16 runs (the stacked engines) gives
    the table of one run per job (the reference engines) up to float rounding. Tolerances, with
    what was measured on 2 CPU cores: losses 1e-5 relative (seen: 7e-7); measures 1e-3 relative
    plus 1e-6 absolute (seen: 9e-4 on values of ~1e-3 to 1e-5, whose Lanczos and sampled estimates
    carry the rounding further); accuracies and the statistics built on them within one example
    (seen: equal); status, stopping and epochs equal. Timings are not compared."""
    _, results = smoke_run
    proc = snakemake(
        tmp_path, "--cores", "2", "results/smoke/table.csv", "--config", "study=smoke",
        "group_size=16",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    study = load_study("smoke")
    assert len(load_study("smoke", group_size=16).groups()) < len(study.runs)
    alone = pd.read_csv(results / "table.csv").set_index("run_id").sort_index()
    grouped = pd.read_csv(tmp_path / "results/smoke/table.csv").set_index("run_id").sort_index()
    assert list(grouped.index) == list(alone.index) and set(grouped) == set(alone)
    numeric = [c for c in alone.select_dtypes("number") if "seconds" not in c]
    measures = [c for c in numeric if c.startswith("m.")]
    losses = [c for c in numeric if "loss" in c]
    counted = [c for c in numeric if c not in measures + losses]  # accuracies, epochs, steps, ...
    texts = [c for c in alone if c not in numeric and "seconds" not in c]
    pd.testing.assert_frame_equal(grouped[texts], alone[texts])
    np.testing.assert_allclose(grouped[losses], alone[losses], rtol=1e-5)
    np.testing.assert_allclose(grouped[measures], alone[measures], rtol=1e-3, atol=1e-6)
    data = study.runs[alone.index[0]].config["data"]
    one_example = 1 / min(data["n_train"], data["n_test"])
    np.testing.assert_allclose(grouped[counted], alone[counted], rtol=0, atol=one_example)


def test_slurm_profile_resources_reach_the_group_jobs(tmp_path):
    """A dry run of the default study (group size 16) with the SLURM profile: every train and
    measure job is one group and carries the profile's settings for its rule, GPUs included, and
    every rule the study runs has its own entry in the profile (none falls back to the default)."""
    profile = REPO / "workflow/profiles/slurm"
    env = {"FLATNESS_SLURM_GPUS": "1", "FLATNESS_SLURM_GPU_MODEL": "a100"}
    proc = snakemake(tmp_path, "-n", "--profile", str(profile), timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = [  # (rule, resources) of every planned job
        (block.split(":", 1)[0].strip(), block.split("resources: ", 1)[1].split("\n", 1)[0])
        for block in proc.stdout.split("rule ")[1:]
        if "resources: " in block
    ]
    study = load_study("default")
    assert study.group_size == 16
    planned = {rule for rule, _ in jobs}
    settings = yaml.safe_load((profile / "config.yaml").read_text())["set-resources"]
    assert planned - set(settings) == {"all"}  # the target rule runs nothing
    for rule, runtime, mem in (("train", 60, 4000), ("measure", 120, 8000)):
        resources = [r for name, r in jobs if name == rule]
        assert len(resources) == len(study.groups())
        for r in resources:
            assert f"runtime={runtime}," in r and f"mem_mb={mem}," in r, r
            assert "gpu=1" in r and "gpu_model=a100" in r, r
