"""The reference step engine: each run's own ``nn.Module``, stepped one run after the other.

This is the definition a run's numbers are checked against (the stacked engine must agree with it
to float rounding, tests/test_grouped.py) and the engine for models too large to stack. Every
source of randomness is a function of the run seed: weight init (the caller's
``driver.build_run_model``) and dropout use torch's global RNG inside ``torch.random.fork_rng``
(so the caller's RNG state is untouched), data order and augmentation a local ``torch.Generator``.
A checkpoint holds the model, optimizer and both generator states, so a run killed and restarted
ends with exactly the numbers of an uninterrupted run. All bookkeeping (history, stopping,
divergence, checkpoints) is the run's ``record.RunRecord``'s.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from flatness.seeds import derive_seed
from flatness.training.optimizers import ModelOptimizer
from flatness.training.record import RunRecord, TrainResult, finite_per_run
from flatness.training.step_inputs import augment


def train_reference(records: list[RunRecord], models: list[nn.Module], splits) -> list[TrainResult]:
    """Train copies of ``models[r]`` on ``splits[r]`` (tensors on the training device), one run
    after the other; the caller's models and RNG state are not modified."""
    results = []
    for record, model, data in zip(records, models, splits, strict=True):
        device = data.x_train.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            results.append(_train_one(record, copy.deepcopy(model), data))
    return results


@torch.no_grad()
def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 4096):
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


def _train_one(record: RunRecord, model: nn.Module, data) -> TrainResult:
    cfg = record.cfg
    device = data.x_train.device
    n, batch = len(data.y_train), int(cfg.train.batch_size)
    order = torch.Generator().manual_seed(derive_seed(cfg.seed, "order"))
    torch.manual_seed(derive_seed(cfg.seed, "dropout"))  # inside train_reference's fork_rng
    optimizer = ModelOptimizer(model, cfg.optim)
    init_state = model.state_dict()
    if record.saved is not None:
        _restore(record.saved, model, optimizer, order, device)

    def metrics() -> dict:
        tr_loss, tr_acc = evaluate_model(model, data.x_train, data.y_train)
        te_loss, te_acc = evaluate_model(model, data.x_test, data.y_test)
        return dict(train_loss=tr_loss, train_acc=tr_acc, test_loss=te_loss, test_acc=te_acc)

    def state() -> dict:
        return dict(model=model.state_dict(), optimizer=optimizer.state_dict(), rng=_rng(order))

    record.start(init_state, metrics)
    model.train()
    while not record.done and not record.frozen:
        started = time.perf_counter()
        perm = torch.randperm(n, generator=order).to(device)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            xb = data.x_train[idx]
            if cfg.data.augment:
                xb = augment(xb, cfg.data, order)
            loss = F.cross_entropy(model(xb), data.y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            grads = optimizer.grads()
            loss_value = loss.item()
            lr = record.lr_at(record.step)
            if record.check_batch(lr, loss_value, finite_per_run(grads)[0]):
                optimizer.step(lr, grads)
                record.stepped(loss_value, finite_per_run(optimizer.params)[0])
            if record.frozen:
                break
        due = record.end_epoch(time.perf_counter() - started)
        record.close_epoch(metrics() if due else None, state)
    return record.result(model)


def _rng(order: torch.Generator) -> dict:
    """The generator states a resumed run needs, as uint8 tensors (``weights_only`` loads them)."""
    rng = {"cpu": torch.get_rng_state(), "order": order.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _restore(saved: dict, model, optimizer: ModelOptimizer, order: torch.Generator, device) -> None:
    """Load a checkpoint's engine state (``checkpoint.load``'s validated dict)."""
    model.load_state_dict(saved["model"])  # copies into the parameters the optimizer views
    optimizer.load_state_dict(_to(saved["optimizer"], device))
    rng = saved["rng"]
    torch.set_rng_state(rng["cpu"])
    order.set_state(rng["order"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj
