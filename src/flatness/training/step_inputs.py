"""What each training step feeds in besides the weights: its learning rate and augmented batch.

Both are pure functions of their arguments (the learning rate of the step, the augmentation of the
run's own data-order generator), so both step engines draw exactly the same numbers for a run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def learning_rate(optim_cfg, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """The learning rate at ``step``: linear warm-up, then the configured schedule."""
    base, epoch = float(optim_cfg.lr), step / steps_per_epoch
    warmup = optim_cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return base * (step + 1) / warmup
    schedule = optim_cfg.schedule
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "step":
        return base * optim_cfg.gamma ** int(epoch // optim_cfg.step_every)
    if schedule == "exponential":
        return base * optim_cfg.gamma ** int(epoch)
    return base


def augment(x: torch.Tensor, data_cfg, generator: torch.Generator) -> torch.Tensor:
    """Random circular shifts for 1-D signals; zero-padded random crops (+ flips for CIFAR-10)."""
    shift = int(data_cfg.augment_shift)
    n = x.shape[0]
    if x.ndim == 2:
        offsets = torch.randint(-shift, shift + 1, (n,), generator=generator)
        index = (torch.arange(x.shape[1])[None, :] - offsets[:, None]) % x.shape[1]
        return torch.gather(x, 1, index.to(x.device))
    h, w = x.shape[-2:]
    padded = F.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :]).to(x.device)
    cols = (dx[:, None] + torch.arange(w)[None, :]).to(x.device)
    out = padded[
        torch.arange(n)[:, None, None, None],
        torch.arange(x.shape[1])[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    if data_cfg.name == "cifar10":
        flip = torch.rand(n, generator=generator) < 0.5
        out[flip.to(x.device)] = out[flip.to(x.device)].flip(-1)
    return out
