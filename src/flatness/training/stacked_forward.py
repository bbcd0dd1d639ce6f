"""A flat model as a pure function of stacked weights: the forward pass of the stacked engine.

The stacked engine (``stacked_step``) trains R runs that share an architecture in one loop: the
R state dicts are stacked along a new leading axis, and ``FlatForward`` runs the flat
``nn.Sequential`` of ``flatness.models`` on all R at once, layer by layer, each layer as one batched
kernel whose result for run r depends only on run r's weights and inputs:

- linear layers are one ``baddbmm`` (bias fused, as ``nn.Linear``'s ``addmm``);
- convolutions are one grouped convolution (the R runs' channels side by side, ``groups=R``);
- batch norm is one ``F.batch_norm`` over the R runs' channels side by side, so each run gets its
  own batch statistics and its own running statistics, updated by torch's own kernel;
- dropout multiplies by masks passed in from outside, drawn per run exactly as ``nn.Dropout`` draws
  them (``bernoulli_(1 - p)`` then ``/ (1 - p)``, see ``dropout_mask``), so each run's masks come
  from its own generator and equal, bit for bit, the masks of the same run trained alone.

Explicit batched kernels rather than ``torch.func.vmap`` over a per-run forward: on CPU, vmap's
batching rules split ``linear`` into ``bmm`` + ``add``, run a Python decomposition for
cross-entropy, and ``torch.func.grad`` imports ``torch._dynamo`` (~3 s a process); measured on 16
MNIST-1D MLPs the explicit kernels were faster at every width (see bench/bench_grouped.py).

The optimizers over stacked weights live in ``optimizers``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flatness.models import _Reshape

Stacked = dict[str, torch.Tensor]


class FlatForward:
    """The pure forward pass of one flat ``nn.Sequential`` (its layers' settings, not its weights)."""

    def __init__(self, model: nn.Sequential, sample_shape: tuple[int, ...]):
        self.layers = [(str(i), m) for i, m in enumerate(model)]
        for name, m in self.layers:
            allowed = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ReLU, nn.Flatten, nn.Dropout, _Reshape)
            if not isinstance(m, (*allowed, nn.modules.batchnorm._BatchNorm)):
                raise ValueError(f"grouped training cannot vectorize layer {name}: {m!r}")
        self.dropout_shapes = _dropout_input_shapes(model, sample_shape)

    def __call__(self, params: Stacked, buffers: Stacked, x, masks=(), train: bool = True):
        """Logits ``(R, B, classes)`` of R runs on their batches ``x`` ``(R, B, ...)``, and in
        train mode the runs' updated batch-norm buffers (the inputs are not modified)."""
        new_buffers, masks = {}, list(masks)
        for name, m in self.layers:
            if isinstance(m, nn.Linear):
                w, b = params[f"{name}.weight"], params[f"{name}.bias"]
                x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
            elif isinstance(m, nn.Conv1d | nn.Conv2d):
                x = self._conv(name, m, params, x)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                x = self._batch_norm(name, m, params, buffers, x, train, new_buffers)
            elif isinstance(m, nn.ReLU):
                x = F.relu(x)
            elif isinstance(m, nn.Flatten):
                end = m.end_dim if m.end_dim < 0 else m.end_dim + 1
                x = x.flatten(m.start_dim + 1, end)
            elif isinstance(m, _Reshape):
                x = x.reshape(x.shape[0], x.shape[1], *m.shape)
            elif isinstance(m, nn.Dropout) and train:
                x = x * masks.pop(0)
        return x, new_buffers

    @staticmethod
    def _conv(name, m, params, x):
        """R convolutions as one grouped convolution: (R, B, C, ...) -> (B, R*C, ...) and back."""
        n_runs = x.shape[0]
        w, b = params[f"{name}.weight"], params.get(f"{name}.bias")
        conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
        out = conv(_runs_to_channels(x), w.flatten(0, 1), None if b is None else b.flatten(),
                   m.stride, m.padding, m.dilation, m.groups * n_runs)  # fmt: skip
        return _channels_to_runs(out, n_runs)

    @staticmethod
    def _batch_norm(name, m, params, buffers, x, train, new_buffers):
        """Per-run batch norm as one ``F.batch_norm`` over the R runs' channels side by side."""
        if m.momentum is None:
            raise ValueError(f"layer {name}: batch norm with momentum=None is not supported")
        n_runs = x.shape[0]
        weight, bias = params[f"{name}.weight"].flatten(), params[f"{name}.bias"].flatten()
        mean = buffers[f"{name}.running_mean"].flatten().clone()
        var = buffers[f"{name}.running_var"].flatten().clone()
        out = F.batch_norm(_runs_to_channels(x), mean, var, weight, bias, train, m.momentum, m.eps)
        if train:  # F.batch_norm updated the copies in place, exactly as nn.BatchNorm does
            new_buffers[f"{name}.running_mean"] = mean.view(n_runs, -1)
            new_buffers[f"{name}.running_var"] = var.view(n_runs, -1)
            tracked = f"{name}.num_batches_tracked"
            new_buffers[tracked] = buffers[tracked] + 1
        return _channels_to_runs(out, n_runs)


def _runs_to_channels(x: torch.Tensor) -> torch.Tensor:
    """(R, B, C, ...) -> (B, R*C, ...): each run's channels become channels of one batch."""
    return x.transpose(0, 1).flatten(1, 2)


def _channels_to_runs(x: torch.Tensor, n_runs: int) -> torch.Tensor:
    """(B, R*C, ...) -> (R, B, C, ...)."""
    return x.unflatten(1, (n_runs, -1)).transpose(0, 1)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each run's mean cross-entropy over its batch (one kernel for all runs)."""
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
    return ce.view(y.shape).mean(1)


@torch.no_grad()
def evaluate_stacked(forward, params, buffers, data, test, chunk: int = 4096) -> list[dict]:
    """Eval-mode loss and accuracy of every run on its train and test split (all runs at once)."""
    out = [{} for _ in range(len(data[1]))]
    for split, (x, y) in (("train", data), ("test", test)):
        n = y.shape[1]
        loss = torch.zeros(len(y), dtype=torch.float64)
        correct = torch.zeros(len(y), dtype=torch.int64)
        for i in range(0, n, chunk):
            logits = forward(params, buffers, x[:, i : i + chunk], train=False)[0]
            yc = y[:, i : i + chunk]
            ce = F.cross_entropy(logits.flatten(0, 1), yc.flatten(), reduction="none")
            loss += ce.view(yc.shape).sum(1).double().cpu()
            correct += (logits.argmax(2) == yc).sum(1).cpu()
        for row, lo, c in zip(out, loss.tolist(), correct.tolist(), strict=True):
            row[f"{split}_loss"], row[f"{split}_acc"] = lo / n, c / n
    return [
        {k: row[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")} for row in out
    ]


def _dropout_input_shapes(model: nn.Sequential, sample_shape) -> list[tuple[float, tuple]]:
    """(p, per-example input shape) of every dropout layer, in order, from a probe forward pass."""
    shapes: list[tuple[float, tuple]] = []
    probe = torch.zeros(2, *sample_shape)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Dropout):
                shapes.append((float(m.p), tuple(probe.shape[1:])))
            if not isinstance(m, nn.Dropout | nn.modules.batchnorm._BatchNorm):
                probe = m(probe)
    return shapes


def dropout_mask(shape, p: float, generator: torch.Generator) -> torch.Tensor:
    """The mask ``nn.Dropout`` draws on CPU (``bernoulli_(1 - p)``, scaled by ``1 / (1 - p)``)."""
    return torch.empty(shape).bernoulli_(1 - p, generator=generator).div_(1 - p)


def stack(states: list[dict]) -> Stacked:
    return {k: torch.stack([s[k] for s in states]) for k in states[0]}
