"""The registry, suite, configs and settings validation; the caller's model is never changed."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from flatness.measures import (
    DEFAULTS,
    MEASURES,
    RESULT_NAMES,
    MeasureContext,
    derive_seed,
    enabled_measures,
    make_context,
    plot_spectral_density,
    results_to_json,
    run_suite,
    select_subset,
    slq_from_details,
    validate_settings,
)
from flatness.models import build_cnn, build_mlp

CONF = Path(__file__).resolve().parents[1] / "conf" / "measures"

# Small settings so the whole suite runs in about a second on a tiny model.
SMALL = {
    "subset_size": 60,
    "dtype": "float64",
    "chunk_size": 25,
    "hessian_eigen": {"max_steps": 15, "top_k": 2},
    "power_iteration": {"enabled": True, "max_iter": 20},
    "hessian_trace": {"n_matvec": 10},
    "spectral_density": {"n_probes": 2, "n_steps": 8},
    "keskar": {"subspace_dim": 5, "maxiter": 3},
    "rho_sharpness": {"n_steps": 3, "n_samples": 4, "batch_size": 30},
    "pacbayes": {"depth": 4, "n_draws": 2},
    "sharpness_alpha": {"depth": 3, "n_steps": 2},
    "local_entropy": {"burn_in": 5, "n_samples": 20, "n_batches": 4},
}


def tiny_setup(batch_norm=False, dropout=0.0, builder=build_mlp):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 12, generator=g)
    y = torch.randint(0, 4, (100,), generator=g)
    torch.manual_seed(0)  # layer initializers only, in a test
    init = builder((12,), 4, depth=2, width=8, batch_norm=batch_norm, dropout=dropout)
    model = builder((12,), 4, depth=2, width=8, batch_norm=batch_norm, dropout=dropout)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, init, x, y


def snapshot(model):
    return (
        model.training,
        [m.training for m in model.modules()],
        [(n, p.detach().clone(), p.requires_grad, p.dtype) for n, p in model.named_parameters()],
        [(n, b.detach().clone()) for n, b in model.named_buffers()],
    )


def assert_same(a, b):
    assert a[0] == b[0] and a[1] == b[1]
    for (n1, p1, r1, d1), (n2, p2, r2, d2) in zip(a[2], b[2], strict=True):
        assert n1 == n2 and r1 == r2 and d1 == d2 and torch.equal(p1, p2)
    for (n1, b1), (n2, b2) in zip(a[3], b[3], strict=True):
        assert n1 == n2 and torch.equal(b1, b2)


@pytest.mark.parametrize("batch_norm,dropout", [(False, 0.0), (True, 0.3)])
def test_suite_runs_everything_leaves_the_model_alone_and_is_deterministic(batch_norm, dropout):
    model, init, x, y = tiny_setup(batch_norm, dropout)
    model.train()
    model[1].bias.requires_grad_(False)  # a frozen parameter in the caller's model
    before = snapshot(model)
    data = select_subset(x, y, SMALL["subset_size"], seed=3)
    ctx = make_context(SMALL, init_model=init)
    results = run_suite(model, data, SMALL, seed=7, context=ctx)
    assert_same(before, snapshot(model))
    expected = [n for m in MEASURES for n in RESULT_NAMES[m]]
    assert list(results) == expected
    for name, r in results.items():
        assert r.name == name and r.seconds >= 0
        assert math.isfinite(r.value) or not r.converged, name
    assert results["lambda_max"].n_hvp > 0 and results["keskar_full"].n_grad > 0
    assert results["hessian_trace"].stderr is not None
    assert math.isfinite(results["dist_init"].value)
    again = run_suite(model, data, SMALL, seed=7, context=ctx)
    for name in results:  # eval mode (no dropout noise) and local seeds: identical numbers
        v1, v2 = results[name].value, again[name].value
        assert v1 == v2 or (math.isnan(v1) and math.isnan(v2)), name
    text = json.dumps(results_to_json(results), allow_nan=False)
    assert json.loads(text)["lambda_max"]["value"] == results["lambda_max"].value


def test_measure_seeds_are_independent_of_other_measures():
    model, _, x, y = tiny_setup()
    data = select_subset(x, y, 60, seed=0)
    ctx = MeasureContext()
    only = {**SMALL, **{m: {**SMALL.get(m, {}), "enabled": m == "hessian_trace"} for m in MEASURES}}
    a = run_suite(model, data, only, seed=1, context=ctx)
    b = run_suite(model, data, {**only, "keskar": {"enabled": True}}, seed=1, context=ctx)
    assert list(a) == ["hessian_trace"]
    assert a["hessian_trace"].value == b["hessian_trace"].value
    c = run_suite(model, data, only, seed=2, context=ctx)
    assert c["hessian_trace"].value != a["hessian_trace"].value


def test_registry_callables_return_their_named_results_on_a_cnn():
    model, _, x, y = tiny_setup(builder=build_cnn)
    data = select_subset(x, y, 40, seed=0)
    ctx = MeasureContext(dtype=torch.float32)
    for name in ("hessian_eigen", "norms", "pacbayes"):
        out = MEASURES[name](model, data, SMALL.get(name, {}), 0, ctx)
        assert tuple(r.name for r in out) == RESULT_NAMES[name]


def test_derive_seed_is_stable_sha256():
    digest = hashlib.sha256(b"5:keskar").digest()
    assert derive_seed(5, "keskar") == int.from_bytes(digest[:8], "little") & (2**63 - 1)
    assert derive_seed(5, "keskar") != derive_seed(5, "norms") != derive_seed(6, "norms")


def test_select_subset_is_seeded_and_records_indices():
    x = torch.arange(50.0)[:, None].repeat(1, 3)
    y = torch.arange(50) % 4
    a, b = select_subset(x, y, 10, seed=1), select_subset(x, y, 10, seed=1)
    assert torch.equal(a.indices, b.indices) and len(a) == 10
    assert torch.equal(a.x[:, 0].long(), a.indices) and torch.equal(a.y, y[a.indices])
    assert torch.all(a.indices[1:] > a.indices[:-1])
    assert not torch.equal(select_subset(x, y, 10, seed=2).indices, a.indices)
    assert len(select_subset(x, y, 500, seed=1)) == 50
    with pytest.raises(ValueError, match="subset_size"):
        select_subset(x, y, 0, seed=1)


@pytest.mark.parametrize("name", ["default", "full"])
def test_config_files_validate_and_default_matches_the_code(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    validate_settings(cfg)
    assert set(cfg) - {"subset_size", "dtype", "chunk_size"} == set(MEASURES)
    if name == "default":
        for measure, block in DEFAULTS.items():
            assert OmegaConf.to_container(cfg[measure]) == block, measure
        assert enabled_measures(cfg) == [m for m in MEASURES if m != "power_iteration"]


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"bogus": {}}, r"measures\.bogus is not a known measure.*allowed: subset_size"),
        ({"keskar": {"epsilon": 1}}, r"measures\.keskar\.epsilon is not a known setting"),
        ({"hessian_eigen": {"max_steps": 0}}, r"max_steps = 0 is invalid: must be an integer >= 1"),
        ({"rho_sharpness": {"n_steps": -2}}, r"n_steps = -2 is invalid"),
        ({"keskar": {"eps": 0.0}}, r"keskar\.eps = 0\.0 is invalid: must be a number > 0"),
        ({"hessian_trace": {"method": "exact"}}, r"allowed: hutchinson, hutchpp"),
        ({"norms": {"enabled": "yes"}}, r"enabled = 'yes' is invalid: must be true or false"),
        ({"pacbayes": {"depth": True}}, r"pacbayes\.depth = True is invalid"),
        (
            {"dtype": "float16"},
            r"measures\.dtype = 'float16' is invalid; allowed: float32, float64",
        ),
        ({"norms": {"margin_percentile": 100}}, r"must be a number in \(0, 100\)"),
        ({"sharpness_alpha": {"alpha_min": 3.0}}, r"alpha_min = 3\.0 is invalid: must be below"),
        ({"local_entropy": {"n_samples": 3}}, r"n_samples = 3 is invalid: must be >= n_batches"),
    ],
)
def test_settings_validation_names_key_value_and_allowed(settings, match):
    with pytest.raises(ValueError, match=match):
        validate_settings(settings)
    model, _, x, y = tiny_setup()
    with pytest.raises(ValueError, match=match):
        run_suite(model, select_subset(x, y, 10, 0), settings, 0, MeasureContext())


def test_spectral_density_plot_from_json_details(tmp_path):
    model, _, x, y = tiny_setup()
    data = select_subset(x, y, 60, seed=0)
    (res,) = MEASURES["spectral_density"](
        model, data, SMALL["spectral_density"], 0, MeasureContext()
    )
    details = json.loads(json.dumps(results_to_json({"r": res})))["r"]["details"]
    path = plot_spectral_density(slq_from_details(details), tmp_path / "esd.png", title="ESD")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adaptive_measures_are_invariant_to_dinh_rescaling():
    """claims-and-measures.md 3.2: adaptive sharpness (eta = 0), path norm and Fisher-Rao are
    invariant to alpha-scaling; isotropic sharpness and lambda_max are not."""
    model, _, x, y = tiny_setup()
    model = model.double()
    scaled = build_mlp((12,), 4, depth=2, width=8).double()
    scaled.load_state_dict(model.state_dict())
    with torch.no_grad():
        scaled[1].weight.mul_(5.0)
        scaled[1].bias.mul_(5.0)
        scaled[3].weight.div_(5.0)
    data = select_subset(x.double(), y, 60, seed=0)
    torch.testing.assert_close(scaled(data.x), model(data.x), rtol=1e-12, atol=1e-12)
    ctx = MeasureContext()
    block = SMALL["rho_sharpness"]
    a = {r.name: r.value for r in MEASURES["rho_sharpness"](model, data, block, 4, ctx)}
    b = {r.name: r.value for r in MEASURES["rho_sharpness"](scaled, data, block, 4, ctx)}
    for name in ("sharpness_avg_adaptive", "sharpness_worst_adaptive"):
        assert b[name] == pytest.approx(a[name], rel=1e-8), name
    assert b["sharpness_avg"] != pytest.approx(a["sharpness_avg"], rel=1e-2)
    na = {r.name: r.value for r in MEASURES["norms"](model, data, {}, 0, ctx)}
    nb = {r.name: r.value for r in MEASURES["norms"](scaled, data, {}, 0, ctx)}
    for name in ("path_norm", "fisher_rao", "fisher_rao_empirical", "log_prod_spectral"):
        assert nb[name] == pytest.approx(na[name], rel=1e-9), name
