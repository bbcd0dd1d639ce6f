"""One run's record: its history, stopping rules, time-to-fit, divergence and checkpoint.

Both step engines (``reference_step``: one ``nn.Module`` per run; ``stacked_step``: R runs in one
vectorized loop) only compute losses, gradients and evaluation metrics; every decision about a run
is taken here, so a run's record is the same whichever engine stepped it:

- the learning rate at a step (``step_inputs.learning_rate``) and the step budget;
- the divergence rule (``divergence``), checked at every step and at every evaluation row;
- the history rows (one at step 0, then every ``eval_every`` epochs, at the budget's end and
  when the run diverges), the first epoch at full train accuracy (time-to-fit) and early
  stopping (``target_train_loss``, ``stop_at_full_accuracy``);
- the one checkpoint format (``checkpoint``): written every ``checkpoint_every`` epochs and read
  back on resume, with the engine's model, optimizer and generator states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from flatness.config import run_id
from flatness.training import checkpoint as ckpt_format
from flatness.training.optimizers import Stacked
from flatness.training.step_inputs import learning_rate

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


def divergence(loss: float, initial_loss: float, factor: float | None, grads_finite: bool = True,
               params_finite: bool = True) -> str | None:  # fmt: skip
    """Why this step diverged, or None.

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


def plain(cfg) -> SimpleNamespace:
    """A config as nested namespaces: the step loop reads it thousands of times a second, and an
    OmegaConf attribute access costs ~40 us (a third of a small group's step)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, dict):
        return SimpleNamespace(**{k: plain(v) for k, v in cfg.items()})
    return cfg


class RunRecord:
    """The bookkeeping of one run while an engine steps it (the frozen outcome: ``result``).

    ``saved`` is the run's checkpoint if the caller already loaded it (``checkpoint.load``);
    otherwise, with ``resume=auto``, ``checkpoint`` is read. ``log`` gets every history row."""

    def __init__(self, cfg, steps_per_epoch: int, checkpoint: Path | None = None, log=None,
                 saved: dict | None = None, progress: bool = False):  # fmt: skip
        self.cfg = plain(cfg)
        self.run_id = run_id(cfg)
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = self.cfg.train.steps or self.cfg.train.epochs * steps_per_epoch
        self.factor = self.cfg.train.divergence_factor
        self.checkpoint, self.log = checkpoint, log
        if saved is None and self.cfg.resume == "auto":
            saved = ckpt_format.load(checkpoint, self.run_id, self.cfg.resume)
        self.saved = saved  # the engine restores its model, optimizer and generators from it
        self.init_state: dict | None = None
        self.history: list[dict] = []
        self.epoch, self.step, self.seconds, self.fit = 0, 0, 0.0, None
        if saved is not None:
            self.init_state, self.history = saved["init_state"], saved["history"]
            self.epoch, self.step, self.seconds = saved["epoch"], saved["step"], saved["seconds"]
            self.fit = saved["fit"]
        self.status, self.stopped_by = STATUS_OK, "budget"
        self.divergence: str | None = None
        self.diverged_step: int | None = None
        self.lr, self.done = 0.0, False
        self.bar = _progress_bar(math.ceil(self.total_steps / steps_per_epoch), self.epoch,
                                 progress)  # fmt: skip

    def start(self, init_state: dict, evaluate) -> None:
        """Keep the initial weights and log the step-0 row (``evaluate()``), unless resumed."""
        if self.init_state is None:
            self.init_state = {k: v.detach().clone() for k, v in init_state.items()}
        if not self.history:
            self.add_row(evaluate(), lr=self.lr_at(0))

    def lr_at(self, step: int) -> float:
        return learning_rate(self.cfg.optim, step, self.steps_per_epoch, self.total_steps)

    @property
    def frozen(self) -> bool:
        """Whether the run takes no more steps this epoch (diverged or out of budget)."""
        return self.status == STATUS_DIVERGED or self.step >= self.total_steps

    def check_batch(self, lr: float, loss: float, grads_finite: bool) -> bool:
        """Note a batch's learning rate and loss; True when its step may be taken."""
        self.lr = lr
        reason = divergence(loss, self.history[0]["train_loss"], self.factor, grads_finite)
        if reason is not None:
            self._diverged(reason)
        return reason is None

    def stepped(self, loss: float, params_finite: bool) -> None:
        """Count a step taken; a step that left non-finite weights ends the run."""
        self.step += 1
        if not params_finite:
            initial = self.history[0]["train_loss"]
            self._diverged(divergence(loss, initial, self.factor, params_finite=False))

    def end_epoch(self, seconds: float) -> bool:
        """Count the epoch's time; True when it ends with a history row (``close_epoch``'s)."""
        self.epoch += 1
        self.seconds += seconds
        last = self.step >= self.total_steps
        return self.status == STATUS_DIVERGED or self.epoch % self.cfg.train.eval_every == 0 or last

    def close_epoch(self, metrics: dict | None, save_state) -> None:
        """Log the epoch's row (``metrics``, if it was due), then decide: diverged, fitted, stop
        early, checkpoint (``save_state()`` gives the engine's model, optimizer and rng), or go
        on. Sets ``done`` when the run is over."""
        if metrics is not None:
            self.add_row(metrics)
        self.done = self._decide(save_state)
        if self.bar is not None:
            self.bar.update(1)
            if self.done:
                self.bar.close()

    def _decide(self, save_state) -> bool:
        if self.status == STATUS_DIVERGED:
            return True
        last = self.step >= self.total_steps
        row = self.history[-1]
        if row["epoch"] == self.epoch:
            reason = row_divergence(row, self.history[0]["train_loss"], self.factor)
            if reason is not None:
                self._diverged(reason)
                return True
            if self.fit is None and row["train_acc"] == 1.0:
                self.fit = (self.epoch, self.step)
            if self._reached_target(row):
                target = self.cfg.train.target_train_loss
                self.stopped_by = "target_train_loss" if target else "full_accuracy"
                return True
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{row['train_loss']:.3g}", acc=f"{row['train_acc']:.3f}")
        every = self.cfg.train.checkpoint_every
        if self.checkpoint is not None and self.epoch % every == 0 and not last:
            self._save(**save_state())
        return last

    def add_row(self, metrics: dict, lr: float | None = None) -> None:
        row = dict(epoch=self.epoch, step=self.step, **metrics,
                   lr=self.lr if lr is None else lr, seconds=self.seconds)  # fmt: skip
        self.history.append(row)
        if self.log is not None:
            self.log(row)

    def _reached_target(self, row: dict) -> bool:
        target = self.cfg.train.target_train_loss
        if target is not None and row["train_loss"] <= target:
            return True
        return bool(self.cfg.train.stop_at_full_accuracy and row["train_acc"] == 1.0)

    def _diverged(self, reason: str) -> None:
        self.status, self.stopped_by = STATUS_DIVERGED, "diverged"
        self.divergence, self.diverged_step = reason, self.step

    def _save(self, model: dict, optimizer: dict, rng: dict) -> None:
        ckpt_format.save(self.checkpoint, self.run_id, model=model, optimizer=optimizer, rng=rng,
                         init_state=self.init_state, epoch=self.epoch, step=self.step,
                         history=self.history, seconds=self.seconds, fit=self.fit)  # fmt: skip

    def result(self, model: nn.Module) -> TrainResult:
        fit = self.fit
        return TrainResult(model, self.init_state, self.history, self.status, self.stopped_by,
                           self.step, self.epoch, fit[0] if fit else None,
                           fit[1] if fit else None, self.seconds, self.divergence,
                           self.diverged_step)  # fmt: skip


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True)
