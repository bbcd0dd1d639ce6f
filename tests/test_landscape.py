"""Topology tools against exact facts: endpoints, per-filter norms, Bezier vs linear barriers."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flatness import landscape as ls


def _data(n: int = 200, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    y = ((x[:, 0] * x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()) % 3
    return x, y


def _mlp(seed: int, width: int = 16) -> nn.Sequential:
    with torch.random.fork_rng():  # seeded default initializer, global RNG state restored after
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 3))


def _train(model: nn.Module, x, y, steps: int = 300) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def _loss(model, x, y) -> float:
    with torch.no_grad():
        return F.cross_entropy(model.eval()(x), y).item()


def _permuted(model: nn.Sequential, seed: int = 1) -> nn.Sequential:
    """The same function with its hidden units permuted: a second, distinct minimum."""
    perm = torch.randperm(model[0].out_features, generator=torch.Generator().manual_seed(seed))
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].weight.copy_(model[0].weight[perm])
        other[0].bias.copy_(model[0].bias[perm])
        other[2].weight.copy_(model[2].weight[:, perm])
    return other


@pytest.fixture(scope="module")
def solution():
    x, y = _data()
    return _train(_mlp(0), x, y), x, y


def test_interpolation_endpoints_and_caller_untouched(solution):
    model, x, y = solution
    init = _mlp(5)
    model.train()
    before = copy.deepcopy(model.state_dict())
    path = ls.linear_interpolation(init, model, x, y, n_points=11, t_range=(-0.5, 1.5))
    assert path.loss[path.t == 0][0] == pytest.approx(_loss(init, x, y), rel=1e-6)
    assert path.loss[path.t == 1][0] == pytest.approx(_loss(copy.deepcopy(model), x, y), rel=1e-6)
    assert model.training, "the caller's mode is kept"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert path.t.min() == -0.5 and path.barrier >= 0
    json.dumps(path.to_dict())


def test_interpolation_rejects_mismatched_models(solution):
    model, x, y = solution
    with pytest.raises(ValueError, match="model_b"):
        ls.linear_interpolation(model, _mlp(0, width=8), x, y)
    with pytest.raises(ValueError, match="same, non-zero number of rows"):
        ls.loss_surface_1d(model, x[:10], y)
    with pytest.raises(ValueError, match="n_points"):
        ls.linear_interpolation(model, model, x, y, n_points=1)


def test_filter_normalized_direction_norms(solution):
    model = nn.Sequential(nn.Conv1d(2, 5, 3), nn.BatchNorm1d(5), nn.Flatten(), nn.Linear(10, 3))
    d = ls.filter_normalized_direction(model, torch.Generator().manual_seed(0))
    for name, w in model.named_parameters():
        if w.dim() <= 1:
            assert torch.count_nonzero(d[name]) == 0, f"{name}: biases and BN params are ignored"
        else:
            rows = lambda t: t.detach().reshape(t.shape[0], -1).norm(dim=1)  # noqa: E731
            torch.testing.assert_close(rows(d[name]), rows(w))
    again = ls.filter_normalized_direction(model, torch.Generator().manual_seed(0))
    assert all(torch.equal(d[k], again[k]) for k in d), "seeded: the same direction"


def test_surfaces_center_equals_model_loss(solution):
    model, x, y = solution
    s1 = ls.loss_surface_1d(model, x, y, n_points=9, seed=3)
    s2 = ls.loss_surface_2d(model, x, y, n_points=5, seed=3)
    center = _loss(copy.deepcopy(model), x, y)
    assert s1.loss[s1.alphas == 0][0] == pytest.approx(center, rel=1e-6)
    assert s2.loss.shape == (5, 5)
    assert s2.loss[2, 2] == pytest.approx(center, rel=1e-6)
    assert s1.loss.min() == pytest.approx(center, rel=0.05), "a trained net sits near a minimum"
    json.dumps(s2.to_dict())


def test_bezier_beats_linear_between_permuted_solutions(solution):
    model, x, y = solution
    other = _permuted(model)
    assert _loss(other, x, y) == pytest.approx(_loss(copy.deepcopy(model), x, y), rel=1e-5)
    res = ls.bezier_curve(model, other, x, y, steps=300, lr=0.05, batch_size=64, n_points=11)
    assert res.linear.barrier > 0.05, "averaging mismatched units leaves a real barrier"
    assert res.curve.loss[0] == pytest.approx(res.linear.loss[0], rel=1e-6), "endpoints fixed"
    assert res.curve.loss[-1] == pytest.approx(res.linear.loss[-1], rel=1e-6)
    assert res.curve.barrier < 0.5 * res.linear.barrier
    early, late = res.train_loss[:30].mean(), res.train_loss[-30:].mean()
    assert late < early, "training lowers the expected loss along the curve"
    assert json.loads(json.dumps(res.to_dict()))["curve"]["kind"] == "bezier"
    assert np.all(np.isfinite(res.curve.loss))
