"""A group's stacked measures (Hessian, local entropy, rho-sharpness) give each run the numbers
it gets when measured alone: same values to relative 1e-9, same counts and flags."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from flatness.measures import MeasureContext, MeasureData, run_group_suite, run_suite
from flatness.measures.core.objective import Objective, generator
from flatness.measures.core.operators import HessianOperator
from flatness.measures.core.stacked import StackedHessian, StackedObjective
from flatness.measures.suite.group import stackable, stacked_measures
from flatness.models import build_mlp

SETTINGS = {
    "hessian_eigen": {"top_k": 3, "max_steps": 30, "tol": 1e-5, "lambda_min_steps": 20},
    "hessian_trace": {"n_matvec": 12},
    "spectral_density": {"n_probes": 3, "n_steps": 6},
    "keskar": {"enabled": False},
    "rho_sharpness": {"n_steps": 3, "n_samples": 3, "batch_size": 15},  # batches 15, 15, 10
    "pacbayes": {"enabled": False},
    "sharpness_alpha": {"enabled": False},
    "local_entropy": {"burn_in": 10, "n_samples": 20, "n_batches": 4},
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


def test_stacked_loss_and_gradient_are_each_runs(group):
    models, data = group
    obj = StackedObjective(models, data, MeasureContext())
    theta = obj.theta0 + 0.1 * torch.randn(obj.theta0.shape, generator=generator(1),
                                           dtype=torch.float64)  # fmt: skip
    losses, grads = obj.loss_grad(theta)
    part = obj.rows(slice(5, 17))
    for r, (model, d) in enumerate(zip(models, data, strict=True)):
        alone = Objective(model, d)
        torch.testing.assert_close(obj.theta0[r], alone.theta0, rtol=0, atol=0)
        f, g = alone.loss_grad(theta[r])
        assert losses[r] == pytest.approx(f, rel=1e-12)
        torch.testing.assert_close(grads[r], g, rtol=1e-10, atol=1e-13)
        assert part.loss(theta)[r] == pytest.approx(
            alone.rows(slice(5, 17)).loss(theta[r]), rel=1e-12
        )


def assert_as_alone(grouped, models, data, settings, seeds, inits=None):
    """Every run's grouped results equal its lone ``run_suite`` ones (values, counts, flags)."""
    inits = inits or [None] * len(models)
    for r, model in enumerate(models):
        alone = run_suite(model, data[r], settings, seeds[r], MeasureContext(init_model=inits[r]))
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
            for key in ("top_k", "f0"):
                if key in a.details:
                    assert g.details[key] == pytest.approx(a.details[key], rel=1e-9), name


def test_group_suite_equals_each_run_measured_alone(group):
    models, data = group
    seeds = [11, 12, 13]
    inits = [build_mlp((6,), 3, depth=2, width=7) for _ in models]
    assert stacked_measures(models, data, SETTINGS) == [
        "hessian_eigen", "hessian_trace", "spectral_density", "rho_sharpness", "local_entropy",
    ]  # fmt: skip
    grouped = run_group_suite(models, data, SETTINGS, seeds, MeasureContext(), init_models=inits)
    assert_as_alone(grouped, models, data, SETTINGS, seeds, inits)


def test_a_diverging_chain_stops_alone_while_the_others_go_on(group):
    """One run made 900x sharper in its second layer's weights (layer 1 scaled by 30, layer 2 by
    1/30: the same function, Dinh et al.) at a step size its chain cannot take: it diverges
    after a few steps, the other two chains run to the end, each exactly as when alone."""
    models, data = group
    sharp = copy.deepcopy(models[2])
    with torch.no_grad():
        sharp[1].weight.mul_(30.0), sharp[1].bias.mul_(30.0), sharp[3].weight.div_(30.0)
    models = [*models[:2], sharp]
    off = {n: {"enabled": False} for n in SETTINGS if n not in ("local_entropy", "rho_sharpness")}
    settings = {**off, "norms": {"enabled": False},
                "rho_sharpness": {"n_steps": 3, "n_samples": 3, "rho": 1.0},
                "local_entropy": {"lr": 1.1, "burn_in": 20, "n_samples": 40, "n_batches": 4}}  # fmt: skip
    seeds = [1, 1, 1]
    grouped = run_group_suite(models, data, settings, seeds, MeasureContext())
    assert_as_alone(grouped, models, data, settings, seeds)
    flags = [(g["local_energy_gap"].converged, g["local_energy_gap"].n_grad) for g in grouped]
    assert [c for c, _ in flags] == [True, True, False]
    assert flags[2][1] < flags[0][1] == flags[1][1] == 61


def test_unstackable_groups_fall_back_to_one_run_at_a_time(group):
    models, data = group
    assert stackable(models, data, SETTINGS)
    assert not stackable(models, data, {**SETTINGS, "chunk_size": 10})
    for change, left_out in (
        ({"rho_sharpness": {"chunk_size": 10}}, ["rho_sharpness"]),
        ({"hessian_trace": {"method": "hutchpp", "n_matvec": 12}}, ["hessian_trace"]),
        ({"hessian_eigen": {**SETTINGS["hessian_eigen"], "reuse_graph": False}},
         ["hessian_eigen", "hessian_trace", "spectral_density"]),
    ):  # fmt: skip
        names = stacked_measures(models, data, {**SETTINGS, **change})
        assert [n for n in stacked_measures(models, data, SETTINGS) if n not in names] == left_out
    odd = [*models[:2], build_mlp((6,), 3, depth=2, width=5)]
    assert not stackable(odd, data, SETTINGS)
    grouped = run_group_suite(odd, data, SETTINGS, [1, 2, 3], MeasureContext())
    alone = run_suite(odd[2], data[2], SETTINGS, 3, MeasureContext())
    assert grouped[2]["lambda_max"].value == alone["lambda_max"].value
