"""Norm-based measures (Jiang et al. 2020 conventions) on flat ``nn.Sequential`` models.

- Batch norm is first **folded** into the preceding Linear/Conv (eval statistics), as in Jiang's
  code, so "the weight of layer k" is the map the network really applies.
- ``W_k`` is each Linear/Conv weight, conv kernels reshaped to ``(out, in * kernel)``; the spectral
  norm of that matrix is not the conv operator norm (Sedghi et al.), as documented in the note.
- Products of norms are reported as logs (sums of ``log ||W_k||^2``): they overflow otherwise.
- The **path norm** is Jiang's eq. 44, ``sum_j f_{w^2}(1)_j`` = the squared l2 path norm: every
  parameter (biases too: edges from a constant unit) is squared and an all-ones input is pushed
  through; with non-negative weights and inputs every ReLU is the identity, so the output sums the
  products of squared weights over all input-to-output paths (Neyshabur et al. 2015).
- The **Fisher-Rao norm** (Liang et al. 2019) uses ``<theta, grad_theta l(f(x), y)>
  = <dl/df, J_f theta>``; ``J_f theta`` comes from a JVP along ``theta`` (double-vjp trick), valid with
  biases, BN and convs (for bias-free ReLU nets it equals ``(depth + 1) f(x)``, which the tests
  check). ``fisher_rao`` is the model-Fisher version (``y ~ softmax(f)``, summed exactly over the
  classes); ``fisher_rao_empirical`` uses the true labels.
- The **margin** ``gamma`` is a low percentile (10th) of ``f_y - max_{c != y} f_c`` on the subset (the
  order statistic at ``m * q / 100``); margin-normalized forms divide by ``gamma^2`` and are NaN when
  ``gamma <= 0`` (more than q% of the subset misclassified).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_PASSIVE = (nn.ReLU, nn.Dropout, nn.Flatten, nn.Identity)


def _check_flat(model: nn.Module) -> nn.Sequential:
    if not isinstance(model, nn.Sequential):
        raise ValueError(
            f"norm measures need a flat nn.Sequential model, got {type(model).__name__}"
        )
    for m in model:
        ok = isinstance(m, _WEIGHTED + _BATCHNORM + _PASSIVE) or type(m).__name__.endswith(
            "Reshape"
        )
        if not ok:
            raise ValueError(
                f"norm measures do not support layer {type(m).__name__}; allowed: Linear, Conv1d, "
                "Conv2d, BatchNorm1d/2d, ReLU, Dropout, Flatten, Identity, Reshape"
            )
    return model


@torch.no_grad()
def fold_batchnorm(model: nn.Sequential) -> nn.Sequential:
    """A copy of ``model`` with every BatchNorm folded into the Linear/Conv right before it."""
    layers: list[nn.Module] = []
    for m in _check_flat(copy.deepcopy(model)):
        if isinstance(m, _BATCHNORM):
            prev = layers[-1] if layers else None
            if not isinstance(prev, _WEIGHTED):
                raise ValueError("BatchNorm must directly follow a Linear/Conv layer to be folded")
            scale = (m.weight if m.weight is not None else 1.0) / torch.sqrt(m.running_var + m.eps)
            shift = m.bias if m.bias is not None else 0.0
            bias = prev.bias if prev.bias is not None else torch.zeros_like(m.running_mean)
            prev.weight.mul_(scale.reshape(-1, *([1] * (prev.weight.ndim - 1))))
            new_bias = (bias - m.running_mean) * scale + shift
            if prev.bias is None:
                prev.bias = nn.Parameter(new_bias)
            else:
                prev.bias.copy_(new_bias)
            continue
        layers.append(m)
    return nn.Sequential(*layers).eval()


def weight_matrices(model: nn.Sequential) -> list[torch.Tensor]:
    return [
        m.weight.detach().reshape(m.weight.shape[0], -1) for m in model if isinstance(m, _WEIGHTED)
    ]


@torch.no_grad()
def path_norm_squared(model: nn.Sequential, input_shape: tuple[int, ...]) -> float:
    """Jiang's path norm: ``sum_j f_{w^2}(1)_j`` of a BN-free (folded) flat model."""
    squared = copy.deepcopy(_check_flat(model)).eval()
    if any(isinstance(m, _BATCHNORM) for m in squared):
        raise ValueError("fold batch norm before computing the path norm")
    for p in squared.parameters():
        p.pow_(2)
    p0 = next(squared.parameters())
    ones = torch.ones(1, *input_shape, device=p0.device, dtype=p0.dtype)
    return float(squared(ones).sum())


def margin(logits: torch.Tensor, y: torch.Tensor, percentile: float = 10.0) -> float:
    """The ``percentile``-th order statistic of the logit margin ``f_y - max_{c != y} f_c``."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], -math.inf)
    margins = (true - other.max(1).values).sort().values
    k = min(int(len(margins) * percentile / 100.0), len(margins) - 1)
    return float(margins[k])


def fisher_rao(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(model-Fisher, empirical-Fisher) Fisher-Rao norms ``E <theta, grad l>^2`` (see module doc)."""
    model = copy.deepcopy(model).eval()
    params = [p.requires_grad_(True) for p in model.parameters()]
    with torch.enable_grad():
        out = model(x)
        # J theta by the double-vjp trick: <grad_theta <f, u>, theta> is linear in u, and its
        # gradient in u is J theta (no forward-mode AD needed, so any torch version works).
        u = torch.zeros_like(out, requires_grad=True)
        grads = torch.autograd.grad((out * u).sum(), params, create_graph=True, allow_unused=True)
        dot = sum(
            (g * p.detach()).sum() for g, p in zip(grads, params, strict=True) if g is not None
        )
        jv = torch.autograd.grad(dot, u)[0]
    out = out.detach()
    prob = torch.softmax(out, dim=1)
    mean_jv = (prob * jv).sum(1, keepdim=True)  # <p, J theta>
    per_class = mean_jv - jv  # <p - e_c, J theta> for every class c
    model_fr = float((prob * per_class.pow(2)).sum(1).mean())
    emp_fr = float(per_class.gather(1, y[:, None]).pow(2).mean())
    return model_fr, emp_fr


def norm_values(
    model: nn.Sequential,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    init_model: nn.Module | None = None,
    percentile: float = 10.0,
) -> dict[str, float]:
    """All norm-based measures of an eval-mode model on ``(x, y)``; NaN where undefined."""
    model = model.eval()
    folded = fold_batchnorm(model)
    mats = weight_matrices(folded)
    fro2 = [float(w.pow(2).sum()) for w in mats]
    spec2 = [float(torch.linalg.matrix_norm(w, ord=2)) ** 2 for w in mats]
    with torch.no_grad():
        gamma = margin(model(x), y, percentile)
    log_g2 = 2 * math.log(gamma) if gamma > 0 else math.nan
    inv_g2 = 1.0 / gamma**2 if gamma > 0 else math.nan
    log_fro = sum(math.log(v) for v in fro2)
    log_spec = sum(math.log(v) for v in spec2)
    path2 = path_norm_squared(folded, tuple(x.shape[1:]))
    fr_model, fr_emp = fisher_rao(model, x, y)
    out = {
        "margin": gamma,
        "inverse_margin": inv_g2,
        "frobenius_sum": sum(fro2),
        "log_prod_frobenius": log_fro,
        "log_prod_frobenius_margin": log_fro - log_g2,
        "log_prod_spectral": log_spec,
        "log_prod_spectral_margin": log_spec - log_g2,
        "path_norm": path2,
        "path_norm_margin": path2 * inv_g2,
        "fisher_rao": fr_model,
        "fisher_rao_empirical": fr_emp,
        "dist_init": math.nan,
    }
    if init_model is not None:
        init = fold_batchnorm(copy.deepcopy(init_model).to(x.device, mats[0].dtype).eval())
        mats0 = weight_matrices(init)
        if [w.shape for w in mats0] != [w.shape for w in mats]:
            raise ValueError("init_model's layers do not match the model's layers")
        out["dist_init"] = sum(
            float((w - w0).pow(2).sum()) for w, w0 in zip(mats, mats0, strict=True)
        )
    return out
