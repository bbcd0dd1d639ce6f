"""Hessian machinery against ground truth: exact Hessians of tiny float64 MLPs, finite differences,
dense matrices with known spectra."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from flatness.measures.base import MeasureData
from flatness.measures.density import slq, smoothed_density
from flatness.measures.eigen import lanczos_eigen, power_iteration
from flatness.measures.objective import Objective, generator
from flatness.measures.operators import HessianOperator, MatrixOperator
from flatness.measures.trace import hutchinson, hutchpp


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
    lz = lanczos_eigen(MatrixOperator(A), max_steps=200, tol=1e-8, gen=generator(0), want_min=False)
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
