"""Models: plain ReLU MLPs and small CNNs, built as flat ``nn.Sequential`` stacks.

Every model is a single ``nn.Sequential`` of standard layers (Linear/Conv, optional BatchNorm, ReLU,
optional Dropout, ending in a Linear classifier). Keeping the stack flat is deliberate: the
reparameterization transforms (Dinh et al.) and the norm-based measures walk the layers in order, and
a flat stack makes "the weights of layer k" unambiguous without model-specific code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from flatness.base import MODEL_NAMES


def _block(
    layer: nn.Module, width: int, batch_norm: bool, dropout: float, dims: int
) -> list[nn.Module]:
    """One hidden block: affine map, optional batch norm, ReLU, optional dropout."""
    modules: list[nn.Module] = [layer]
    if batch_norm:
        bn = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims]
        modules.append(bn(width))
    modules.append(nn.ReLU())
    if dropout > 0:
        modules.append(nn.Dropout(dropout))
    return modules


def build_mlp(
    input_shape: Sequence[int],
    n_classes: int,
    depth: int = 2,
    width: int = 100,
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> nn.Sequential:
    """ReLU MLP with ``depth`` hidden layers of ``width`` units; inputs of any shape are flattened."""
    n_in = math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(depth):
        layers += _block(nn.Linear(n_in if i == 0 else width, width), width, batch_norm, dropout, 0)
    layers.append(nn.Linear(n_in if depth == 0 else width, n_classes))
    return nn.Sequential(*layers)


def build_cnn(
    input_shape: Sequence[int],
    n_classes: int,
    depth: int = 3,
    width: int = 16,
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Small ReLU CNN: ``depth`` stride-2 convolutions with ``width`` channels, then a linear head.

    ``input_shape`` is ``(length,)`` or ``(channels, length)`` for 1-D signals (MNIST-1D) and
    ``(channels, height, width)`` for images; the spatial rank picks Conv1d or Conv2d. The head
    flattens the last feature map (no pooling), so every layer stays positively homogeneous.
    """
    shape = tuple(input_shape)
    if len(shape) == 1:
        shape = (1, *shape)
    dims = len(shape) - 1
    if dims not in (1, 2):
        raise ValueError(
            f"model.name=cnn needs 1-D or 2-D inputs, got input shape {tuple(input_shape)}"
        )
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    layers: list[nn.Module] = [_Reshape(shape)]
    channels = shape[0]
    for _ in range(depth):
        layers += _block(
            conv(channels, width, 3, stride=2, padding=1), width, batch_norm, dropout, dims
        )
        channels = width
    with torch.no_grad():
        n_flat = nn.Sequential(*layers)(torch.zeros(1, *shape)).numel()
    layers += [nn.Flatten(), nn.Linear(n_flat, n_classes)]
    return nn.Sequential(*layers)


class _Reshape(nn.Module):
    """Views a batch as ``(N, *shape)``: MNIST-1D rows (N, 40) become (N, 1, 40) for Conv1d."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def build_model(model_cfg, input_shape: Sequence[int], n_classes: int) -> nn.Sequential:
    """Build the model named by ``model_cfg.name`` (a Hydra ``model`` node or any mapping)."""
    kwargs = dict(
        depth=int(model_cfg["depth"]),
        width=int(model_cfg["width"]),
        batch_norm=bool(model_cfg["batch_norm"]),
        dropout=float(model_cfg["dropout"]),
    )
    name = model_cfg["name"]
    if name == "mlp":
        return build_mlp(input_shape, n_classes, **kwargs)
    if name == "cnn":
        return build_cnn(input_shape, n_classes, **kwargs)
    raise ValueError(f"model.name={name!r} is not a known model; allowed: {', '.join(MODEL_NAMES)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
