"""Hessian machinery against ground truth: exact Hessians of tiny float64 MLPs, finite differences,
dense matrices with known spectra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from flatness.measures.algorithms.density import slq, smoothed_density
from flatness.measures.algorithms.eigen import lanczos_eigen, power_iteration
from flatness.measures.algorithms.trace import hutchinson, hutchpp
from flatness.measures.core.interface import MeasureContext, MeasureData
from flatness.measures.core.objective import Objective, generator
from flatness.measures.core.operators import HessianOperator, MatrixOperator
from flatness.measures.suite.hessian_measures import hessian_eigen


def tiny_problem(seed: int = 0, n: int = 20, hidden: int = 6):
    """A 4-hidden-3 float64 MLP, briefly trained so the Hessian is not at initialization."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    torch.manual_seed(seed)  # only for the layer initializers, in a test
    model = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(50):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, MeasureData(x, y)


def exact_hessian(model: nn.Module, data: MeasureData) -> torch.Tensor:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    sizes = [int(np.prod(s)) for s in shapes]

    def loss(flat):
        params = {n: t.view(s) for n, t, s in zip(names, flat.split(sizes), shapes, strict=True)}
        out = functional_call(model.eval(), {**params, **frozen}, (data.x,))
        return nn.functional.cross_entropy(out, data.y)

    return torch.autograd.functional.hessian(loss, theta)


@pytest.fixture(scope="module")
def problem():
    model, data = tiny_problem()
    H = exact_hessian(model, data)
    return model, data, H, np.linalg.eigvalsh(H.numpy())


def test_hvp_matches_exact_hessian_and_chunking(problem):
    model, data, H, _ = problem
    v = torch.randn(H.shape[0], generator=generator(1), dtype=torch.float64)
    for chunk in (None, 7, 1):
        op = HessianOperator(Objective(model, data, chunk_size=chunk))
        torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)
    op_nr = HessianOperator(Objective(model, data, chunk_size=6), reuse_graph=False)
    torch.testing.assert_close(op_nr.matvec(v), H @ v, rtol=1e-10, atol=1e-12)
    assert op_nr.matvec(v).shape == v.shape and op_nr.n_matvec == 2


def test_hvp_matches_finite_difference_of_gradients(problem):
    model, data, _, _ = problem
    obj = Objective(model, data)
    op = HessianOperator(obj)
    v = torch.randn(obj.size, generator=generator(2), dtype=torch.float64)
    hv = op.matvec(v)
    obj2 = Objective(model, data)
    h = 1e-5
    fd = (obj2.loss_grad(obj2.theta0 + h * v)[1] - obj2.loss_grad(obj2.theta0 - h * v)[1]) / (2 * h)
    torch.testing.assert_close(hv, fd, rtol=1e-6, atol=1e-8)


class _WithUnused(nn.Module):
    """A model holding a parameterized layer its forward pass never uses."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.unused = nn.Linear(3, 3).double()

    def forward(self, x):
        return self.net(x)


def test_unused_and_frozen_parameters_do_not_crash():
    net, data = tiny_problem()
    net[0].bias.requires_grad_(False)  # a frozen parameter: excluded from the selection
    model = _WithUnused(net)
    obj = Objective(model, data)
    assert obj.size == sum(p.numel() for p in model.parameters() if p.requires_grad)
    v = torch.randn(obj.size, generator=generator(4), dtype=torch.float64)
    hv = HessianOperator(obj).matvec(v)
    H = exact_hessian(net, data)  # over net.0.weight, net.2.weight, net.2.bias
    n_used = H.shape[0]
    torch.testing.assert_close(hv[:n_used], H @ v[:n_used], rtol=1e-10, atol=1e-12)
    assert torch.all(hv[n_used:] == 0)  # the unused layer has zero curvature
    _, grad = obj.loss_grad()
    assert torch.all(grad[n_used:] == 0)
    assert not net[0].bias.requires_grad  # the caller's flag is untouched


def test_lanczos_matches_exact_spectrum(problem):
    model, data, _, eig = problem
    op = HessianOperator(Objective(model, data))
    res = lanczos_eigen(op, top_k=3, max_steps=op.size, tol=1e-12, gen=generator(0))
    assert res.converged
    top = np.sort(eig)[::-1][:3]
    np.testing.assert_allclose(res.eigenvalues, top, rtol=1e-6)
    scale = np.abs(eig).max()
    assert abs(res.lambda_min - eig.min()) <= 1e-6 * scale
    assert res.n_matvec <= op.size


def test_lanczos_negative_eigenvalue_and_dense_operator():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    spectrum = np.concatenate([[10.0, 9.8, 9.5], np.linspace(-3.0, 2.0, 57)])
    A = torch.tensor(q @ np.diag(spectrum) @ q.T)
    res = lanczos_eigen(MatrixOperator(A), top_k=3, max_steps=60, tol=1e-10, gen=generator(3))
    np.testing.assert_allclose(res.eigenvalues, [10.0, 9.8, 9.5], rtol=1e-8)
    np.testing.assert_allclose(res.lambda_min, -3.0, rtol=1e-8)


def test_power_iteration_converges_and_lanczos_needs_fewer_products():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    spectrum = np.concatenate([[5.0, 4.5], rng.uniform(0, 1, 198)])
    A = torch.tensor(q @ np.diag(spectrum) @ q.T)
    pw = power_iteration(MatrixOperator(A), max_iter=500, tol=1e-8, gen=generator(0))
    assert pw.converged and abs(pw.eigenvalues[0] - 5.0) < 1e-4
    assert len(pw.history) == pw.n_matvec
    lz = lanczos_eigen(MatrixOperator(A), max_steps=200, tol=1e-8, gen=generator(0), min_budget=0)
    assert lz.converged and abs(lz.eigenvalues[0] - 5.0) < 1e-10
    # products Lanczos needs to be as accurate as power iteration's stopped answer: far fewer
    target = abs(pw.eigenvalues[0] - 5.0)
    steps = next(k + 1 for k, t in enumerate(lz.ritz_history) if abs(t - 5.0) <= target)
    assert steps * 3 <= pw.n_matvec
    # deflation finds the second eigenvalue too
    pw2 = power_iteration(MatrixOperator(A), top_k=2, max_iter=1000, tol=1e-10, gen=generator(0))
    np.testing.assert_allclose(pw2.eigenvalues, [5.0, 4.5], rtol=1e-4)


def test_hutchinson_and_hutchpp_within_three_stderr(problem):
    model, data, H, _ = problem
    truth = float(torch.trace(H))
    op = HessianOperator(Objective(model, data))
    est = hutchinson(op, n_probes=400, gen=generator(5))
    assert est.n_matvec == 400 and abs(est.estimate - truth) < 3 * est.stderr
    pp = hutchpp(op, n_matvec=90, gen=generator(6))
    assert abs(pp.estimate - truth) < 3 * pp.stderr + 1e-10
    # same seed, same value
    again = hutchinson(HessianOperator(Objective(model, data)), n_probes=400, gen=generator(5))
    assert again.estimate == est.estimate


def test_slq_density_sits_on_the_exact_spectrum(problem):
    model, data, H, eig = problem
    op = HessianOperator(Objective(model, data))
    res = slq(op, n_probes=30, n_steps=op.size, gen=generator(7))
    scale = np.abs(eig).max()
    for nodes, weights in zip(res.nodes, res.weights, strict=True):
        assert abs(sum(weights) - 1) < 1e-10
        for t, w in zip(nodes, weights, strict=True):
            if w > 1e-8:  # every node that carries mass is an exact eigenvalue
                assert np.abs(eig - t).min() < 1e-6 * scale
    for order in (1, 2):
        est, se = res.moment(order)
        truth = float(np.mean(eig**order))
        assert abs(est - truth) < 3 * se
    trace, se = res.trace()
    assert abs(trace - float(torch.trace(H))) < 3 * se
    grid, density, mass = smoothed_density(res)
    assert abs(np.trapezoid(density, grid) - 1) < 1e-8
    assert abs(mass - 1) < 1e-3  # the kernels sit inside the grid
    # CDF check: the smoothed density's mass below the median eigenvalue ~ the SLQ weight there
    cut = float(np.median(eig))
    slq_cdf = np.mean(
        [
            sum(w for t, w in zip(n, ws, strict=True) if t <= cut)
            for n, ws in zip(res.nodes, res.weights, strict=True)
        ]
    )
    assert abs(slq_cdf - np.mean(eig <= cut)) < 0.15


def test_float32_option_and_caller_model_untouched(problem):
    model, data, _, eig = problem
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    obj = Objective(model, data, dtype=torch.float32)
    assert obj.theta0.dtype == torch.float32
    res = lanczos_eigen(HessianOperator(obj), max_steps=obj.size, tol=1e-5, gen=generator(0))
    assert abs(res.eigenvalues[0] - eig.max()) < 1e-4 * abs(eig.max())
    assert model.training
    assert all(p.dtype == torch.float64 for p in model.parameters())
    for b, p in zip(before, model.parameters(), strict=True):
        assert torch.equal(b, p)


def test_param_filter_gives_the_hessian_block(problem):
    model, data, H, _ = problem
    obj = Objective(model, data, param_filter=lambda name: name.startswith("2."))
    n_first = sum(p.numel() for n, p in model.named_parameters() if n.startswith("0."))
    assert obj.names == ["2.weight", "2.bias"]
    block = H[n_first:, n_first:]
    v = torch.randn(obj.size, generator=generator(8), dtype=torch.float64)
    torch.testing.assert_close(HessianOperator(obj).matvec(v), block @ v, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="no parameters"):
        Objective(model, data, param_filter=lambda name: False)


def test_trace_errors_are_honest_or_absent(problem):
    """Over many seeds the exact trace lies within 3 reported standard errors nearly always
    (t with 9 degrees of freedom: 98.5%); from too few probes no error is reported at all."""
    _, _, H, _ = problem
    truth = float(torch.trace(H))
    op = MatrixOperator(H)
    n_seeds, covered = 100, {"hutchinson": 0, "hutchpp": 0, "slq": 0}
    for seed in range(n_seeds):
        for name, est in (
            ("hutchinson", hutchinson(op, n_probes=10, gen=generator(seed))),
            ("hutchpp", hutchpp(op, n_matvec=36, gen=generator(seed))),
        ):
            covered[name] += abs(est.estimate - truth) <= 3 * est.stderr
        trace, se = slq(op, n_probes=10, n_steps=3, gen=generator(seed)).trace()
        covered["slq"] += abs(trace - truth) <= 3 * se
    assert min(covered.values()) >= 0.93 * n_seeds, covered
    # two probes: a value, no error (one degree of freedom gives 76% coverage, misses of 584 se)
    assert math.isinf(slq(op, n_probes=2, n_steps=3, gen=generator(0)).trace()[1])
    assert math.isinf(hutchinson(op, n_probes=9, gen=generator(0)).stderr)


def test_each_eigen_quantity_stops_on_its_own_residual():
    """Separated outliers on top of a dense bulk: the top converges in a few products, the bottom
    of the bulk does not; lambda_max must not wait for lambda_min, and lambda_min keeps its own
    budget and an honest flag."""
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.standard_normal((400, 400)))
    spectrum = np.concatenate([[10.0, 7.0, 5.0], rng.uniform(-0.1, 1.0, 397)])
    op = MatrixOperator(torch.tensor(q @ np.diag(spectrum) @ q.T))
    kw = dict(top_k=3, max_steps=60, tol=1e-6)
    alone = lanczos_eigen(op, **kw, min_budget=0, gen=generator(0))
    assert alone.converged and alone.n_matvec == alone.steps_top < 60
    assert alone.steps_max <= alone.steps_top
    np.testing.assert_allclose(alone.eigenvalues, [10.0, 7.0, 5.0], rtol=1e-9)
    just_max = lanczos_eigen(op, **kw | {"top_k": 1}, min_budget=0, gen=generator(0))
    assert just_max.n_matvec == alone.steps_max  # same start vector: stops where it converged
    shared = lanczos_eigen(op, **kw, min_budget=50, gen=generator(0))
    assert shared.n_matvec == 50 and shared.steps_min is None and not shared.converged
    assert shared.steps_max == alone.steps_max and shared.steps_top == alone.steps_top
    assert shared.ritz_history[: alone.n_matvec] == alone.ritz_history
    assert shared.lambda_min > spectrum.min()  # a Ritz value bounds it from above


def test_hessian_eigen_measure_reports_each_quantitys_own_products(problem):
    model, data, _, eig = problem
    settings = {"top_k": 2, "max_steps": 40, "tol": 1e-6, "lambda_min_steps": 40}
    lam_max, lam_min = hessian_eigen(model, data, settings, 0, MeasureContext())
    assert lam_max.converged and lam_max.n_hvp <= lam_max.details["steps_top"]
    assert lam_max.details["n_steps"] >= lam_max.details["steps_top"]
    alone, _ = hessian_eigen(model, data, settings | {"top_k": 1, "lambda_min_steps": 0}, 0,
                             MeasureContext())  # fmt: skip
    assert alone.details["n_steps"] == alone.n_hvp == lam_max.n_hvp
    assert abs(alone.value - eig.max()) <= 1e-6 * abs(eig.max())
    assert lam_min.n_hvp <= 40 and lam_min.value >= eig.min() - 1e-12
    if lam_min.converged:
        assert abs(lam_min.value - eig.min()) <= 1e-5 * np.abs(eig).max()
    _, skipped = hessian_eigen(model, data, settings | {"lambda_min_steps": 0}, 0, MeasureContext())
    assert math.isnan(skipped.value) and not skipped.converged
