"""The training loop: SGD/Adam over in-memory tensors, resumable and bit-for-bit deterministic on CPU.

Every source of randomness is a function of the run seed: weight init and dropout use torch's global
RNG inside ``torch.random.fork_rng`` (so the caller's RNG state is untouched), data order and
augmentation use a local ``torch.Generator``. A checkpoint holds the model, optimizer, both RNG
states and the history, so a run killed and restarted ends with exactly the numbers of an
uninterrupted run. The learning rate is a pure function of the step, so schedules need no state.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flatness.io import atomic_torch_save
from flatness.seeds import derive_seed

STATUS_OK, STATUS_DIVERGED = "ok", "diverged"


@dataclass(frozen=True)
class TrainResult:
    model: nn.Module
    init_state: dict
    history: list[dict]
    status: str
    stopped_by: str
    steps: int
    epochs: int
    time_to_fit_epoch: int | None
    time_to_fit_step: int | None
    seconds: float


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 4096):
    """Mean cross-entropy and accuracy in eval mode; restores the model's previous mode."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch):
        out = model(x[i : i + batch])
        loss += F.cross_entropy(out, y[i : i + batch], reduction="sum").item()
        correct += (out.argmax(1) == y[i : i + batch]).sum().item()
    model.train(was_training)
    return loss / len(y), correct / len(y)


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


def make_optimizer(model: nn.Module, optim_cfg) -> torch.optim.Optimizer:
    params, wd = model.parameters(), float(optim_cfg.weight_decay)
    if optim_cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=optim_cfg.lr, momentum=optim_cfg.momentum, weight_decay=wd
        )
    return torch.optim.Adam(
        params, lr=optim_cfg.lr, betas=(float(optim_cfg.momentum), 0.999), weight_decay=wd
    )


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


def train(cfg, model: nn.Module, data, checkpoint: Path | None = None, log=None, progress=False):
    """Train ``model`` (built by the caller inside the run's RNG context) on ``data``.

    ``data`` holds ``x_train, y_train, x_test, y_test`` tensors on the training device. ``log`` is
    called with each history row (W&B). Returns a ``TrainResult``; never raises on divergence.
    """
    device = data.x_train.device
    n, batch = len(data.y_train), int(cfg.train.batch_size)
    steps_per_epoch = math.ceil(n / batch)
    total_steps = cfg.train.steps or cfg.train.epochs * steps_per_epoch
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    order = torch.Generator().manual_seed(derive_seed(cfg.seed, "order"))
    torch.manual_seed(derive_seed(cfg.seed, "dropout"))  # inside the caller's fork_rng
    optimizer = make_optimizer(model, cfg.optim)
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = {"epoch": 0, "step": 0, "history": [], "seconds": 0.0, "fit": None}
    if checkpoint is not None and checkpoint.exists():
        state = _restore(checkpoint, model, optimizer, order, device)
        init_state = state.pop("init_state")
    history: list[dict] = state["history"]

    def record(epoch: int, step: int, lr: float, seconds: float) -> dict:
        tr_loss, tr_acc = evaluate(model, data.x_train, data.y_train)
        te_loss, te_acc = evaluate(model, data.x_test, data.y_test)
        row = dict(
            epoch=epoch,
            step=step,
            train_loss=tr_loss,
            train_acc=tr_acc,
            test_loss=te_loss,
            test_acc=te_acc,
            lr=lr,
            seconds=seconds,
        )
        history.append(row)
        if log is not None:
            log(row)
        return row

    if not history:
        record(0, 0, learning_rate(cfg.optim, 0, steps_per_epoch, total_steps), 0.0)
    epoch, step, seconds, fit = state["epoch"], state["step"], state["seconds"], state["fit"]
    status, stopped_by = STATUS_OK, "budget"
    bar = _progress_bar(n_epochs, epoch, progress)
    model.train()
    while step < total_steps:
        started = time.perf_counter()
        perm = torch.randperm(n, generator=order).to(device)
        for i in range(0, n, batch):
            lr = learning_rate(cfg.optim, step, steps_per_epoch, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = perm[i : i + batch]
            xb = data.x_train[idx]
            if cfg.data.augment:
                xb = augment(xb, cfg.data, order)
            loss = F.cross_entropy(model(xb), data.y_train[idx])
            if not torch.isfinite(loss):
                status, stopped_by = STATUS_DIVERGED, "diverged"
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step >= total_steps:
                break
        epoch += 1
        seconds += time.perf_counter() - started
        if status == STATUS_DIVERGED:
            record(epoch, step, lr, seconds)
            break
        last = step >= total_steps
        if epoch % cfg.train.eval_every == 0 or last:
            row = record(epoch, step, lr, seconds)
            if not all(math.isfinite(row[k]) for k in ("train_loss", "test_loss")):
                status, stopped_by = STATUS_DIVERGED, "diverged"
                break
            if fit is None and row["train_acc"] == 1.0:
                fit = (epoch, step)
            if _reached_target(cfg.train, row):
                stopped_by = "target_train_loss" if cfg.train.target_train_loss else "full_accuracy"
                break
            if bar is not None:
                bar.set_postfix(loss=f"{row['train_loss']:.3g}", acc=f"{row['train_acc']:.3f}")
        if bar is not None:
            bar.update(1)
        if checkpoint is not None and epoch % cfg.train.checkpoint_every == 0 and not last:
            _save(
                checkpoint,
                model,
                optimizer,
                order,
                init_state,
                dict(epoch=epoch, step=step, history=history, seconds=seconds, fit=fit),
            )
    if bar is not None:
        bar.close()
    if history[-1]["epoch"] != epoch:
        record(epoch, step, learning_rate(cfg.optim, step, steps_per_epoch, total_steps), seconds)
    return TrainResult(
        model,
        init_state,
        history,
        status,
        stopped_by,
        step,
        epoch,
        fit[0] if fit else None,
        fit[1] if fit else None,
        seconds,
    )


def _reached_target(train_cfg, row: dict) -> bool:
    target = train_cfg.target_train_loss
    if target is not None and row["train_loss"] <= target:
        return True
    return bool(train_cfg.stop_at_full_accuracy and row["train_acc"] == 1.0)


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True)


def _save(path: Path, model, optimizer, order: torch.Generator, init_state, state: dict) -> None:
    rng = {"cpu": torch.get_rng_state(), "order": order.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    atomic_torch_save(
        path,
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng,
            "init_state": init_state,
            **state,
        },
    )


def _restore(path: Path, model, optimizer, order: torch.Generator, device) -> dict:
    ckpt = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(ckpt.pop("model"))
    optimizer.load_state_dict(ckpt.pop("optimizer"))
    rng = ckpt.pop("rng")
    torch.set_rng_state(rng["cpu"])
    order.set_state(rng["order"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return ckpt
