"""Grouped training: R runs of one architecture trained in one vectorized loop.

On a few CPU cores a small MLP step is mostly framework overhead, so R runs stepped together, each
layer one batched kernel over their stacked weights (``flatness.functional``), cost little more
than one. ``train_group`` gives every run exactly the semantics of ``flatness.training.train`` (the
reference):

- its own data order and augmentation draws (its ``derive_seed(seed, "order")`` generator), its own
  labels and inputs (corruption), learning-rate schedule, weight decay and momentum;
- its own dropout masks, drawn from a generator seeded like the single path's global RNG and drawn
  the way ``nn.Dropout`` draws them, so the masks are bit-for-bit those of the run trained alone;
- its own batch-norm batch statistics and running statistics (``flatness.functional``);
- its own evaluation rows, early stopping and step budget, and the single path's divergence rule
  (``flatness.training.divergence``, checked per step): a run that stops (diverged, target
  reached, budget spent) is frozen for the rest of the epoch and then leaves the group, so the
  others go on at full speed;
- its own ``checkpoint.pt`` in ``flatness.checkpoint``'s format (model, optimizer state, generator
  states, history, run id), so a killed group resumes, and either path can resume the other's.

Results agree with the single path to floating-point rounding, not bits: batched matmuls (``bmm``)
may accumulate in a different order than the single run's ``mm``. ``seconds`` is the group's wall
time, shared by its runs.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from flatness import checkpoint as ckpt_format
from flatness.config import run_id
from flatness.functional import FlatForward, cross_entropy, dropout_mask, evaluate, stack
from flatness.grouping import check_compatible
from flatness.optimizers import StackedOptimizer
from flatness.training import (
    STATUS_DIVERGED,
    STATUS_OK,
    TrainResult,
    _reached_target,
    augment,
    derive_seed,
    divergence,
    finite_per_run,
    learning_rate,
    row_divergence,
)


@dataclass
class _Run:
    """One run's bookkeeping inside a group (everything but its stacked tensors)."""

    cfg: object
    run_id: str
    total_steps: int
    order: torch.Generator
    dropout: torch.Generator
    checkpoint: Path | None
    log: object
    init_state: dict
    epoch: int = 0
    step: int = 0
    seconds: float = 0.0
    fit: tuple | None = None
    history: list = field(default_factory=list)
    status: str = STATUS_OK
    stopped_by: str = "budget"
    divergence: str | None = None
    diverged_step: int | None = None
    lr: float = 0.0
    frozen: bool = False
    done: bool = False
    perm: torch.Tensor | None = None


def train_group(cfgs, models, splits, checkpoints=None, logs=None, saved=None) -> list[TrainResult]:
    """Train ``models[r]`` (built under run ``r``'s seed) on ``splits[r]`` for every run ``r``.

    ``cfgs`` must agree on everything ``flatness.grouping`` keeps in a group key (architecture,
    data size, batch size, optimizer name); scalars such as lr, weight decay, momentum, schedule,
    epochs and stopping rules may differ. The caller's models are not modified. Returns one
    ``TrainResult`` per run, in order. ``saved[r]`` is run ``r``'s checkpoint if the caller
    already loaded it (``flatness.checkpoint.load``); otherwise ``checkpoints[r]`` is loaded.
    """
    n_runs = len(cfgs)
    checkpoints = list(checkpoints or [None] * n_runs)
    logs = list(logs or [None] * n_runs)
    saved = list(saved or [None] * n_runs)
    n, batch = len(splits[0].y_train), int(cfgs[0].train.batch_size)
    check_compatible(cfgs, models, splits, n, batch)
    steps_per_epoch = math.ceil(n / batch)
    template = copy.deepcopy(models[0])
    keys = list(template.state_dict())
    param_names = [k for k, _ in template.named_parameters()]
    states = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in models]
    runs = [
        _Run(
            cfg=_plain(c),
            run_id=run_id(c),
            total_steps=c.train.steps or c.train.epochs * steps_per_epoch,
            order=torch.Generator().manual_seed(derive_seed(c.seed, "order")),
            dropout=torch.Generator().manual_seed(derive_seed(c.seed, "dropout")),
            checkpoint=ckpt,
            log=log,
            init_state={k: v.clone() for k, v in s.items()},
        )
        for c, s, ckpt, log in zip(cfgs, states, checkpoints, logs, strict=True)
    ]
    saved = [
        _restore(run, states, r, s) for r, (run, s) in enumerate(zip(runs, saved, strict=True))
    ]
    params = stack([{k: s[k] for k in param_names} for s in states])
    buffers = stack([{k: v for k, v in s.items() if k not in param_names} for s in states])
    optimizer = StackedOptimizer([run.cfg.optim for run in runs], params)
    for r, ckpt in enumerate(saved):
        if ckpt is not None:
            optimizer.load_run_state(r, ckpt["optimizer"])
    data = [torch.stack([getattr(s, k) for s in splits]) for k in ("x_train", "y_train")]
    test = [torch.stack([getattr(s, k) for s in splits]) for k in ("x_test", "y_test")]
    forward = FlatForward(template, tuple(data[0].shape[2:]))

    def step_fn(params, buffers, xb, yb, masks):
        """Per-run losses and gradients: the gradient of the sum of the runs' losses with respect
        to the stacked weights is each run's own gradient (runs share no weights)."""
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        logits, new_buffers = forward(leaves, buffers, xb, masks, train=True)
        losses = cross_entropy(logits, yb)
        grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
        return dict(zip(leaves, grads, strict=True)), (losses.detach(), new_buffers)

    results: dict[int, TrainResult] = {}
    active = list(range(n_runs))

    def record(rows: list[dict], which: list[int], initial: bool = False) -> None:
        for a in which:
            run = runs[active[a]]
            lr = run.lr
            if initial:  # the schedule at step 0, as the single path logs its first row
                lr = learning_rate(run.cfg.optim, 0, steps_per_epoch, run.total_steps)
            row = dict(epoch=run.epoch, step=run.step, **rows[a], lr=lr, seconds=run.seconds)
            run.history.append(row)
            if run.log is not None:
                run.log(row)

    fresh = [a for a, r in enumerate(active) if not runs[r].history]
    if fresh:
        record(evaluate(forward, params, buffers, data, test), fresh, initial=True)
    while active:
        started = time.perf_counter()
        for r in active:
            runs[r].perm = torch.randperm(n, generator=runs[r].order).to(data[0].device)
            runs[r].frozen = runs[r].step >= runs[r].total_steps
        for i in range(0, n, batch):
            group = [runs[r] for r in active]
            live = [not run.frozen for run in group]
            lrs = [learning_rate(run.cfg.optim, run.step, steps_per_epoch, run.total_steps)
                   for run in group]  # fmt: skip
            xb, yb, masks = _batch(group, live, data, i, batch, forward.dropout_shapes)
            grads, (losses, new_buffers) = step_fn(params, buffers, xb, yb, masks)
            losses, grads_ok = losses.tolist(), finite_per_run(grads)
            reasons = [divergence(loss, run.history[0]["train_loss"], run.cfg.train.divergence_factor,
                                  ok) if live_r else None
                       for run, loss, ok, live_r in zip(group, losses, grads_ok, live, strict=True)]  # fmt: skip
            buffers = _select(live, new_buffers, buffers)
            update = [ok and r is None for ok, r in zip(live, reasons, strict=True)]
            params = optimizer.step(params, grads, lrs, update)
            params_ok = finite_per_run(params)
            for a, (run, ok, lr) in enumerate(zip(group, update, lrs, strict=True)):
                if ok:
                    run.lr = lr
                    run.step += 1
                    run.frozen = run.step >= run.total_steps
                    if not params_ok[a]:
                        factor = run.cfg.train.divergence_factor
                        reasons[a] = divergence(losses[a], run.history[0]["train_loss"], factor,
                                                params_finite=False)  # fmt: skip
                elif live[a]:
                    run.lr = lr
                if reasons[a] is not None:
                    run.status, run.stopped_by, run.frozen = STATUS_DIVERGED, "diverged", True
                    run.divergence, run.diverged_step = reasons[a], run.step
            if all(run.frozen for run in group):
                break
        elapsed = time.perf_counter() - started
        for r in active:
            runs[r].epoch += 1
            runs[r].seconds += elapsed
        due = [a for a, r in enumerate(active) if _due(runs[r])]
        if due:
            record(evaluate(forward, params, buffers, data, test), due)
        for a, r in enumerate(active):
            _end_of_epoch(runs[r], optimizer, a, keys, params, buffers)
        finished = [a for a, r in enumerate(active) if runs[r].done]
        for a in finished:  # runs that stopped leave the group: the rest go on at full speed
            model = copy.deepcopy(template)
            model.load_state_dict(_state(keys, params, buffers, a))
            results[active[a]] = _result(runs[active[a]], model)
        if finished:
            keep = torch.tensor(
                [a for a, r in enumerate(active) if not runs[r].done], dtype=torch.long
            )
            params, buffers = ({k: v[keep] for k, v in d.items()} for d in (params, buffers))
            data, test = [t[keep] for t in data], [t[keep] for t in test]
            optimizer.select(keep)
            active = [active[a] for a in keep.tolist()]
    return [results[r] for r in range(n_runs)]


def _batch(group: list[_Run], live: list[bool], data, i: int, batch: int, dropout_shapes):
    """Batch ``i`` of every run: its own examples, augmentation draws and dropout masks, drawn
    from its own generators in the single path's order (frozen runs draw nothing)."""
    idx = torch.stack([run.perm[i : i + batch] for run in group])
    xb = data[0][torch.arange(len(group), device=idx.device)[:, None], idx]
    yb = data[1].gather(1, idx)
    if any(run.cfg.data.augment for run in group):
        xb = torch.stack([
            augment(x, run.cfg.data, run.order) if ok and run.cfg.data.augment else x
            for x, run, ok in zip(xb, group, live, strict=True)
        ])  # fmt: skip
    size = idx.shape[1]
    masks = [
        torch.stack([
            dropout_mask((size, *shape), p, run.dropout) if ok else torch.ones(size, *shape)
            for run, ok in zip(group, live, strict=True)
        ]).to(xb.device)
        for p, shape in dropout_shapes
    ]  # fmt: skip
    return xb, yb, masks


def _plain(cfg) -> SimpleNamespace:
    """A config as nested namespaces: the step loop reads it thousands of times a second, and an
    OmegaConf attribute access costs ~40 us (a third of a small group's step)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, dict):
        return SimpleNamespace(**{k: _plain(v) for k, v in cfg.items()})
    return cfg


def _due(run: _Run) -> bool:
    """Whether the run logs a history row at the end of this epoch (as the single path does)."""
    last = run.step >= run.total_steps
    return run.status == STATUS_DIVERGED or run.epoch % run.cfg.train.eval_every == 0 or last


def _end_of_epoch(run: _Run, optimizer, a: int, keys, params, buffers) -> None:
    """The single path's end-of-epoch decisions for one run: stop, note the fit, checkpoint."""
    if run.status == STATUS_DIVERGED:
        run.done = True
        return
    last = run.step >= run.total_steps
    row = run.history[-1]
    if row["epoch"] == run.epoch:
        reason = row_divergence(row, run.history[0]["train_loss"], run.cfg.train.divergence_factor)
        if reason is not None:
            run.status, run.stopped_by, run.done = STATUS_DIVERGED, "diverged", True
            run.divergence, run.diverged_step = reason, run.step
            return
        if run.fit is None and row["train_acc"] == 1.0:
            run.fit = (run.epoch, run.step)
        if _reached_target(run.cfg.train, row):
            target = run.cfg.train.target_train_loss
            run.stopped_by = "target_train_loss" if target else "full_accuracy"
            run.done = True
            return
    if run.checkpoint is not None and run.epoch % run.cfg.train.checkpoint_every == 0 and not last:
        ckpt_format.save(
            run.checkpoint,
            run.run_id,
            model=_state(keys, params, buffers, a),
            optimizer=optimizer.run_state(a),
            rng={"cpu": run.dropout.get_state(), "order": run.order.get_state()},
            init_state=run.init_state,
            **dict(epoch=run.epoch, step=run.step, history=run.history, seconds=run.seconds),
            fit=run.fit,
        )
    run.done = last


def _restore(run: _Run, states: list[dict], r: int, ckpt: dict | None) -> dict | None:
    """Load run ``r``'s checkpoint (``flatness.checkpoint``'s format) into its state."""
    if ckpt is None and run.cfg.resume == "auto":
        ckpt = ckpt_format.load(run.checkpoint, run.run_id, run.cfg.resume)
    if ckpt is None:
        return None
    states[r] = {k: v.clone() for k, v in ckpt["model"].items()}
    run.dropout.set_state(ckpt["rng"]["cpu"])
    run.order.set_state(ckpt["rng"]["order"])
    run.init_state = ckpt["init_state"]
    run.epoch, run.step, run.seconds = ckpt["epoch"], ckpt["step"], ckpt["seconds"]
    run.history, run.fit = ckpt["history"], ckpt["fit"]
    return ckpt


def _select(live: list[bool], new: dict, old: dict) -> dict:
    if all(live) or not new:
        return new
    mask = torch.tensor(live, device=next(iter(old.values())).device)
    return {k: torch.where(mask.view(-1, *([1] * (v.ndim - 1))), v, old[k]) for k, v in new.items()}


def _state(keys, params, buffers, a: int) -> dict:
    return {k: (params[k] if k in params else buffers[k])[a].clone() for k in keys}


def _result(run: _Run, model: nn.Module) -> TrainResult:
    fit = run.fit
    return TrainResult(model, run.init_state, run.history, run.status, run.stopped_by, run.step,
                       run.epoch, fit[0] if fit else None, fit[1] if fit else None,
                       run.seconds, run.divergence, run.diverged_step)  # fmt: skip
