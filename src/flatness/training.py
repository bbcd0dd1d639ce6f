"""The training loop: SGD/Adam over in-memory tensors, resumable and bit-for-bit deterministic on CPU.

Every source of randomness is a function of the run seed: weight init and dropout use torch's global
RNG inside ``torch.random.fork_rng`` (so the caller's RNG state is untouched), data order and
augmentation use a local ``torch.Generator``. A checkpoint holds the model, optimizer, both RNG
states and the history, so a run killed and restarted ends with exactly the numbers of an
uninterrupted run. The learning rate is a pure function of the step, so schedules need no state.
The checkpoint format is ``flatness.checkpoint``'s, the optimizer ``flatness.optimizers``' (shared
with the grouped engine), and the divergence rule is ``divergence`` below (shared too).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flatness import checkpoint as ckpt_format
from flatness.config import run_id
from flatness.optimizers import ModelOptimizer, Stacked
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
    divergence: str | None = None  # why the run diverged (``divergence``), else None
    diverged_step: int | None = None  # the step count when it was detected, else None


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


def divergence(loss: float, initial_loss: float, factor: float | None, grads_finite: bool = True,
               params_finite: bool = True) -> str | None:  # fmt: skip
    """The divergence rule of both engines: why this step diverged, or None.

    A step diverges on a non-finite train loss, gradient or parameter, or on a (mini-batch) train
    loss above ``factor`` times the initial loss (``train.divergence_factor``; the initial loss is
    the first history row's). Checked at every step, so a blow-up that recovers (2.3 -> 4456 ->
    41.8) still ends the run as diverged."""
    if not math.isfinite(loss):
        return f"non-finite train loss ({loss})"
    if factor is not None and loss > factor * initial_loss:
        return (f"train loss {loss:.6g} above train.divergence_factor={factor:g} x the initial "
                f"loss {initial_loss:.6g}")  # fmt: skip
    if not grads_finite:
        return "non-finite gradient"
    if not params_finite:
        return "non-finite parameters after the step"
    return None


def row_divergence(row: dict, initial_loss: float, factor: float | None) -> str | None:
    """``divergence`` applied to an evaluation row: the loss after a run's last step (or after a
    blow-up between two checked batches) is seen only there."""
    for key in ("train_loss", "test_loss"):
        if not math.isfinite(row[key]):
            return f"non-finite {key.replace('_', ' ')} at the evaluation of epoch {row['epoch']}"
    reason = divergence(row["train_loss"], initial_loss, factor)
    return reason and f"{reason}, at the evaluation of epoch {row['epoch']}"


def finite_per_run(stacked: Stacked) -> list[bool]:
    """Whether each run's tensors in a stack (leading axis: runs) are all finite."""
    return (
        torch.stack([torch.isfinite(v).flatten(1).all(1) for v in stacked.values()]).all(0).tolist()
    )


def train(cfg, model: nn.Module, data, checkpoint: Path | None = None, log=None, progress=False,
          saved: dict | None = None):  # fmt: skip
    """Train ``model`` (built by the caller inside the run's RNG context) on ``data``.

    ``data`` holds ``x_train, y_train, x_test, y_test`` tensors on the training device. ``log`` is
    called with each history row (W&B). ``checkpoint`` is written every ``checkpoint_every`` epochs
    and resumed from (``saved``, if the caller already loaded it with ``flatness.checkpoint.load``).
    Returns a ``TrainResult``; never raises on divergence.
    """
    device = data.x_train.device
    n, batch = len(data.y_train), int(cfg.train.batch_size)
    steps_per_epoch = math.ceil(n / batch)
    total_steps = cfg.train.steps or cfg.train.epochs * steps_per_epoch
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    factor = cfg.train.divergence_factor
    order = torch.Generator().manual_seed(derive_seed(cfg.seed, "order"))
    torch.manual_seed(derive_seed(cfg.seed, "dropout"))  # inside the caller's fork_rng
    optimizer = ModelOptimizer(model, cfg.optim)
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = {"epoch": 0, "step": 0, "history": [], "seconds": 0.0, "fit": None}
    rid = run_id(cfg)
    if saved is None and cfg.resume == "auto":  # restart: the caller's load logged it
        saved = ckpt_format.load(checkpoint, rid, cfg.resume)
    if saved is not None:
        state = _restore(saved, model, optimizer, order, device)
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
    initial_loss = history[0]["train_loss"]
    epoch, step, seconds, fit = state["epoch"], state["step"], state["seconds"], state["fit"]
    status, stopped_by, reason, diverged_step = STATUS_OK, "budget", None, None
    bar = _progress_bar(n_epochs, epoch, progress)
    model.train()
    while step < total_steps:
        started = time.perf_counter()
        perm = torch.randperm(n, generator=order).to(device)
        for i in range(0, n, batch):
            lr = learning_rate(cfg.optim, step, steps_per_epoch, total_steps)
            idx = perm[i : i + batch]
            xb = data.x_train[idx]
            if cfg.data.augment:
                xb = augment(xb, cfg.data, order)
            loss = F.cross_entropy(model(xb), data.y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            grads = optimizer.grads()
            loss_value = loss.item()
            reason = divergence(loss_value, initial_loss, factor, finite_per_run(grads)[0])
            if reason is None:
                optimizer.step(lr, grads)
                step += 1
                if not finite_per_run(optimizer.params)[0]:
                    reason = divergence(loss_value, initial_loss, factor, params_finite=False)
            if reason is not None:
                status, stopped_by, diverged_step = STATUS_DIVERGED, "diverged", step
                break
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
            reason = row_divergence(row, initial_loss, factor)
            if reason is not None:
                status, stopped_by, diverged_step = STATUS_DIVERGED, "diverged", step
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
            ckpt_format.save(
                checkpoint,
                rid,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                rng=_rng_state(order),
                init_state=init_state,
                **dict(epoch=epoch, step=step, history=history, seconds=seconds, fit=fit),
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
        reason,
        diverged_step,
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


def _rng_state(order: torch.Generator) -> dict:
    """The generator states a resumed run needs, as uint8 tensors (``weights_only`` loads them)."""
    rng = {"cpu": torch.get_rng_state(), "order": order.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _restore(saved: dict, model, optimizer: ModelOptimizer, order: torch.Generator, device) -> dict:
    """Load a checkpoint (``flatness.checkpoint.load``'s validated dict) into the loop's state."""
    saved = dict(saved)
    model.load_state_dict(saved.pop("model"))  # copies into the parameters the optimizer views
    optimizer.load_state_dict(_to(saved.pop("optimizer"), device))
    rng = saved.pop("rng")
    torch.set_rng_state(rng["cpu"])
    order.set_state(rng["order"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return saved


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj
