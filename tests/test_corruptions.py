"""Zhang et al. corruptions: exact fractions, the right kind of noise, determinism per seed."""

from __future__ import annotations

import pytest
import torch

from flatness.corruptions import corrupt


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def signals():
    g = gen(1)
    return torch.randn(1000, 40, generator=g) * 2 + 1, torch.randint(0, 10, (1000,), generator=g)


@pytest.fixture
def images():
    g = gen(2)
    return torch.randn(200, 3, 6, 5, generator=g), torch.randint(0, 10, (200,), generator=g)


@pytest.mark.parametrize("kind", ["labels", "shuffled_pixels", "random_pixels", "gaussian"])
@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_exact_fraction_and_untouched_rest(signals, kind, fraction):
    x, y = signals
    x0, y0 = x.clone(), y.clone()
    c = corrupt(x, y, kind, fraction, 10, gen())
    assert len(c.indices) == round(fraction * len(y))
    assert torch.equal(x, x0) and torch.equal(y, y0), "inputs were modified in place"
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[c.indices] = False
    assert torch.equal(c.x[rest], x[rest]) and torch.equal(c.y[rest], y[rest])
    if kind == "labels":
        assert torch.equal(c.x, x)
        changed = (c.y[c.indices] != y[c.indices]).float().mean().item() if fraction else 0.0
        assert fraction == 0 or 0.8 < changed < 0.98  # uniform labels keep the true one ~1/10
    else:
        assert torch.equal(c.y, y)


def test_random_labels_are_uniform(signals):
    x, y = signals
    c = corrupt(x, y, "labels", 1.0, 10, gen())
    counts = torch.bincount(c.y, minlength=10).float()
    assert counts.min() > 60 and counts.max() < 140  # 100 expected, sd ~9.5


def test_shuffled_pixels_use_one_permutation(signals, images):
    for x, y in (signals, images):
        c = corrupt(x, y, "shuffled_pixels", 1.0, 10, gen())
        perm = c.permutation
        flat = x.reshape(len(x), *x.shape[1:-2], -1) if x.ndim > 2 else x
        expected = flat[..., perm].reshape(x.shape)
        assert torch.equal(c.x, expected)
        assert not torch.equal(c.x, x)


def test_random_pixels_permute_each_example_independently(images):
    x, y = images
    c = corrupt(x, y, "random_pixels", 1.0, 10, gen())
    for i in range(3):
        a, b = x[i].reshape(3, -1), c.x[i].reshape(3, -1)
        # channels stay together: the same position permutation for every channel
        order_a, order_b = a[0].argsort(), b[0].argsort()
        assert torch.equal(a[:, order_a], b[:, order_b])
    first = [c.x[i].reshape(3, -1)[0].argsort() for i in range(2)]
    assert not torch.equal(x[0].reshape(3, -1)[0][first[0]], x[1].reshape(3, -1)[0][first[1]])


def test_gaussian_inputs_match_mean_and_variance(signals, images):
    x, y = signals
    c = corrupt(x, y, "gaussian", 1.0, 10, gen())
    assert abs(c.x.mean() - x.mean()) < 0.02 and abs(c.x.std() / x.std() - 1) < 0.02
    x, y = images
    x = x + torch.tensor([0.0, 5.0, -5.0])[None, :, None, None]
    c = corrupt(x, y, "gaussian", 1.0, 10, gen())
    assert torch.allclose(c.x.mean((0, 2, 3)), x.mean((0, 2, 3)), atol=0.1)


def test_deterministic_per_seed(signals):
    x, y = signals
    for kind in ("labels", "random_pixels", "gaussian"):
        a, b = corrupt(x, y, kind, 0.5, 10, gen(7)), corrupt(x, y, kind, 0.5, 10, gen(7))
        c = corrupt(x, y, kind, 0.5, 10, gen(8))
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.indices, b.indices)
        assert not (torch.equal(a.x, c.x) and torch.equal(a.y, c.y))


def test_bad_arguments(signals):
    x, y = signals
    with pytest.raises(ValueError, match=r"fraction=1.5 is outside the allowed \[0, 1\]"):
        corrupt(x, y, "labels", 1.5, 10, gen())
    with pytest.raises(ValueError, match="type='blur' is not known"):
        corrupt(x, y, "blur", 0.5, 10, gen())
