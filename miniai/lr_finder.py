"""The LR finder (Leslie Smith's LR range test, as in fastai): train briefly with an exponentially growing lr,
watch the smoothed loss, and pick a learning rate from the curve.

`learn.lr_find()` leaves no trace: weights, buffers, gradients, the optimizer, the RNGs, the training loader's
position, the training mode, the device, the Learner's own attributes (counters, checkpoint position) and the
state of the callbacks that run during it (e.g. `ProgressCB.losses`) are all put back, so `lr_find(); fit()`
trains exactly as `fit()`, and a checkpoint saved after it is unchanged. One exception: the random streams of a
DataLoader's persistent worker processes already running (started by an earlier fit) move on, as they live in
those processes; workers that `lr_find` starts are stopped after it, so the next fit starts them as it would have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch.distributed as dist
from torch import Tensor

from .checkpoint import CheckpointCB
from .distributed import DDPCB, get_world_size, is_main_process
from .guards import is_whole
from .hooks import HooksCallback
from .learner import Callback, CancelEpochException, CancelFitException, Learner
from .metrics import MetricsCB
from .no_trace import no_trace
from .sched import BaseSchedCB, RecorderCB

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ['LRFinderCB', 'suggest_lrs', 'LRFindResult', 'lr_find', 'PAUSED_IN_LR_FIND']

# Callbacks that `lr_find` takes off the learner while it runs (a callback's own `skip_in_lr_find` attribute,
# True or False, overrides this): metrics and recorders would log the finder's batches into the real history,
# hooks would drop the stats of the last fit, schedulers would fight the finder's lr (or run past their end),
# and checkpoints would overwrite the run's with the finder's state.
PAUSED_IN_LR_FIND: tuple[type, ...] = (MetricsCB, RecorderCB, BaseSchedCB, HooksCallback, CheckpointCB)


class LRFinderCB(Callback):
    """Trains batch `i` at lr `start_lr * (end_lr/start_lr)**(i/num_it)` (every param group), recording the lr
    and the loss smoothed by a bias-corrected exponential moving average (`smooth`) in `lrs` and `losses`.

    Ends the fit (`CancelFitException`) after `num_it` batches or, with `stop_div`, as soon as the smoothed
    loss rises above its minimum by more than 3x the minimum's size (4x the minimum, for a positive loss) or is
    not finite; validation epochs are skipped. Without `stop_div` the Learner's `nan_guard` is off for the fit,
    so that a NaN loss does not stop it either. Used on its own
    (`learn.fit(n, cbs=[LRFinderCB()])`) it is an ordinary training run; `lr_find` runs it leaving no trace.
    """
    order = 100  # set the lr in `before_batch` after every other callback: the finder's lr is the one used

    def __init__(self, start_lr: float = 1e-7, end_lr: float = 10., num_it: int = 100, smooth: float = 0.98,
                 stop_div: bool = True):
        if not 0 < start_lr < end_lr < math.inf:
            raise ValueError(f"LRFinderCB: need 0 < start_lr < end_lr, both finite; got {start_lr=}, {end_lr=}")
        if not is_whole(num_it, 1):
            raise ValueError(f"LRFinderCB: num_it is a number of batches, a positive int; got {num_it!r}")
        if not 0 <= smooth < 1:
            raise ValueError(f"LRFinderCB: smooth is the moving average's decay, in [0, 1); got {smooth!r}")
        self.start_lr, self.end_lr, self.num_it = start_lr, end_lr, int(num_it)
        self.smooth, self.stop_div = smooth, stop_div
        self._nan_guard: bool | None = None

    def before_fit(self, learn: Learner) -> None:
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self._avg, self._best = 0., math.inf
        self._nan_guard = learn.nan_guard
        learn.nan_guard = learn.nan_guard and self.stop_div
        self._ddp = _ddp(learn) is not None  # then every process sees the mean loss, and stops where the others do

    def cleanup_fit(self, learn: Learner) -> None:
        if self._nan_guard is not None:  # None: `before_fit` did not get here (an earlier callback's raised)
            learn.nan_guard, self._nan_guard = self._nan_guard, None

    def before_epoch(self, learn: Learner) -> None:
        if not learn.training:
            raise CancelEpochException()

    def before_batch(self, learn: Learner) -> None:
        self.lr = self.start_lr * (self.end_lr / self.start_lr) ** (learn.train_iter / self.num_it)
        for pg in learn.opt.param_groups:
            pg['lr'] = self.lr

    def after_loss(self, learn: Learner) -> None:
        self._avg = self.smooth * self._avg + (1 - self.smooth) * _mean_loss(learn.loss, self._ddp)
        loss = self._avg / (1 - self.smooth ** (len(self.losses) + 1))
        self.lrs.append(self.lr)
        self.losses.append(loss)
        self._best = min(self._best, loss)  # a NaN never becomes the best
        if self.stop_div and (not math.isfinite(loss) or loss - self._best > 3 * abs(self._best)):
            raise CancelFitException()

    def after_batch(self, learn: Learner) -> None:
        if learn.train_iter >= self.num_it:
            raise CancelFitException()


def _ddp(learn: Learner) -> DDPCB | None:
    """The `DDPCB` training `learn` over several processes, if any."""
    return next((cb for cb in getattr(learn, 'cbs', ()) if isinstance(cb, DDPCB) and cb.active), None)


def _mean_loss(loss: Tensor, over_processes: bool) -> float:
    """The loss, averaged over the processes of a distributed fit with `over_processes`."""
    if not over_processes:
        return loss.item()
    total = loss.detach().float().clone()
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()


def _valley(losses: np.ndarray) -> tuple[int, int]:
    """First and last index of the longest valley: the longest decreasing subsequence of `losses` (fastai)."""
    n = len(losses)
    size, first = [1] * n, list(range(n))  # longest decreasing run ending at i: length, start
    for i in range(n):
        for j in range(i):
            if losses[j] > losses[i] and size[j] + 1 > size[i]:
                size[i], first[i] = size[j] + 1, first[j]
    end = max(range(n), key=size.__getitem__)
    return first[end], end


def suggest_lrs(lrs: Sequence[float], losses: Sequence[float], skip_start: int = 0,
                skip_end: int = 0) -> dict[str, float]:
    """Learning rates suggested by an LR-finder curve (`losses` smoothed), from the points before the first
    non-finite loss, less `skip_start` and `skip_end` points at its ends:

    - `minimum`: a tenth of the lr at the lowest loss (fastai's name; the rule of thumb "min lr / 10");
    - `steep`: the lr where the loss falls fastest against log(lr) (central differences);
    - `valley`: 2/3 of the way down the longest valley (the longest decreasing subsequence of the losses);
    - `upper`, `lower`: bounds for cyclical lrs, `upper` = `minimum` and `lower` = `upper / 6`.
    """
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if len(lrs) != len(losses):
        raise ValueError(f'suggest_lrs: got {len(lrs)} lrs and {len(losses)} losses; give one loss per lr.')
    if (bad_lr := np.flatnonzero(~(lrs > 0))).size:
        raise ValueError(f'suggest_lrs: lrs must be positive (the curve is read on a log scale); lrs[{bad_lr[0]}] '
                         f'is {lrs[bad_lr[0]]}.')
    for nm, v in (('skip_start', skip_start), ('skip_end', skip_end)):
        if not is_whole(v):
            raise ValueError(f'suggest_lrs: {nm} is a number of points to leave out, a whole number >= 0; got {v!r}')
    bad = np.flatnonzero(~np.isfinite(losses))
    n = bad[0] if len(bad) else len(losses)
    lrs, losses = lrs[skip_start:n - skip_end], losses[skip_start:n - skip_end]
    if len(losses) < 2:
        raise ValueError(f"suggest_lrs: needs at least 2 points with a finite loss, got {len(losses)}: "
                         "if the loss diverged at once, try a smaller start_lr")
    start, end = _valley(losses)
    minimum = float(lrs[losses.argmin()]) / 10
    return {'minimum': minimum, 'steep': float(lrs[np.gradient(losses, np.log(lrs)).argmin()]),
            'valley': float(lrs[start + 2 * (end - start) // 3]), 'upper': minimum, 'lower': minimum / 6}


@dataclass
class LRFindResult:
    """The lrs and smoothed losses an LR finder recorded, and the lrs `suggest_lrs` suggests from them
    (leaving out, as fastai does, the first tenth of the points before the first non-finite loss, and as many
    of the last of them, at most 5: start-up and divergence)."""
    lrs: list[float] = field(repr=False)
    losses: list[float] = field(repr=False)
    minimum: float = field(init=False)
    steep: float = field(init=False)
    valley: float = field(init=False)
    upper: float = field(init=False)
    lower: float = field(init=False)

    def __post_init__(self):
        k = self._n_finite() // 10
        vars(self).update(suggest_lrs(self.lrs, self.losses, skip_start=k, skip_end=min(5, k)))

    def _n_finite(self) -> int:
        """The number of points before the first non-finite loss."""
        return next((i for i, v in enumerate(self.losses) if not math.isfinite(v)), len(self.losses))

    def plot(self, ax: Axes | None = None) -> None:
        """Smoothed loss against lr (log axis), without the divergence at the end that the suggestions leave out
        (which would squash the curve), each suggestion marked and labelled, the cyclical range shaded; on `ax`,
        else on a new figure (`plt.savefig` saves it)."""
        import matplotlib.pyplot as plt
        ax = plt.subplots()[1] if ax is None else ax
        n = self._n_finite()
        n -= min(5, n // 10)
        lrs, losses = np.asarray(self.lrs[:n]), np.asarray(self.losses[:n])
        ok = np.isfinite(losses)
        ax.plot(lrs[ok], losses[ok])
        for nm, label, marker in (('minimum', 'minimum/10', 'o'), ('steep', 'steep', 's'), ('valley', 'valley', '^')):
            lr = getattr(self, nm)
            ax.plot(lr, np.interp(np.log(lr), np.log(lrs[ok]), losses[ok]), marker, label=f'{label}: {lr:.2e}')
        ax.axvspan(self.lower, self.upper, alpha=0.15, color='gray',
                   label=f'cyclical: {self.lower:.1e} to {self.upper:.1e}')
        ax.set(xscale='log', xlabel='learning rate', ylabel='loss (smoothed)')
        ax.legend()


def _paused_in_lr_find(cb: Callback) -> bool:
    return getattr(cb, 'skip_in_lr_find', isinstance(cb, PAUSED_IN_LR_FIND))


def lr_find(learn: Learner, start_lr: float = 1e-7, end_lr: float = 10., num_it: int = 100,
            smooth: float = 0.98, stop_div: bool = True, show_plot: bool = True) -> LRFindResult:
    """Runs an `LRFinderCB` (training only, looping over the training loader as needed); returns what it saw,
    with the suggested lrs, and plots it (`LRFindResult.plot`) unless `show_plot=False`, as fastai's does.

    Leaves no trace (see the module's doc). Callbacks in `PAUSED_IN_LR_FIND`, or with `skip_in_lr_find`
    True, do not run meanwhile; the others (training steps, device, batch transforms, progress bars) do.
    """
    learn.refuse_in_fit('lr_find')
    if is_whole(num_it) and num_it < 2:
        raise ValueError(f"lr_find: num_it is the number of batches to try; it needs at least 2 to suggest an lr, "
                         f"got {num_it!r}")
    learn._check_loaders(('train',))  # as `fit` does: a `.train` loader with a length and batches
    ddp = _ddp(learn)
    n = max(1, len(learn.dls.train) // get_world_size()) if ddp and ddp.shard else len(learn.dls.train)  # per process
    cb = LRFinderCB(start_lr, end_lr, num_it, smooth, stop_div)
    with no_trace(learn, paused=_paused_in_lr_find):
        learn.fit(math.ceil(cb.num_it / n), valid=False, cbs=[cb])
    res = LRFindResult(cb.lrs, cb.losses)
    if show_plot and is_main_process():
        res.plot()
    return res


Learner.lr_find = lr_find
