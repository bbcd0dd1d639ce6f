"""A group's stacked Hessian measures give each run the numbers it gets when measured alone."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flatness.measures import MeasureContext, MeasureData, run_group_suite, run_suite
from flatness.measures.core.objective import Objective, generator
from flatness.measures.core.operators import HessianOperator
from flatness.measures.core.stacked import StackedHessian
from flatness.measures.suite.group import stackable
from flatness.models import build_mlp

SETTINGS = {
    "hessian_eigen": {"top_k": 3, "max_steps": 30, "tol": 1e-5, "lambda_min_steps": 20},
    "hessian_trace": {"n_matvec": 12},
    "spectral_density": {"n_probes": 3, "n_steps": 6},
    "keskar": {"enabled": False},
    "rho_sharpness": {"n_steps": 2, "n_samples": 3},
    "pacbayes": {"enabled": False},
    "sharpness_alpha": {"enabled": False},
    "local_entropy": {"enabled": False},
}


def trained_group(n_runs: int = 3, n: int = 40):
    """Runs of one architecture, each with its own weights and its own labels."""
    models, data = [], []
    for r in range(n_runs):
        g = torch.Generator().manual_seed(r)
        x = torch.randn(n, 6, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (n,), generator=g)
        torch.manual_seed(r)  # the layer initializers, in a test
        model = build_mlp((6,), 3, depth=2, width=7).double()
        for _ in range(30 + 10 * r):  # plain gradient descent (torch.optim imports its compiler)
            grads = torch.autograd.grad(
                nn.functional.cross_entropy(model(x), y), model.parameters()
            )
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads, strict=True):
                    p -= 0.2 * g
        models.append(model.float())  # as trained runs are loaded; measures work in float64
        data.append(MeasureData(x.float(), y))
    return models, data


@pytest.fixture(scope="module")
def group():
    return trained_group()


def test_stacked_product_is_each_runs_product(group):
    models, data = group
    op = StackedHessian(models, data, MeasureContext())
    v = torch.randn(len(models), op.size, generator=generator(0), dtype=torch.float64)
    hv = op.matvec(v)
    for r, (model, d) in enumerate(zip(models, data, strict=True)):
        alone = HessianOperator(Objective(model, d)).matvec(v[r])
        torch.testing.assert_close(hv[r], alone, rtol=1e-10, atol=1e-12)


def test_group_suite_equals_each_run_measured_alone(group):
    models, data = group
    seeds = [11, 12, 13]
    inits = [build_mlp((6,), 3, depth=2, width=7) for _ in models]
    grouped = run_group_suite(models, data, SETTINGS, seeds, MeasureContext(), init_models=inits)
    for r, model in enumerate(models):
        alone = run_suite(model, data[r], SETTINGS, seeds[r], MeasureContext(init_model=inits[r]))
        assert list(grouped[r]) == list(alone)
        for name, a in alone.items():
            g = grouped[r][name]
            assert (g.n_hvp, g.n_grad, g.n_loss, g.converged) == (
                a.n_hvp, a.n_grad, a.n_loss, a.converged,
            ), name  # fmt: skip
            if math.isnan(a.value):
                assert math.isnan(g.value), name
                continue
            assert g.value == pytest.approx(a.value, rel=1e-9, abs=1e-12), name
            assert (g.stderr is None) == (a.stderr is None), name
            if a.stderr is not None:
                assert g.stderr == pytest.approx(a.stderr, rel=1e-7, abs=1e-12), name
            assert set(g.details) == set(a.details), name
        for key in ("top_k",):
            assert grouped[r]["lambda_max"].details[key] == pytest.approx(
                alone["lambda_max"].details[key], rel=1e-9
            )


def test_unstackable_groups_fall_back_to_one_run_at_a_time(group):
    models, data = group
    assert stackable(models, data, SETTINGS)
    assert not stackable(models, data, {**SETTINGS, "chunk_size": 10})
    odd = [*models[:2], build_mlp((6,), 3, depth=2, width=5)]
    assert not stackable(odd, data, SETTINGS)
    grouped = run_group_suite(odd, data, SETTINGS, [1, 2, 3], MeasureContext())
    alone = run_suite(odd[2], data[2], SETTINGS, 3, MeasureContext())
    assert grouped[2]["lambda_max"].value == alone["lambda_max"].value
