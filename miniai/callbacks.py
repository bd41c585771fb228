"""Core callbacks: training steps as a callback, device placement, a one-batch smoke run, batch transforms,
gradient clipping."""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real

import torch

from .device import def_device, to_device
from .guards import backward_loss, call_loss, call_model, check_batch, is_whole
from .learner import Callback, CancelFitException, Learner

__all__ = ['TrainCB', 'DeviceCB', 'SingleBatchCB', 'BatchTransformCB', 'GradClipCB']


class TrainCB(Callback):
    """Supplies the training steps to a plain `Learner`, as the course's `TrainCB`: the model gets the batch's
    first `n_inp` items, the loss the predictions and every item after them (e.g. `loss(preds, y, w)` for
    batches `(x, y, w)`; `TrainLearner` gives the loss only `y`). Sets `learn.n_inp`."""
    def __init__(self, n_inp: int = 1):
        if not is_whole(n_inp, 1):
            raise ValueError(f'TrainCB: n_inp is how many of the batch\'s first items the model takes, a whole number '
                             f'>= 1; got {n_inp!r} (e.g. n_inp=2 for batches (x1, x2, y)).')
        self.n_inp = int(n_inp)
    def before_fit(self, learn: Learner) -> None: learn.n_inp = self.n_inp

    def predict(self, learn: Learner) -> None:
        check_batch(learn.batch, self.n_inp, target=False)
        learn.preds = call_model(learn.model, *learn.batch[:self.n_inp])

    def get_loss(self, learn: Learner) -> None:
        check_batch(learn.batch, self.n_inp)
        learn.loss = call_loss(learn.loss_func, learn.preds, *learn.batch[self.n_inp:])

    def backward(self, learn: Learner) -> None: backward_loss(learn.loss)
    def step(self, learn: Learner) -> None: learn.opt.step()
    def zero_grad(self, learn: Learner) -> None: learn.opt.zero_grad()


class DeviceCB(Callback):
    """Puts the model on `device` before the fit and every batch on it before each batch."""
    order = -10

    def __init__(self, device: str | torch.device = def_device): self.device = torch.device(device)

    def before_fit(self, learn: Learner) -> None:
        learn.model.to(self.device)
        # Optimizer state made on another device follows the model (e.g. after `load` on a CPU machine).
        if learn.opt is not None:
            for state in learn.opt.state.values():
                for k, v in state.items():
                    if isinstance(v, torch.Tensor) and k != 'step': state[k] = v.to(self.device)

    def before_batch(self, learn: Learner) -> None:
        learn.batch = to_device(learn.batch, self.device, non_blocking=self.device.type == 'cuda')


class SingleBatchCB(Callback):
    """Stops the fit after the first batch: a quick check that everything runs."""
    order = 1
    def after_batch(self, learn: Learner) -> None: raise CancelFitException()


class BatchTransformCB(Callback):
    """Applies `tfm` to each whole batch (e.g. normalisation or augmentation), on training and/or validation."""
    order = DeviceCB.order + 1

    def __init__(self, tfm: Callable, on_train: bool = True, on_val: bool = True):
        self.tfm, self.on_train, self.on_val = tfm, on_train, on_val

    def before_batch(self, learn: Learner) -> None:
        if (self.on_train and learn.training) or (self.on_val and not learn.training):
            learn.batch = self.tfm(learn.batch)


class GradClipCB(Callback):
    """Clips the gradients' total `norm_type`-norm to at most `max_norm` after each backward
    (`torch.nn.utils.clip_grad_norm_`, with no device synchronisation). Under fp16 `MixedPrecision`, whose
    gradients stay scaled until the step, it clips them to `max_norm` times the scale (one read of the scale a
    batch): the same as clipping the unscaled gradients to `max_norm`."""
    def __init__(self, max_norm: float, norm_type: float = 2.0):
        if isinstance(max_norm, bool) or not isinstance(max_norm, Real) or not max_norm > 0:
            raise ValueError(f'GradClipCB: max_norm must be a positive number, got {max_norm!r} (e.g. 1.0).')
        if isinstance(norm_type, bool) or not isinstance(norm_type, Real) or not norm_type > 0:
            raise ValueError(f'GradClipCB: norm_type is the p of the p-norm, a positive number or float(\'inf\') '
                             f'(the largest |gradient|); got {norm_type!r} (e.g. 2.0).')
        self.max_norm, self.norm_type = max_norm, norm_type

    def after_backward(self, learn: Learner) -> None:
        scaler = getattr(learn, 'grad_scaler', None)
        max_norm = self.max_norm * (1. if scaler is None else scaler.get_scale())
        torch.nn.utils.clip_grad_norm_(learn.model.parameters(), max_norm, self.norm_type)
