"""Loss-surface topology: linear paths, filter-normalized 1-D/2-D surfaces, Bezier curves.

- Linear interpolation (Goodfellow et al. 2015; Frankle et al. 2020): the loss along
  ``(1 - t) theta_a + t theta_b``, from initialization to solution or between two solutions. The
  barrier is ``max_t [L(t) - ((1 - t) L(0) + t L(1))]`` (Frankle's linear-mode-connectivity
  barrier, 0 for a convex path); ``barrier_max`` is ``max_t L(t) - max(L(0), L(1))`` (Goodfellow's
  "bump"). Floating-point buffers (BN running statistics) are interpolated too, like
  ``dir_type=states`` in Li et al.'s code; integer buffers come from the first endpoint.
- Filter-normalized directions (Li et al. 2018): a Gaussian direction whose every filter / neuron
  (a row along dim 0 of a weight tensor) is rescaled to that row's weight norm; 1-D tensors (biases,
  BN affine parameters) get a zero direction (``ignore=biasbn``).
- Quadratic Bezier curves (Garipov et al. 2018): ``phi(t) = (1-t)^2 a + 2t(1-t) c + t^2 b`` with the
  control point ``c`` trained by SGD on ``E_{t~U(0,1)} L(phi(t))``, one ``t`` per minibatch.
  Unlike Garipov et al., BN statistics are not recomputed at each ``t``: they are interpolated
  linearly, which is exact for the BN-free nets where this check is cheap.

Everything runs on a private deep copy of the model in eval mode (dropout off, BN running stats)
through ``torch.func.functional_call``; the caller's model, its mode and its gradients are never
touched, and randomness comes from a local ``torch.Generator``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

State = dict[str, torch.Tensor]


class _Serializable:
    def to_dict(self) -> dict:
        """Plain lists and floats for JSON (nested results included)."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
            if isinstance(v, _Serializable):
                out[f.name] = v.to_dict()
        return out


@dataclass(frozen=True)
class PathResult(_Serializable):
    """Loss and accuracy along a path; barriers are taken over ``t`` in [0, 1] only."""

    kind: str  # "linear" or "bezier"
    t: np.ndarray
    loss: np.ndarray
    acc: np.ndarray
    barrier: float  # max_t L(t) - linear interpolation of the endpoint losses
    barrier_max: float  # max_t L(t) - max(L(0), L(1))
    monotone: bool  # loss never increases along t in [0, 1] (Goodfellow et al.)


@dataclass(frozen=True)
class BezierResult(_Serializable):
    """A trained Bezier curve, the straight segment on the same ``t`` grid, the training loss."""

    curve: PathResult
    linear: PathResult
    train_loss: np.ndarray  # minibatch loss at each SGD step, t ~ U(0, 1)
    steps: int


@dataclass(frozen=True)
class Surface1D(_Serializable):
    alphas: np.ndarray
    loss: np.ndarray
    acc: np.ndarray


@dataclass(frozen=True)
class Surface2D(_Serializable):
    """``loss[i, j]`` = L(theta + alphas[i] * d1 + betas[j] * d2)."""

    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    acc: np.ndarray


def linear_interpolation(
    model_a: nn.Module,
    model_b: nn.Module | Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    n_points: int = 25,
    t_range: tuple[float, float] = (0.0, 1.0),
    batch_size: int | None = None,
) -> PathResult:
    """Loss and accuracy on ``(1 - t) a + t b``; ``t_range`` may extend past [0, 1] (Keskar's
    parametric plots use [-1, 2]); t = 0 and t = 1 are always on the grid."""
    _check_data(x, y)
    net, a = _private(model_a)
    b = _state_like(a, model_b, "model_b")
    t = _grid(n_points, t_range)
    evals = [_evaluate(net, _lerp(a, b, float(s)), x, y, batch_size) for s in t]
    return _path("linear", t, evals)


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> State:
    """A random direction with each filter / neuron scaled to its weights' norm (Li et al. 2018)."""
    direction = {}
    for name, w in model.named_parameters():
        w = w.detach()
        if w.dim() <= 1:
            direction[name] = torch.zeros_like(w)
            continue
        d = torch.randn(w.shape, generator=generator, dtype=w.dtype, device="cpu").to(w.device)
        rows_w, rows_d = w.reshape(w.shape[0], -1), d.reshape(d.shape[0], -1)
        scale = rows_w.norm(dim=1) / (rows_d.norm(dim=1) + 1e-10)
        direction[name] = (rows_d * scale[:, None]).reshape(w.shape)
    return direction


def loss_surface_1d(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    span: float = 1.0,
    n_points: int = 41,
    seed: int = 0,
    direction: Mapping[str, torch.Tensor] | None = None,
    batch_size: int | None = None,
) -> Surface1D:
    """L(theta + alpha d) for alpha on [-span, span] along a filter-normalized direction d."""
    _check_data(x, y)
    net, theta = _private(model)
    if direction is None:
        direction = filter_normalized_direction(net, torch.Generator().manual_seed(seed))
    unknown = set(direction) - set(theta)
    if unknown:
        raise ValueError(f"direction has names {sorted(unknown)} that are not model parameters")
    d = {n: v.to(theta[n].device, theta[n].dtype) for n, v in direction.items()}
    alphas = _grid(n_points, (-span, span), include=(0.0,))
    evals = [_evaluate(net, _shift(theta, [(a, d)]), x, y, batch_size) for a in alphas]
    return Surface1D(alphas, np.array([e[0] for e in evals]), np.array([e[1] for e in evals]))


def loss_surface_2d(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    span: float = 1.0,
    n_points: int = 21,
    seed: int = 0,
    batch_size: int | None = None,
) -> Surface2D:
    """L(theta + alpha d1 + beta d2) on an ``n_points`` x ``n_points`` grid over [-span, span]^2."""
    _check_data(x, y)
    net, theta = _private(model)
    gen = torch.Generator().manual_seed(seed)
    d1, d2 = filter_normalized_direction(net, gen), filter_normalized_direction(net, gen)
    grid = _grid(n_points, (-span, span), include=(0.0,))
    loss, acc = np.empty((grid.size, grid.size)), np.empty((grid.size, grid.size))
    for i, a in enumerate(grid):
        for j, b in enumerate(grid):
            loss[i, j], acc[i, j] = _evaluate(
                net, _shift(theta, [(a, d1), (b, d2)]), x, y, batch_size
            )
    return Surface2D(grid, grid.copy(), loss, acc)


def bezier_curve(
    model_a: nn.Module,
    model_b: nn.Module | Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int = 500,
    lr: float = 0.05,
    momentum: float = 0.9,
    batch_size: int = 128,
    n_points: int = 25,
    seed: int = 0,
) -> BezierResult:
    """Train the middle control point of a quadratic Bezier curve between two solutions.

    Minibatches are drawn with replacement from (x, y). The control point starts at the midpoint,
    so training starts from the very straight segment the curve is compared with.
    """
    if steps < 0 or lr <= 0 or batch_size < 1:
        raise ValueError(
            f"need steps >= 0, lr > 0, batch_size >= 1; got {steps}, {lr}, {batch_size}"
        )
    _check_data(x, y)
    net, a = _private(model_a)
    b = _state_like(a, model_b, "model_b")
    params = [n for n, _ in net.named_parameters()]
    control = {n: ((a[n] + b[n]) / 2).clone().requires_grad_(True) for n in params}
    optimizer = torch.optim.SGD(control.values(), lr=lr, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    xs, ys = x.to(_device(a), _dtype(a)), y.to(_device(a))
    history = []
    for _ in range(steps):
        t = float(torch.rand((), generator=gen))
        idx = torch.randint(0, len(ys), (min(batch_size, len(ys)),), generator=gen)
        loss = F.cross_entropy(functional_call(net, _bezier(a, b, control, t), (xs[idx],)), ys[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    t = _grid(n_points, (0.0, 1.0))
    with torch.no_grad():
        frozen = {n: c.detach() for n, c in control.items()}
        curve = [_evaluate(net, _bezier(a, b, frozen, float(s)), x, y, None) for s in t]
        line = [_evaluate(net, _lerp(a, b, float(s)), x, y, None) for s in t]
    return BezierResult(
        _path("bezier", t, curve), _path("linear", t, line), np.array(history), steps
    )


# --- helpers ------------------------------------------------------------------------------------


def _check_data(x: torch.Tensor, y: torch.Tensor) -> None:
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(
            f"x and y must hold the same, non-zero number of rows; got {len(x)}, {len(y)}"
        )
    if y.dtype != torch.long:
        raise ValueError(f"y must hold integer class labels (torch.long), got dtype {y.dtype}")


def _private(model: nn.Module) -> tuple[nn.Module, State]:
    """An eval-mode deep copy and its detached state (parameters and buffers)."""
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, {k: v.detach().clone() for k, v in net.state_dict(keep_vars=True).items()}


def _state_like(a: State, other, name: str) -> State:
    state = other.state_dict() if isinstance(other, nn.Module) else dict(other)
    if set(state) != set(a) or any(state[k].shape != a[k].shape for k in a):
        raise ValueError(
            f"{name} does not match the architecture of model_a (keys or shapes differ)"
        )
    return {k: state[k].detach().to(a[k].device, a[k].dtype) for k in a}


def _lerp(a: State, b: State, t: float) -> State:
    return {k: (1 - t) * a[k] + t * b[k] if a[k].is_floating_point() else a[k] for k in a}


def _bezier(a: State, b: State, control: State, t: float) -> State:
    """Parameters on the curve; buffers (BN statistics) on the straight line."""
    out = _lerp(a, b, t)
    for n, c in control.items():
        out[n] = (1 - t) ** 2 * a[n] + 2 * t * (1 - t) * c + t**2 * b[n]
    return out


def _shift(theta: State, moves) -> State:
    out = dict(theta)
    for coef, d in moves:
        for n, v in d.items():
            out[n] = out[n] + float(coef) * v
    return out


def _dtype(state: State) -> torch.dtype:
    return next(v.dtype for v in state.values() if v.is_floating_point())


def _device(state: State) -> torch.device:
    return next(iter(state.values())).device


@torch.no_grad()
def _evaluate(net, state, x, y, batch_size) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over all of (x, y), in chunks of ``batch_size`` rows."""
    n = len(y)
    step = batch_size or n
    loss, correct = 0.0, 0
    for i in range(0, n, step):
        xb = x[i : i + step].to(_device(state), _dtype(state))
        yb = y[i : i + step].to(_device(state))
        out = functional_call(net, state, (xb,))
        loss += F.cross_entropy(out, yb, reduction="sum").item()
        correct += int((out.argmax(1) == yb).sum())
    return loss / n, correct / n


def _grid(n_points: int, t_range: tuple[float, float], include=(0.0, 1.0)) -> np.ndarray:
    """``n_points`` evenly spaced values, plus the ``include`` points inside the range."""
    lo, hi = (float(v) for v in t_range)
    if n_points < 2 or not lo < hi:
        raise ValueError(f"need n_points >= 2 and a range lo < hi; got {n_points}, {t_range}")
    extra = [v for v in include if lo <= v <= hi]
    return np.unique(np.round(np.concatenate([np.linspace(lo, hi, n_points), extra]), 12))


def _path(kind: str, t: np.ndarray, evals) -> PathResult:
    loss, acc = np.array([e[0] for e in evals]), np.array([e[1] for e in evals])
    inside = (t >= 0) & (t <= 1)
    l0, l1 = loss[t == 0][0], loss[t == 1][0]
    ti, li = t[inside], loss[inside]
    barrier = float(np.max(li - ((1 - ti) * l0 + ti * l1)))
    monotone = bool(np.all(np.diff(li) <= 1e-9 * max(1.0, abs(l0))))
    return PathResult(kind, t, loss, acc, barrier, float(li.max() - max(l0, l1)), monotone)
