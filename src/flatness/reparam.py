"""Function-preserving rescalings of ReLU networks (Dinh, Pascanu, Bengio & Bengio 2017).

ReLU is positively homogeneous, relu(a z) = a relu(z) for a > 0, so scaling what flows into a ReLU
and un-scaling what flows out of it leaves the network's function unchanged while moving its
parameters, and with them every parameter-space flatness measure. Each transform here is a diagonal
linear map of parameter space, theta' = D theta, so the loss obeys L'(D theta) = L(theta) for every
theta and the Hessian transforms as H(theta') = D^-1 H(theta) D^-1.

A transform is described by a frozen ``Rescaling`` (one multiplier per parameter entry, plus the
batch-norm buffers and eps it must touch); ``Rescaling.apply`` returns a rescaled deep copy and
never modifies the caller's model, and ``Rescaling.diagonal`` gives D.

Models are the flat ``nn.Sequential`` stacks of ``flatness.models``: blocks of Linear/Conv1d/Conv2d,
optional BatchNorm directly after the affine layer, ReLU, optional Dropout, with Flatten/reshape
modules anywhere. Dropout and reshapes commute with positive scaling, so they need no treatment.

Batch norm. A BN layer normalizes away the scale of its input, so scaling the layer in front of it
does not carry through to the next layer. The layer-wise and per-unit transforms therefore move a
BN block's scale onto the BN affine parameters (gamma, beta), and the separate ``bn_rescaling``
implements the BN scale symmetry itself. Everything is exact in eval mode (running statistics).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from flatness.models import _Reshape

_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d)
_BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_PASSIVE = (nn.ReLU, nn.Dropout, nn.Flatten, nn.Identity, _Reshape)
_ALLOWED = (
    "Linear, Conv1d, Conv2d, BatchNorm1d, BatchNorm2d, ReLU, Dropout, Flatten, Identity, reshape"
)


@dataclass(frozen=True)
class Block:
    """One affine layer of the stack (module names in the Sequential) and its batch norm, if any."""

    affine: str
    bn: str | None
    channels: int  # output features (Linear) or output channels (Conv)


def blocks(model: nn.Module) -> list[Block]:
    """The affine layers of a flat ReLU stack, in order; ValueError for anything not rescalable."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"model must be a flat nn.Sequential, got {type(model).__name__}")
    found: list[Block] = []
    previous: nn.Module | None = None
    for name, module in model.named_children():
        if isinstance(module, _AFFINE):
            if getattr(module, "groups", 1) != 1:
                raise ValueError(f"model[{name}] has groups={module.groups}; allowed: groups=1")
            channels = module.out_features if isinstance(module, nn.Linear) else module.out_channels
            found.append(Block(name, None, channels))
        elif isinstance(module, _BATCH_NORM):
            if not isinstance(previous, _AFFINE):
                raise ValueError(f"model[{name}] (batch norm) must directly follow a Linear/Conv")
            if not (module.affine and module.track_running_stats):
                raise ValueError(
                    f"model[{name}] has affine={module.affine}, "
                    f"track_running_stats={module.track_running_stats}; allowed: both True"
                )
            found[-1] = Block(found[-1].affine, name, found[-1].channels)
        elif not isinstance(module, _PASSIVE):
            raise ValueError(
                f"model[{name}] is {type(module).__name__}, which is not positively homogeneous "
                f"or not supported; allowed layers: {_ALLOWED}"
            )
        previous = module
    if not found:
        raise ValueError("model has no Linear/Conv layer to rescale")
    return found


@dataclass(frozen=True)
class Rescaling:
    """A diagonal, function-preserving map of a model's parameters.

    ``params`` holds one float64 multiplier tensor per parameter (same shape, in the order of
    ``model.named_parameters()``); ``buffers`` and ``eps`` hold scalar multipliers for batch-norm
    running statistics and eps, which are not parameters but must move with them.
    """

    params: Mapping[str, torch.Tensor]
    buffers: Mapping[str, float]
    eps: Mapping[str, float]

    def apply(self, model: nn.Module) -> nn.Module:
        """A rescaled deep copy of ``model``; the caller's model is left untouched."""
        new = copy.deepcopy(model)
        params = dict(new.named_parameters())
        if list(params) != list(self.params):
            raise ValueError("model does not match this Rescaling: parameter names differ")
        buffers = dict(new.named_buffers())
        modules = dict(new.named_modules())
        with torch.no_grad():
            for name, factor in self.params.items():
                p = params[name]
                if factor.shape != p.shape:
                    raise ValueError(
                        f"parameter {name} has shape {tuple(p.shape)}, expected "
                        f"{tuple(factor.shape)}"
                    )
                p.mul_(factor.to(device=p.device, dtype=p.dtype))
            for name, factor in self.buffers.items():
                buffers[name].mul_(factor)
            for name, factor in self.eps.items():
                modules[name].eps *= factor
        return new

    def diagonal(self) -> torch.Tensor:
        """D as a flat float64 vector, aligned with ``parameters_to_vector(model.parameters())``."""
        return torch.cat([f.reshape(-1) for f in self.params.values()])


def layer_rescaling(model: nn.Module, scales: Sequence[float]) -> Rescaling:
    """Dinh's T_alpha with one scale per affine layer; the scales must multiply to 1.

    Let c_k be the product of the first k scales. A plain block gets W_k * a_k and b_k * c_k, so its
    output is c_k times the original and the final output (c_K = 1) is unchanged. A block with batch
    norm gets W_k / c_(k-1) (cancelling the incoming scale, so its pre-activations and BN statistics
    are exactly the original ones) and gamma_k, beta_k * c_k (so its output again carries c_k).
    """
    found = blocks(model)
    scales = [_positive(a, "scales") for a in scales]
    if len(scales) != len(found):
        raise ValueError(f"scales has {len(scales)} entries; the model has {len(found)} layers")
    if not math.isclose(math.prod(scales), 1.0, rel_tol=1e-9):
        raise ValueError(f"scales={scales} multiply to {math.prod(scales)}; allowed: product 1")
    factors = _ones(model)
    cumulative = 1.0
    for block, scale in zip(found, scales, strict=True):
        incoming, cumulative = cumulative, cumulative * scale
        if block.bn is None:
            _mul(factors, f"{block.affine}.weight", scale)
            _mul(factors, f"{block.affine}.bias", cumulative)
        else:
            _mul(factors, f"{block.affine}.weight", 1.0 / incoming)
            _mul(factors, f"{block.bn}.weight", cumulative)
            _mul(factors, f"{block.bn}.bias", cumulative)
    return Rescaling(factors, {}, {})


def dinh_rescaling(model: nn.Module, alpha: float, layers: tuple[int, int] = (0, 1)) -> Rescaling:
    """Dinh's two-layer T_alpha: layer ``layers[0]`` times alpha, layer ``layers[1]`` over alpha."""
    n = len(blocks(model))
    if len(layers) != 2 or layers[0] == layers[1] or any(i not in range(n) for i in layers):
        raise ValueError(f"layers={layers}; allowed: two distinct indices in [0, {n - 1}]")
    first, second = layers
    alpha = _positive(alpha, "alpha")
    scales = [1.0] * n
    scales[first], scales[second] = alpha, 1.0 / alpha
    return layer_rescaling(model, scales)


def unit_rescaling(
    model: nn.Module, layer: int, scales: Sequence[float] | torch.Tensor
) -> Rescaling:
    """Per-unit (per-channel for conv) rescaling of hidden layer ``layer``.

    Unit u's incoming weights and bias are multiplied by scales[u] (for a block with batch norm,
    its gamma_u and beta_u instead, since BN would cancel a scale on the weights), and the next
    layer's weights reading unit u are divided by scales[u]. After a conv layer and a Flatten, the
    next Linear reads channel u through a contiguous slice of its columns (channel-major flatten).
    """
    found = blocks(model)
    if not (isinstance(layer, int) and 0 <= layer < len(found) - 1):
        raise ValueError(f"layer={layer!r}; allowed: a hidden layer index in [0, {len(found) - 2}]")
    block, following = found[layer], found[layer + 1]
    s = torch.as_tensor(scales, dtype=torch.float64).reshape(-1)
    if s.numel() != block.channels or not bool(torch.all(torch.isfinite(s) & (s > 0))):
        raise ValueError(
            f"scales must hold {block.channels} finite positive values (one per unit of layer "
            f"{layer}), got {s.numel()} values with min {float(s.min()) if s.numel() else None}"
        )
    factors = _ones(model)
    s = s.to(factors[f"{block.affine}.weight"].device)
    if block.bn is None:
        weight = factors[f"{block.affine}.weight"]
        weight.mul_(s.view(-1, *[1] * (weight.dim() - 1)))
        _mul(factors, f"{block.affine}.bias", s)
    else:
        _mul(factors, f"{block.bn}.weight", s)
        _mul(factors, f"{block.bn}.bias", s)
    outgoing = factors[f"{following.affine}.weight"]
    if outgoing.shape[1] % block.channels:
        raise ValueError(
            f"model[{following.affine}] reads {outgoing.shape[1]} inputs, not a multiple of the "
            f"{block.channels} units of layer {layer}"
        )
    outgoing.view(outgoing.shape[0], block.channels, -1).div_(s.view(1, -1, 1))
    return Rescaling(factors, {}, {})


def bn_rescaling(model: nn.Module, c: float, layers: Sequence[int] | None = None) -> Rescaling:
    """The batch-norm scale symmetry: weights and bias feeding BN times c, no compensation needed.

    In eval mode BN computes gamma (z - mean) / sqrt(var + eps) + beta, so the running mean is
    scaled by c and the running variance and eps by c^2: the output is then unchanged to round-off
    (leaving eps alone would leave a relative error of about eps / var). ``layers`` are affine-layer
    indices that have a BN; default: all of them.
    """
    found = blocks(model)
    with_bn = [i for i, block in enumerate(found) if block.bn is not None]
    if not with_bn:
        raise ValueError("model has no batch norm layer; the batch-norm symmetry needs one")
    layers = with_bn if layers is None else list(layers)
    if not layers or any(i not in with_bn for i in layers):
        raise ValueError(f"layers={layers}; allowed: a non-empty subset of {with_bn}")
    c = _positive(c, "c")
    factors = _ones(model)
    buffers: dict[str, float] = {}
    eps: dict[str, float] = {}
    for i in layers:
        block = found[i]
        _mul(factors, f"{block.affine}.weight", c)
        _mul(factors, f"{block.affine}.bias", c)
        buffers[f"{block.bn}.running_mean"] = c
        buffers[f"{block.bn}.running_var"] = c * c
        eps[block.bn] = c * c
    return Rescaling(factors, buffers, eps)


def alpha_scale(model: nn.Module, alpha: float, layers: tuple[int, int] = (0, 1)) -> nn.Module:
    """A copy of ``model`` under Dinh's T_alpha (see ``dinh_rescaling``)."""
    return dinh_rescaling(model, alpha, layers).apply(model)


def scale_layers(model: nn.Module, scales: Sequence[float]) -> nn.Module:
    """A copy of ``model`` with per-layer scales (see ``layer_rescaling``)."""
    return layer_rescaling(model, scales).apply(model)


def scale_units(model: nn.Module, layer: int, scales: Sequence[float] | torch.Tensor) -> nn.Module:
    """A copy of ``model`` with hidden layer ``layer`` rescaled per unit (see ``unit_rescaling``)."""
    return unit_rescaling(model, layer, scales).apply(model)


def scale_batchnorm(model: nn.Module, c: float, layers: Sequence[int] | None = None) -> nn.Module:
    """A copy of ``model`` under the batch-norm scale symmetry (see ``bn_rescaling``)."""
    return bn_rescaling(model, c, layers).apply(model)


def _positive(value, name: str) -> float:
    """A finite positive float, or a ValueError that names the argument and the bad value."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return x


def _ones(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: torch.ones(p.shape, dtype=torch.float64, device=p.device)
        for name, p in model.named_parameters()
    }


def _mul(factors: dict[str, torch.Tensor], name: str, scale: float | torch.Tensor) -> None:
    """Multiply a parameter's factor in place; a missing bias (bias=False) is simply skipped."""
    if name in factors:
        factors[name].mul_(scale)
