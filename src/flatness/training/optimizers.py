"""SGD and Adam over stacked weights: one implementation for both training engines.

``StackedOptimizer`` updates R runs' weights, stacked along a leading axis, with per-run learning
rate, weight decay and momentum. The stacked engine (``stacked_step``) steps R runs at once;
the reference engine (``reference_step``) steps a stack of one (``ModelOptimizer``: views of
the model's parameters with a leading axis of 1, updated in place).

Why not ``torch.optim``: its step wrapper imports ``torch._dynamo``, about 2.7 s of every training
process's start-up. The update rules are torch's CPU single-tensor SGD (dampening 0, no Nesterov)
and Adam (L2 weight decay added to the gradient, betas ``(momentum, 0.999)``, eps 1e-8); they agree
with ``torch.optim`` to float32 rounding (tests/test_training.py compares them). The state is
plain tensors (``run_state``), so checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

Stacked = dict[str, torch.Tensor]
OPTIMIZER_NAMES = ("sgd", "adam")


class StackedOptimizer:
    """SGD or Adam over stacked weights; ``optim_cfgs`` are the runs' ``optim`` nodes."""

    def __init__(self, optim_cfgs, params: Stacked):
        names = {c.name for c in optim_cfgs}
        if len(names) != 1 or not names <= set(OPTIMIZER_NAMES):
            raise ValueError(f"optim.name={sorted(names)} within a group; allowed: one of "
                             f"{', '.join(OPTIMIZER_NAMES)}, the same for every run")  # fmt: skip
        self.name = names.pop()
        self.weight_decay = [float(c.weight_decay) for c in optim_cfgs]
        self.momentum = [float(c.momentum) for c in optim_cfgs]
        self.state: dict[str, Stacked] = {k: {} for k in params}
        self.steps = torch.zeros(len(optim_cfgs))  # Adam's per-run step counts

    def step(self, params: Stacked, grads: Stacked, lr: list[float], update: list[bool]) -> Stacked:
        """New stacked weights; runs with ``update[r]`` False keep their weights and state.

        Updates in place (weights and state belong to the caller's loop; ``grads`` are fresh and
        overwritten), except when some run is held back: then the update works on copies and
        ``torch.where`` picks."""
        mask = None if all(update) else torch.tensor(update)
        if self.name == "adam":
            self.steps = self.steps + (mask.float() if mask is not None else 1.0)
        scalars = self._scalars(lr)
        new = {}
        for k, p in params.items():
            state = self.state[k]
            if mask is not None:
                p, state = p.clone(), {n: v.clone() for n, v in state.items()}
            g = grads[k]
            shaped = {n: v.view(-1, *([1] * (p.ndim - 1))).to(p.device) for n, v in scalars.items()}
            if any(self.weight_decay):
                g.addcmul_(p, shaped["weight_decay"])
            (self._sgd if self.name == "sgd" else self._adam)(state, g, p, shaped)
            if mask is not None:
                old = self.state[k]
                state = {
                    n: v if n not in old else _where(mask, v, old[n]) for n, v in state.items()
                }
                p = _where(mask, p, params[k])
            self.state[k] = state
            new[k] = p
        return new

    def _scalars(self, lr: list[float]) -> dict[str, torch.Tensor]:
        """This step's per-run scalars as vectors (Adam's bias corrections in float64 first)."""
        out = {"neg_lr": -torch.tensor(lr), "momentum": torch.tensor(self.momentum),
               "weight_decay": torch.tensor(self.weight_decay)}  # fmt: skip
        if self.name == "adam":  # scalars as torch computes them: in float64, then float32
            out["one_minus_momentum"] = torch.tensor([1 - m for m in self.momentum])
            steps = self.steps.tolist()
            out["neg_step_size"] = -torch.tensor([
                lr_r / (1 - b1**s) if s > 0 else 0.0
                for lr_r, b1, s in zip(lr, self.momentum, steps, strict=True)
            ])  # fmt: skip
            out["bc2_sqrt"] = torch.tensor(
                [math.sqrt(1 - 0.999**s) if s > 0 else 1.0 for s in steps]
            )
        return out

    def _sgd(self, state, g, p, s) -> None:
        """torch.optim.SGD (dampening 0, no Nesterov): buf = m buf + g; p -= lr buf."""
        if any(self.momentum):
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.clone()
            else:
                buf.mul_(s["momentum"]).add_(g)
            g = buf
        p.addcmul_(g, s["neg_lr"])

    def _adam(self, state, g, p, s) -> None:
        """torch.optim.Adam (L2 weight decay in the gradient, betas (momentum, 0.999), eps 1e-8)."""
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(g, s["one_minus_momentum"])
        exp_avg_sq.mul_(0.999).addcmul_(g, g, value=1 - 0.999)
        denom = (exp_avg_sq.sqrt() / s["bc2_sqrt"]).add_(1e-8)
        p.addcdiv_(exp_avg * s["neg_step_size"], denom)  # torch's (value * exp_avg) / denom

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the runs at indices ``keep`` (runs leave a group when they finish)."""
        self.state = {k: {n: v[keep] for n, v in s.items()} for k, s in self.state.items()}
        self.steps = self.steps[keep]
        self.weight_decay = [self.weight_decay[i] for i in keep.tolist()]
        self.momentum = [self.momentum[i] for i in keep.tolist()]

    def run_state(self, r: int) -> dict:
        """Run ``r``'s state as plain tensors and numbers (what a checkpoint stores)."""
        return {
            "name": self.name,
            "steps": float(self.steps[r]),
            "state": {k: {n: v[r].clone() for n, v in s.items()} for k, s in self.state.items()},
        }

    def load_run_state(self, r: int, saved: dict) -> None:
        """Set run ``r``'s state from ``run_state``'s output (either engine's checkpoint)."""
        if saved.get("name") != self.name or set(saved.get("state", {})) != set(self.state):
            raise ValueError(f"optimizer state for {saved.get('name')!r} over parameters "
                             f"{sorted(saved.get('state', {}))} does not fit this {self.name} "
                             f"over {sorted(self.state)}")  # fmt: skip
        self.steps[r] = float(saved["steps"])
        for k, buffers in saved["state"].items():
            for n, v in buffers.items():
                stacked = self.state[k].get(n)
                if stacked is None:
                    shape = (len(self.momentum), *v.shape)
                    stacked = self.state[k][n] = torch.zeros(shape, dtype=v.dtype, device=v.device)
                stacked[r] = v


class ModelOptimizer:
    """A ``StackedOptimizer`` over one ``nn.Module``'s parameters: the reference engine's step.

    Views of the parameters with a leading axis of one are updated in place, so the model trains
    exactly as the stacked engine trains one run."""

    def __init__(self, model: nn.Module, optim_cfg):
        self.model = model
        self.params = {k: p.detach().unsqueeze(0) for k, p in model.named_parameters()}
        self.stacked = StackedOptimizer([optim_cfg], self.params)

    def zero_grad(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    def grads(self) -> Stacked:
        """The current gradients as a stack of one (zeros for a parameter without gradient)."""
        return {
            k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().unsqueeze(0)
            for k, p in self.model.named_parameters()
        }

    @torch.no_grad()
    def step(self, lr: float, grads: Stacked | None = None) -> None:
        self.stacked.step(self.params, grads if grads is not None else self.grads(), [lr], [True])

    def state_dict(self) -> dict:
        return self.stacked.run_state(0)

    def load_state_dict(self, saved: dict) -> None:
        self.stacked.load_run_state(0, saved)


def _where(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (new.ndim - 1))).to(new.device), new, old)
