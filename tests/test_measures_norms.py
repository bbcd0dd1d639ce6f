"""Norm measures against direct computations: enumerated paths, per-example gradients, folding."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from flatness.measures.algorithms.norms import (
    fisher_rao,
    fold_batchnorm,
    margin,
    norm_values,
    path_norm_squared,
)
from flatness.models import build_cnn, build_mlp


def mlp(sizes, bias=True, seed=0):
    torch.manual_seed(seed)  # layer initializers only, in a test
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double().eval()


@torch.no_grad()
def enumerate_paths(model: nn.Sequential) -> float:
    """Sum over every path (from an input or a bias unit to an output) of its squared weights."""
    linears = [m for m in model if isinstance(m, nn.Linear)]

    def downstream(layers, units) -> float:
        prod = 1.0
        for k in range(1, len(layers)):
            prod *= float(layers[k].weight[units[k], units[k - 1]]) ** 2
        return prod

    total = 0.0
    for start in range(len(linears)):  # paths entering at layer ``start``
        layers = linears[start:]
        for units in itertools.product(*[range(m.out_features) for m in layers]):
            rest = downstream(layers, units)
            total += float(layers[0].bias[units[0]]) ** 2 * rest  # from the bias unit
            if start == 0:  # from each input
                total += sum(float(w) ** 2 for w in layers[0].weight[units[0]]) * rest
    return total


@pytest.mark.parametrize("sizes", [(3, 4, 2), (3, 4, 3, 2)])
def test_path_norm_equals_enumerated_paths(sizes):
    model = mlp(sizes)
    assert path_norm_squared(model, (sizes[0],)) == pytest.approx(enumerate_paths(model), rel=1e-12)


def rescale(model: nn.Sequential, alpha: float) -> nn.Sequential:
    """Dinh's alpha-scaling of the first two Linear layers (function unchanged)."""
    out = fold_batchnorm(model)
    lin = [m for m in out if isinstance(m, nn.Linear)]
    with torch.no_grad():
        lin[0].weight.mul_(alpha)
        lin[0].bias.mul_(alpha)
        lin[1].weight.div_(alpha)
    return out


def test_norm_values_invariances_and_direct_forms():
    model = mlp((5, 7, 6, 3), seed=1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)  # the model's own labels: a positive margin
    base = norm_values(model, x, y, init_model=model)
    scaled = norm_values(rescale(model, 7.0), x, y)
    for key in ("path_norm", "fisher_rao", "fisher_rao_empirical", "log_prod_spectral", "margin"):
        assert scaled[key] == pytest.approx(base[key], rel=1e-9), key
    assert scaled["frobenius_sum"] != pytest.approx(base["frobenius_sum"], rel=1e-3)
    assert base["dist_init"] == 0.0 and math.isnan(scaled["dist_init"])
    mats = [m.weight.detach() for m in model if isinstance(m, nn.Linear)]
    assert base["frobenius_sum"] == pytest.approx(sum(float((w**2).sum()) for w in mats))
    spec = sum(2 * math.log(float(torch.linalg.matrix_norm(w, 2))) for w in mats)
    assert base["log_prod_spectral"] == pytest.approx(spec)
    assert base["margin"] > 0
    assert base["path_norm_margin"] == pytest.approx(base["path_norm"] / base["margin"] ** 2)
    flipped = norm_values(model, x, (y + 1) % 3)  # every point misclassified: margin < 0
    assert flipped["margin"] < 0 and math.isnan(flipped["path_norm_margin"])


def per_example_theta_dot_grad(model, x, y_col):
    params = list(model.parameters())
    theta = [p.detach() for p in params]
    out = []
    for xi, yi in zip(x, y_col, strict=True):
        loss = nn.functional.cross_entropy(model(xi[None]), yi[None])
        grads = torch.autograd.grad(loss, params)
        out.append(sum(float((g * t).sum()) for g, t in zip(grads, theta, strict=True)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("bias", [False, True])
def test_fisher_rao_matches_per_example_gradients(bias):
    model = mlp((4, 5, 5, 3), bias=bias, seed=2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(15, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (15,), generator=g)
    fr_model, fr_emp = fisher_rao(model, x, y)
    emp_direct = float(per_example_theta_dot_grad(model, x, y).pow(2).mean())
    assert fr_emp == pytest.approx(emp_direct, rel=1e-10)
    with torch.no_grad():
        prob = torch.softmax(model(x), 1)
    model_direct = 0.0
    for c in range(3):
        s = per_example_theta_dot_grad(model, x, torch.full((15,), c))
        model_direct += float((prob[:, c] * s**2).mean())
    assert fr_model == pytest.approx(model_direct, rel=1e-10)
    if not bias:  # Liang et al.'s identity: <theta, df/dtheta> = (depth + 1) f for bias-free ReLU
        with torch.no_grad():
            f = model(x)
            onehot = nn.functional.one_hot(y, 3).double()
            identity = (3 * ((torch.softmax(f, 1) - onehot) * f).sum(1)).pow(2).mean()
        assert fr_emp == pytest.approx(float(identity), rel=1e-10)


@pytest.mark.parametrize("builder,shape", [(build_mlp, (12,)), (build_cnn, (1, 12))])
def test_fold_batchnorm_preserves_the_function(builder, shape):
    torch.manual_seed(3)
    model = builder(shape, 4, depth=2, width=6, batch_norm=True).double()
    for m in model:
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            with torch.no_grad():
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    model.eval()
    x = torch.randn(8, *shape, dtype=torch.float64)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in folded)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-10, atol=1e-12)
    values = norm_values(model, x, torch.zeros(8, dtype=torch.long))
    assert math.isfinite(values["path_norm"]) and values["path_norm"] > 0


def test_margin_is_the_low_order_statistic():
    logits = torch.tensor([[3.0, 1.0], [0.0, 2.0], [1.0, 1.5], [5.0, 0.0]])
    y = torch.tensor([0, 1, 0, 0])  # margins 2, 2, -0.5, 5 -> sorted -0.5, 2, 2, 5
    assert margin(logits, y, 10.0) == -0.5
    assert margin(logits, y, 50.0) == 2.0
