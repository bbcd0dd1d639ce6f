"""Zhang et al. (2017) corruptions: random labels, shuffled pixels, random pixels, Gaussian inputs.

``fraction`` p selects exactly ``round(p * n)`` examples (p = 1 corrupts all of them). For labels,
each selected example gets a label drawn uniformly from all classes (as in Zhang et al., so about
1/K of them keep their true class by chance). Input corruptions act on the selected examples:

- ``shuffled_pixels``: one fixed permutation of the positions, the same for every example (and for
  the test split when it is corrupted too), channels kept together;
- ``random_pixels``: a new permutation for each example;
- ``gaussian``: inputs replaced by Gaussian noise with the data's per-channel mean and variance.

Everything is drawn from a local ``torch.Generator`` seeded by the caller, so a run's corruption is a
function of its seed, and the arrays are saved with the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flatness.base import CORRUPTION_TYPES


@dataclass(frozen=True)
class Corrupted:
    """A corrupted split and what was done to it (for saving with the run)."""

    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor  # which examples were corrupted
    permutation: torch.Tensor | None  # shuffled_pixels: the fixed permutation of positions


def corrupt(
    x: torch.Tensor,
    y: torch.Tensor,
    kind: str,
    fraction: float,
    n_classes: int,
    generator: torch.Generator,
    permutation: torch.Tensor | None = None,
) -> Corrupted:
    """Return a corrupted copy of ``(x, y)``; the inputs are never modified in place.

    ``permutation`` lets the test split reuse the training split's fixed pixel permutation.
    """
    if kind not in CORRUPTION_TYPES:
        raise ValueError(
            f"data.corruption.type={kind!r} is not known; allowed: {', '.join(CORRUPTION_TYPES)}"
        )
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"data.corruption.fraction={fraction!r} is outside the allowed [0, 1]")
    n = len(y)
    n_corrupt = 0 if kind == "none" else round(fraction * n)
    indices = torch.randperm(n, generator=generator)[:n_corrupt].sort().values
    x, y = x.clone(), y.clone()
    positions = _positions(x)
    if kind == "labels":
        y[indices] = torch.randint(0, n_classes, (n_corrupt,), generator=generator)
    elif kind == "shuffled_pixels":
        if permutation is None:
            permutation = torch.randperm(positions.shape[-1], generator=generator)
        x[indices] = _permute(x[indices], permutation.expand(n_corrupt, -1))
    elif kind == "random_pixels":
        perms = torch.argsort(torch.rand(n_corrupt, positions.shape[-1], generator=generator), 1)
        x[indices] = _permute(x[indices], perms)
    elif kind == "gaussian":
        x[indices] = _gaussian_like(x, n_corrupt, generator)
    return Corrupted(x, y, indices, permutation if kind == "shuffled_pixels" else None)


def _positions(x: torch.Tensor) -> torch.Tensor:
    """Index of spatial positions: (N, L) signals have L; (N, C, *spatial) images have prod(spatial)."""
    n_pos = x.shape[1] if x.ndim == 2 else int(np.prod(x.shape[2:]))
    return torch.arange(n_pos)


def _permute(x: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Apply one permutation of spatial positions per example, keeping channels together."""
    if x.ndim == 2:
        return torch.gather(x, 1, perms)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    index = perms[:, None, :].expand(-1, x.shape[1], -1)
    return torch.gather(flat, 2, index).reshape(x.shape)


def _gaussian_like(x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise matching the data's mean and variance (per channel for images)."""
    if x.ndim == 2:
        mean, std = x.mean(), x.std()
    else:
        dims = (0, *range(2, x.ndim))
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        mean, std = x.mean(dims).reshape(shape), x.std(dims).reshape(shape)
    noise = torch.randn((n, *x.shape[1:]), generator=generator, dtype=x.dtype)
    return noise * std + mean
