"""Dinh's rescalings: the function is unchanged, the Hessian moves as D^-1 H D^-1, and the
invariant measures (path norm, Fisher-Rao norm, adaptive sharpness) do not move at all."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from flatness.measures import MeasureContext, MeasureData, MeasureResult, run_suite
from flatness.measures.algorithms.norms import fisher_rao, fold_batchnorm, path_norm_squared
from flatness.measures.algorithms.sharpness import average_sharpness, projected_ascent
from flatness.models import build_cnn, build_mlp
from flatness.plotting.reparam import (
    dinh_flip_figure,
    measures_vs_alpha,
    verdict_table,
    write_verdicts_csv,
)
from flatness.reparam import (
    alpha_scale,
    blocks,
    bn_rescaling,
    dinh_rescaling,
    layer_rescaling,
    scale_batchnorm,
    scale_layers,
    scale_units,
    unit_rescaling,
)
from flatness.reparam_study import dinh_flip, invariance_verdicts, reparam_sweep

ARCHS = {
    "mlp": (build_mlp, (12,), dict(depth=2, width=6)),
    "mlp_bn_dropout": (build_mlp, (12,), dict(depth=2, width=6, batch_norm=True, dropout=0.3)),
    "cnn1d_bn": (build_cnn, (16,), dict(depth=2, width=3, batch_norm=True)),
    "cnn2d_dropout": (build_cnn, (2, 6, 6), dict(depth=2, width=3, dropout=0.2)),
}


def make_model(arch: str, seed: int = 0) -> tuple[nn.Sequential, torch.Tensor]:
    """A float64 model in eval mode with non-trivial BN statistics and affine parameters."""
    build, shape, kwargs = ARCHS[arch]
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build(shape, 3, **kwargs).double()
    x = torch.randn(24, *shape, generator=gen, dtype=torch.float64)
    model.train()
    with torch.no_grad():
        model(2.0 * x + 0.5)  # running stats that differ from (0, 1)
        for module in model:
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.weight.copy_(torch.randn(module.num_features, generator=gen))
                module.bias.copy_(torch.randn(module.num_features, generator=gen))
    return model.eval(), x


def transforms_for(model: nn.Module, gen: torch.Generator) -> dict[str, nn.Module]:
    found = blocks(model)
    raw = torch.exp(torch.empty(len(found)).uniform_(-3, 3, generator=gen)).double()
    scales = (raw / raw.prod() ** (1 / len(found))).tolist()
    out = {
        "dinh_100": alpha_scale(model, 100.0),
        "dinh_0.01_first_last": alpha_scale(model, 1e-2, (0, len(found) - 1)),
        "layers_random": scale_layers(model, scales),
    }
    for k in range(len(found) - 1):
        units = torch.exp(torch.empty(found[k].channels).uniform_(-4, 4, generator=gen))
        out[f"units_{k}"] = scale_units(model, k, units)
    if any(b.bn for b in found):
        out["bn_100"] = scale_batchnorm(model, 100.0)
        out["bn_first_0.01"] = scale_batchnorm(model, 1e-2, [0])
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_transforms_preserve_logits_and_leave_the_original_alone(arch):
    model, x = make_model(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model(x)
    for name, rescaled in transforms_for(model, torch.Generator().manual_seed(1)).items():
        with torch.no_grad():
            change = float((rescaled.eval()(x) - reference).abs().max())
        assert change < 1e-12 * max(1.0, float(reference.abs().max())), (name, change)
        moved = max(
            float((p.detach() - q.detach()).abs().max())
            for p, q in zip(rescaled.parameters(), model.parameters(), strict=True)
        )
        assert moved > 1e-3, f"{name} did not change any parameter"
    assert model.training is False
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} of the original model changed"


def flat_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Mean cross-entropy as a function of one flat parameter vector, and that vector."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params = dict(zip(names, torch.split(flat, [s.numel() for s in shapes]), strict=True))
        params = {n: t.view(s) for (n, t), s in zip(params.items(), shapes, strict=True)}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    return loss, theta


def hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss, theta = flat_loss(model, x, y)
    return torch.func.hessian(loss)(theta)


def small_problem(seed: int = 0, batch_norm: bool = False, steps: int = 300):
    """A 5-4-3 ReLU MLP trained (full batch, float64) on 16 Gaussian points."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_mlp((5,), 3, depth=1, width=4, batch_norm=batch_norm).double()
    train(model, x, y, steps)
    return model.eval(), x, y


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 0.05):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("transform", ["dinh", "units", "layers", "bn"])
def test_hessian_transforms_as_d_inverse_h_d_inverse(transform):
    model, x, y = small_problem(batch_norm=transform == "bn", steps=100)
    rescaling = {
        "dinh": lambda: dinh_rescaling(model, 7.0),
        "units": lambda: unit_rescaling(model, 0, [0.1, 3.0, 20.0, 0.5]),
        "layers": lambda: layer_rescaling(model, [0.2, 5.0]),
        "bn": lambda: bn_rescaling(model, 30.0),
    }[transform]()
    d = rescaling.diagonal()
    h, h_new = hessian(model, x, y), hessian(rescaling.apply(model), x, y)
    predicted = h / d[:, None] / d[None, :]
    assert float((h_new - predicted).norm() / predicted.norm()) < 1e-10


def test_top_eigenvalue_follows_the_block_scaling_and_its_limits():
    """Dinh's T_alpha on a one-hidden-layer net: H(alpha) = [[H11/a^2, H12], [H21, a^2 H22]]."""
    model, x, y = small_problem()
    h = hessian(model, x, y)
    first = 5 * 4 + 4  # W1 and b1 (scaled by alpha); then W2 (1/alpha) and b2 (unchanged)
    top_11 = float(torch.linalg.eigvalsh(h[:first, :first])[-1])
    top_22 = float(torch.linalg.eigvalsh(h[first : first + 12, first : first + 12])[-1])
    assert top_11 > 0 and top_22 > 0
    for alpha in (1e-3, 0.1, 1.0, 10.0, 1e3):
        rescaling = dinh_rescaling(model, alpha)
        d = rescaling.diagonal()
        top = float(torch.linalg.eigvalsh(hessian(rescaling.apply(model), x, y))[-1])
        predicted = float(torch.linalg.eigvalsh(h / d[:, None] / d[None, :])[-1])
        assert math.isclose(top, predicted, rel_tol=1e-9)
        # Rayleigh quotients on each block bound the top eigenvalue from below
        assert top >= max(top_11 / alpha**2, alpha**2 * top_22) * (1 - 1e-9)
    small = float(torch.linalg.eigvalsh(hessian(alpha_scale(model, 1e-3), x, y))[-1])
    large = float(torch.linalg.eigvalsh(hessian(alpha_scale(model, 1e3), x, y))[-1])
    assert math.isclose(small * 1e-6, top_11, rel_tol=1e-4)  # lambda_max ~ H11 / alpha^2
    assert math.isclose(large * 1e-6, top_22, rel_tol=1e-4)  # lambda_max ~ alpha^2 H22


# The invariant measures are the project's own (flatness.measures): path norm after BN folding,
# Fisher-Rao norms by a JVP along theta, adaptive (c = |w|, eta = 0) average and worst-case
# sharpness with a fixed generator, so the same noise is drawn for every rescaled model.


def path_norm(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    return path_norm_squared(fold_batchnorm(model), input_shape)


def adaptive_sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    loss, theta = flat_loss(model, x, y)

    def value(t: torch.Tensor) -> float:
        with torch.no_grad():
            return float(loss(t))

    def value_grad(t: torch.Tensor) -> tuple[float, torch.Tensor]:
        t = t.detach().requires_grad_(True)
        f = loss(t)
        return float(f.detach()), torch.autograd.grad(f, t)[0]

    scale = theta.abs()
    gen = torch.Generator().manual_seed(0)
    average = average_sharpness(value, theta, rho=0.05, scale=scale, n_samples=6, gen=gen)[0]
    worst = projected_ascent(value_grad, theta, rho=0.5, scale=scale, n_steps=4, gen=gen).gain
    return {"average": average, "worst": worst}


def test_path_norm_equals_the_sum_over_enumerated_paths():
    model, _, _ = small_problem(steps=0)
    w1, b1, w2, b2 = (p.detach() for p in model.parameters())
    total = sum(
        float(w1[j, i] ** 2 * w2[k, j] ** 2)
        for i, j, k in itertools.product(range(5), range(4), range(3))
    )
    total += float((b1[None, :] ** 2 * w2**2).sum() + (b2**2).sum())
    assert math.isclose(path_norm(model, (5,)), total, rel_tol=1e-12)


@pytest.mark.parametrize("arch", ARCHS)
def test_invariant_measures_do_not_move(arch):
    model, x = make_model(arch)
    y = torch.arange(x.shape[0]) % 3

    def measures(m: nn.Module) -> dict[str, float]:
        fr_model, fr_empirical = fisher_rao(m, x, y)
        return {
            "path_norm": path_norm(m, tuple(x.shape[1:])),
            "fisher_rao": fr_model,
            "fisher_rao_empirical": fr_empirical,
            **adaptive_sharpness(m, x, y),
        }

    reference = measures(model)
    assert reference["worst"] > 0 and reference["average"] != 0
    for label, rescaled in transforms_for(model, torch.Generator().manual_seed(2)).items():
        for name, value in measures(rescaled).items():
            assert math.isclose(value, reference[name], rel_tol=1e-8), (label, name, value)


def test_sweep_over_the_measure_suite_separates_invariant_from_scale_dependent_measures():
    """The wiring the pipeline uses: ``measure_fn`` = the project's ``run_suite``."""
    model, x, y = small_problem(steps=100)
    skipped = ("hessian_trace", "spectral_density", "keskar", "pacbayes", "sharpness_alpha")
    settings = {
        **{name: {"enabled": False} for name in (*skipped, "local_entropy")},
        "hessian_eigen": {"enabled": True, "top_k": 1, "max_steps": 30},
        "rho_sharpness": {"enabled": True, "n_steps": 4, "n_samples": 6},
        "norms": {"enabled": True},
    }

    def measure_fn(m: nn.Module) -> dict[str, MeasureResult]:
        return run_suite(m, MeasureData(x, y), settings, seed=0, context=MeasureContext())

    invariant = ("path_norm", "fisher_rao", "fisher_rao_empirical", "margin")
    invariant += ("sharpness_avg_adaptive", "sharpness_worst_adaptive")
    scale_dependent = ("lambda_max", "frobenius_sum", "sharpness_avg", "sharpness_worst")
    for transform in ("layer", "unit"):
        sweep = reparam_sweep(model, measure_fn, x, alphas=[0.1, 10.0], transform=transform)
        verdicts = {v["measure"]: v["verdict"] for v in invariance_verdicts(sweep, rtol=1e-8)}
        for name in invariant:
            assert verdicts[name] == "invariant", (transform, name)
        for name in scale_dependent:
            assert verdicts[name] == "not invariant", (transform, name)
        # a product of layer norms survives layer-wise scaling (the scales multiply to 1),
        # but not per-unit scaling, which is not constant within a layer
        expected = "invariant" if transform == "layer" else "not invariant"
        assert verdicts["log_prod_spectral"] == expected
        assert verdicts["dist_init"] == "undetermined"  # NaN without an init model


def synthetic_sweep(function_preserved: bool = True) -> dict:
    alphas = [0.01, 0.1, 1.0, 10.0, 100.0]
    values = {
        "constant": lambda a: 2.0 * (1 + 1e-12 * math.log(a)),
        "quadratic": lambda a: 3.0 * (a**2 + a**-2),
        "slightly_noisy": lambda a: 1.0 + 1e-4 * math.sin(a),
        "broken": lambda a: None if a == 10.0 else 1.0,
    }
    rows = [
        {
            "alpha": a,
            "max_abs_logit_change": 1e-15,
            "function_preserved": function_preserved,
            "measures": {k: f(a) for k, f in values.items()},
        }
        for a in alphas
    ]
    return {
        "transform": "layer",
        "measures": sorted(values),
        "rows": rows,
        "function_preserved": function_preserved,
        "max_abs_logit_change": 1e-15,
        "reference": {"alpha": 1.0, "measures": {k: f(1.0) for k, f in values.items()}},
    }


def test_invariance_verdicts_are_measured_from_the_numbers():
    verdicts = {v["measure"]: v for v in invariance_verdicts(synthetic_sweep())}
    assert verdicts["constant"]["verdict"] == "invariant"
    assert verdicts["constant"]["max_rel_change"] < 1e-11
    assert verdicts["quadratic"]["verdict"] == "not invariant"
    assert verdicts["quadratic"]["alpha_of_max_change"] in (0.01, 100.0)
    assert math.isclose(verdicts["quadratic"]["fold_range"], (1e4 + 1e-4) / 2, rel_tol=1e-12)
    assert verdicts["slightly_noisy"]["verdict"] == "not invariant"
    assert (
        verdicts["broken"]["verdict"] == "undetermined" and verdicts["broken"]["invariant"] is None
    )
    tolerant = {
        v["measure"]: v for v in invariance_verdicts(synthetic_sweep(), {"slightly_noisy": 1e-3})
    }
    assert tolerant["slightly_noisy"]["invariant"] is True
    assert tolerant["quadratic"]["invariant"] is False  # unnamed measures keep the default
    changed = invariance_verdicts(synthetic_sweep(function_preserved=False))
    assert {v["verdict"] for v in changed} == {"undetermined"}


def test_reparam_sweep_recomputes_measures_and_is_json(tmp_path):
    model, x, y = small_problem(steps=100)
    model = model.float()  # the sweep itself moves to float64
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def measure_fn(m):
        assert next(m.parameters()).dtype == torch.float64 and not m.training
        return {
            "path_norm": path_norm(m, (5,)),
            "fisher_rao": MeasureResult("fisher_rao", fisher_rao(m, x.double(), y)[1]),
            "param_norm": float(sum((p.detach() ** 2).sum() for p in m.parameters())),
            "never_finite": math.inf,
        }

    sweep = reparam_sweep(model, measure_fn, x, alphas=[0.01, 0.1, 1.0, 10.0, 100.0])
    json.dumps(sweep, allow_nan=False)
    assert sweep["function_preserved"] and sweep["max_abs_logit_change"] < 1e-12
    assert [row["alpha"] for row in sweep["rows"]] == [0.01, 0.1, 1.0, 10.0, 100.0]
    assert sweep["dtype"] == "float64" and sweep["n_eval"] == 16
    verdicts = {v["measure"]: v["verdict"] for v in invariance_verdicts(sweep, rtol=1e-8)}
    assert verdicts == {
        "path_norm": "invariant",
        "fisher_rao": "invariant",
        "param_norm": "not invariant",
        "never_finite": "undetermined",
    }
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    unit = reparam_sweep(model, measure_fn, x, alphas=[0.1, 10.0], transform="unit")
    assert unit["function_preserved"] and unit["transform"] == "unit"

    verdict_list = invariance_verdicts(sweep, rtol=1e-8)
    paths = [
        measures_vs_alpha(sweep, tmp_path / "measures.png", verdict_list),
        verdict_table(verdict_list, tmp_path / "verdicts.png"),
        write_verdicts_csv(verdict_list, tmp_path / "verdicts.csv"),
    ]
    for path in paths:
        assert path.is_file() and path.stat().st_size > 0
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "measures.png",
        "verdicts.csv",
        "verdicts.png",
    ]


def top_eigenvalue(x, y):
    return lambda m: float(torch.linalg.eigvalsh(hessian(m, x, y))[-1])


def test_dinh_flip_makes_the_better_model_sharper_without_changing_it(tmp_path):
    gen = torch.Generator().manual_seed(3)
    centres = 2.0 * torch.randn(3, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (160,), generator=gen)
    inputs = centres[labels] + torch.randn(160, 5, generator=gen, dtype=torch.float64)
    x_train, y_train, x_test, y_test = inputs[:40], labels[:40], inputs[40:], labels[40:]
    noisy = torch.where(torch.arange(40) % 2 == 0, (y_train + 1) % 3, y_train)
    models = []
    for seed, targets in ((0, y_train), (1, noisy)):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            models.append(
                train(build_mlp((5,), 3, depth=1, width=6).double(), x_train, targets, 150)
            )
    model_a, model_b = models
    measure = top_eigenvalue(x_train, y_train)
    model_b = alpha_scale(model_b, 30.0)  # same function as B, made sharp: A starts flatter
    flip = dinh_flip(model_a, model_b, measure, x_test, y_test, alphas=[1e-3, 1e-2, 0.1, 1.0, 10.0])
    json.dumps(flip, allow_nan=False)
    assert flip["measure_a"] < flip["measure_b"] and flip["a_generalizes_better"]
    assert flip["flipped"] and flip["measure_a_flipped"] > flip["measure_b"]
    assert flip["test_acc_a_flipped"] == flip["test_acc_a"] and flip["accuracy_unchanged"]
    assert flip["max_abs_logit_change"] < 1e-12
    alpha = flip["alpha_flip"]  # 1% closer to alpha = 1, A is still the flatter one
    assert (
        measure(alpha_scale(model_a, alpha * 1.01 if alpha < 1 else alpha / 1.01))
        < flip["measure_b"]
    )
    path = dinh_flip_figure(flip, tmp_path / "flip.png", "top Hessian eigenvalue")
    assert path.is_file()
    with pytest.raises(ValueError, match="flatter"):
        dinh_flip(model_b, model_a, measure, x_test, y_test, alphas=[0.1, 10.0])


def test_bad_input_names_the_argument_and_the_allowed_values():
    model, x = make_model("mlp")
    with pytest.raises(ValueError, match=r"alpha must be finite and > 0, got -1"):
        alpha_scale(model, -1.0)
    with pytest.raises(ValueError, match="alpha must be finite"):
        alpha_scale(model, math.nan)
    with pytest.raises(ValueError, match=r"scales=.*multiply to"):
        scale_layers(model, [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="no batch norm"):
        scale_batchnorm(model, 2.0)
    with pytest.raises(ValueError, match=r"layer=2; allowed: a hidden layer index in \[0, 1\]"):
        scale_units(model, 2, [1.0] * 3)
    with pytest.raises(ValueError, match="scales must hold 6"):
        scale_units(model, 0, [1.0, 2.0])
    tanh = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.Tanh(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"model\[2\] is Tanh.*allowed layers"):
        alpha_scale(tanh, 2.0)
    with pytest.raises(ValueError, match="transform='spin'; allowed: layer, unit, bn"):
        reparam_sweep(model, lambda m: {}, x, alphas=[2.0], transform="spin")
    with pytest.raises(ValueError, match="alphas="):
        reparam_sweep(model, lambda m: {}, x, alphas=[0.0, 1.0])
