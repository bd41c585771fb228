"""`EarlyStoppingCB`: end a fit once a monitored value has stopped improving."""

from __future__ import annotations

import warnings
from numbers import Real
from typing import Any

from .checkpoint import CheckpointCB, check_monitor_state
from .guards import is_whole
from .learner import Callback, Learner
from .metrics import check_mode, check_monitor, improves, monitored_value

__all__ = ['EarlyStoppingCB']


class EarlyStoppingCB(Callback):
    """Ends the fit (`learn.should_stop`) once `monitor` has gone `patience` epochs in a row without beating its
    best by more than `min_delta` (lower for `mode='min'`, higher for 'max'); a NaN never counts as better, and
    an epoch without the value (cancelled) does not count, with a warning.

    `monitor` names a `MetricsCB` value as `CheckpointCB`'s does ('valid_loss', 'accuracy', 'train_loss', ...);
    `mode` may be left out for a loss, and must be given for anything else (e.g. mode='max' for 'accuracy').
    It counts after each epoch, before `CheckpointCB`, which then saves the epoch the fit stops after; the
    count is in the checkpoint, so a resumed fit goes on counting (and one resumed after the stop trains nothing:
    `learn.load(path)` then `fit(n)` trains on from it); a resume with another monitor or mode is refused.
    `stopped_epoch` is the last epoch trained (None if it did not stop the fit). With `CheckpointCB(monitor=...)`
    the best weights are in its best file. Under DDP every process sees the same, global, values and stops at the
    same epoch. Not run by `lr_find`; does nothing in a validation-only fit (`fit(n, train=False)`).
    """
    order = CheckpointCB.order - 1  # after `MetricsCB` has the epoch's row, before the epoch's checkpoint
    skip_in_lr_find = True

    def __init__(self, monitor: str = 'valid_loss', mode: str | None = None, patience: int = 3,
                 min_delta: float = 0.):
        mode = check_mode(monitor, mode, 'EarlyStoppingCB')
        if not is_whole(patience, 1):
            raise ValueError(f'EarlyStoppingCB: patience is a number of epochs, a whole number >= 1; got {patience!r}')
        if isinstance(min_delta, bool) or not isinstance(min_delta, Real) or not min_delta >= 0:
            raise ValueError(f'EarlyStoppingCB: min_delta must be a number, 0 or more; got {min_delta!r}')
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, int(patience), float(min_delta)
        self.best: float | None = None
        self.wait, self.stopped_epoch = 0, None

    def state_dict(self) -> dict[str, Any]:
        return {'best': self.best, 'wait': self.wait, 'stopped_epoch': self.stopped_epoch, 'monitor': self.monitor,
                'mode': self.mode}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        check_monitor_state(self, sd)
        self.best, self.wait, self.stopped_epoch = sd['best'], sd['wait'], sd['stopped_epoch']

    def before_fit(self, learn: Learner) -> None:
        if 'train' not in learn.phases:
            return  # validation only: nothing to stop, and the training run's count is kept
        check_monitor(learn, self.monitor, 'EarlyStoppingCB')
        self.best, self.wait, self.stopped_epoch = None, 0, None

    def after_epoch(self, learn: Learner) -> None:
        if learn.phase != learn.phases[-1] or 'train' not in learn.phases:
            return  # once the epoch's last phase is done, in a fit that trains
        v = monitored_value(learn, self.monitor)
        if v is None:
            warnings.warn(f'EarlyStoppingCB: epoch {learn.epoch} has no {self.monitor!r} (was its phase cancelled?); '
                          'it does not count.', stacklevel=2)
            return
        if improves(v, self.best, self.mode, self.min_delta):
            self.best, self.wait = v, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch, learn.should_stop = learn.epoch, True
