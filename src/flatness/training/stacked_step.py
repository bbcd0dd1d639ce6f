"""The stacked step engine: R runs of one architecture stepped together in one vectorized loop.

On a few CPU cores a small MLP step is mostly framework overhead, so R runs stepped together, each
layer one batched kernel over their stacked weights (``stacked_forward``), cost little more than
one. Each run keeps exactly what the reference engine (``reference_step``) gives it:

- its own data order and augmentation draws (its ``derive_seed(seed, "order")`` generator), its own
  labels and inputs (corruption), learning-rate schedule, weight decay and momentum;
- its own dropout masks, drawn from a generator seeded like the reference's global RNG and drawn
  the way ``nn.Dropout`` draws them, so the masks are bit-for-bit those of the run trained alone;
- its own batch-norm batch statistics and running statistics (``stacked_forward``);
- its own ``record.RunRecord``: history, early stopping, step budget, divergence (checked per step)
  and checkpoints (either engine resumes the other's). A run that stops is frozen for the rest of
  the epoch and then leaves the stack, so the others go on at full speed.

Results agree with the reference to floating-point rounding, not bits: batched matmuls (``bmm``)
may accumulate in a different order than the single run's ``mm``. ``seconds`` is the group's wall
time, shared by its runs.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import nn

from flatness.seeds import derive_seed
from flatness.training.grouping import check_compatible
from flatness.training.optimizers import StackedOptimizer
from flatness.training.record import RunRecord, TrainResult, finite_per_run
from flatness.training.stacked_forward import (
    FlatForward,
    cross_entropy,
    dropout_mask,
    evaluate_stacked,
    stack,
)
from flatness.training.step_inputs import augment


@dataclass
class _Lane:
    """One run's place in the stack: its record and its own generators."""

    record: RunRecord
    order: torch.Generator
    dropout: torch.Generator
    perm: torch.Tensor | None = None


def train_stacked(records: list[RunRecord], models: list[nn.Module], splits) -> list[TrainResult]:
    """Train ``models[r]`` (built under run ``r``'s seed) on ``splits[r]`` for every run ``r``.

    The runs must agree on everything ``grouping`` keeps in a group key (architecture, data size,
    batch size, optimizer name); scalars such as lr, weight decay, momentum, schedule, epochs and
    stopping rules may differ. The caller's models are not modified."""
    n, batch = len(splits[0].y_train), int(records[0].cfg.train.batch_size)
    check_compatible([rec.cfg for rec in records], models, splits, n, batch)
    template = copy.deepcopy(models[0])
    keys = list(template.state_dict())
    param_names = [k for k, _ in template.named_parameters()]
    states = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in models]
    lanes = [_lane(rec) for rec in records]
    init_states = [dict(s) for s in states]
    for r, lane in enumerate(lanes):
        if lane.record.saved is not None:
            states[r] = _restore(lane, lane.record.saved)
    params = stack([{k: s[k] for k in param_names} for s in states])
    buffers = stack([{k: v for k, v in s.items() if k not in param_names} for s in states])
    optimizer = StackedOptimizer([rec.cfg.optim for rec in records], params)
    for r, rec in enumerate(records):
        if rec.saved is not None:
            optimizer.load_run_state(r, rec.saved["optimizer"])
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

    if any(not rec.history for rec in records):
        rows = evaluate_stacked(forward, params, buffers, data, test)
    for r, rec in enumerate(records):
        rec.start(init_states[r], lambda r=r: rows[r])
    results: dict[int, TrainResult] = {}
    active = list(range(len(records)))
    while active:
        started = time.perf_counter()
        for r in active:
            lanes[r].perm = torch.randperm(n, generator=lanes[r].order).to(data[0].device)
        for i in range(0, n, batch):
            group = [lanes[r] for r in active]
            live = [not lane.record.frozen for lane in group]
            lrs = [lane.record.lr_at(lane.record.step) for lane in group]
            xb, yb, masks = _batch(group, live, data, i, batch, forward.dropout_shapes)
            grads, (losses, new_buffers) = step_fn(params, buffers, xb, yb, masks)
            losses, grads_ok = losses.tolist(), finite_per_run(grads)
            update = [
                ok and lane.record.check_batch(lr, loss, grad_ok)
                for lane, ok, lr, loss, grad_ok in zip(group, live, lrs, losses, grads_ok, strict=True)
            ]  # fmt: skip
            buffers = _select(live, new_buffers, buffers)
            params = optimizer.step(params, grads, lrs, update)
            params_ok = finite_per_run(params)
            for a, lane in enumerate(group):
                if update[a]:
                    lane.record.stepped(losses[a], params_ok[a])
            if all(lane.record.frozen for lane in group):
                break
        elapsed = time.perf_counter() - started
        due = [lanes[r].record.end_epoch(elapsed) for r in active]
        rows = evaluate_stacked(forward, params, buffers, data, test) if any(due) else None
        for a, r in enumerate(active):
            lane = lanes[r]

            def state(a=a, lane=lane, params=params, buffers=buffers) -> dict:
                rng = {"cpu": lane.dropout.get_state(), "order": lane.order.get_state()}
                return dict(model=_state(keys, params, buffers, a),
                            optimizer=optimizer.run_state(a), rng=rng)  # fmt: skip

            lane.record.close_epoch(rows[a] if due[a] else None, state)
        finished = [a for a, r in enumerate(active) if lanes[r].record.done]
        for a in finished:  # runs that stopped leave the stack: the rest go on at full speed
            model = copy.deepcopy(template)
            model.load_state_dict(_state(keys, params, buffers, a))
            results[active[a]] = lanes[active[a]].record.result(model)
        if finished:
            keep = torch.tensor(
                [a for a, r in enumerate(active) if not lanes[r].record.done], dtype=torch.long
            )
            params, buffers = ({k: v[keep] for k, v in d.items()} for d in (params, buffers))
            data, test = [t[keep] for t in data], [t[keep] for t in test]
            optimizer.select(keep)
            active = [active[a] for a in keep.tolist()]
    return [results[r] for r in range(len(records))]


def _lane(record: RunRecord) -> _Lane:
    seed = record.cfg.seed
    order = torch.Generator().manual_seed(derive_seed(seed, "order"))
    return _Lane(record, order, torch.Generator().manual_seed(derive_seed(seed, "dropout")))


def _batch(group: list[_Lane], live: list[bool], data, i: int, batch: int, dropout_shapes):
    """Batch ``i`` of every run: its own examples, augmentation draws and dropout masks, drawn
    from its own generators in the reference's order (frozen runs draw nothing)."""
    idx = torch.stack([lane.perm[i : i + batch] for lane in group])
    xb = data[0][torch.arange(len(group), device=idx.device)[:, None], idx]
    yb = data[1].gather(1, idx)
    if any(lane.record.cfg.data.augment for lane in group):
        xb = torch.stack([
            augment(x, lane.record.cfg.data, lane.order) if ok and lane.record.cfg.data.augment
            else x
            for x, lane, ok in zip(xb, group, live, strict=True)
        ])  # fmt: skip
    size = idx.shape[1]
    masks = [
        torch.stack([
            dropout_mask((size, *shape), p, lane.dropout) if ok else torch.ones(size, *shape)
            for lane, ok in zip(group, live, strict=True)
        ]).to(xb.device)
        for p, shape in dropout_shapes
    ]  # fmt: skip
    return xb, yb, masks


def _restore(lane: _Lane, saved: dict) -> dict:
    """A checkpoint's engine state (``checkpoint.load``'s validated dict): weights, generators."""
    lane.dropout.set_state(saved["rng"]["cpu"])
    lane.order.set_state(saved["rng"]["order"])
    return {k: v.clone() for k, v in saved["model"].items()}


def _select(live: list[bool], new: dict, old: dict) -> dict:
    if all(live) or not new:
        return new
    mask = torch.tensor(live, device=next(iter(old.values())).device)
    return {k: torch.where(mask.view(-1, *([1] * (v.ndim - 1))), v, old[k]) for k, v in new.items()}


def _state(keys, params, buffers, a: int) -> dict:
    return {k: (params[k] if k in params else buffers[k])[a].clone() for k in keys}
