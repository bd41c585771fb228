"""Callbacks that step a scheduler during training, and `RecorderCB`, which records hyperparameters."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .guards import check_sched_steps
from .learner import Callback, Learner
from .schedulers import get_mom

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ['BaseSchedCB', 'BatchSchedCB', 'EpochSchedCB', 'RecorderCB', 'rec_lr', 'rec_mom']


class BaseSchedCB(Callback):
    """Builds `sched(opt)` at the start of the fit; subclasses say when it steps.

    `sched` is any callable taking the optimizer: a scheduler class of ours or of `torch.optim.lr_scheduler`,
    usually through `functools.partial`, e.g. `partial(OneCycle, max_lr=6e-2, total_steps=n)`. Warns when its
    `total_steps` (or `T_max`) differs from the steps the fit takes. Its state goes into checkpoints.
    """
    def __init__(self, sched: Callable[..., Any]):
        if not callable(sched):
            raise TypeError(f'{type(self).__name__}: sched is a {type(sched).__name__}; give a callable taking the '
                            'optimizer, e.g. partial(OneCycle, max_lr=6e-2, total_steps=n).')
        self.sched, self._loaded = sched, {}

    def before_fit(self, learn: Learner) -> None:
        self.schedo, self._loaded = self.sched(learn.opt), {}
        check_sched_steps(self.schedo, self.n_steps(learn), type(self).__name__)

    def n_steps(self, learn: Learner) -> int:
        """How many times this fit steps the scheduler (0: unknown, no check)."""
        return 0

    def state_dict(self) -> dict[str, Any]:
        return {'sched': self.schedo.state_dict()} if hasattr(self, 'schedo') else self._loaded

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Into the scheduler of this fit (a resume); before any fit (`learn.load`), kept for `state_dict`."""
        if sd and hasattr(self, 'schedo'):
            self.schedo.load_state_dict(sd['sched'])
        else:
            self._loaded = sd

    def _step(self, learn: Learner) -> None:
        if learn.training: self.schedo.step()


class BatchSchedCB(BaseSchedCB):
    """Steps the scheduler after every training batch."""
    def n_steps(self, learn: Learner) -> int:
        return learn.n_iter

    def after_batch(self, learn: Learner) -> None: self._step(learn)


class EpochSchedCB(BaseSchedCB):
    """Steps the scheduler after every training epoch."""
    def n_steps(self, learn: Learner) -> int:
        return learn.n_epochs if 'train' in learn.phases else 0

    def after_epoch(self, learn: Learner) -> None: self._step(learn)


def rec_lr(cb: RecorderCB) -> float:
    """The first param group's learning rate (for `RecorderCB`)."""
    return cb.pg['lr']


def rec_mom(cb: RecorderCB) -> float:
    """The first param group's momentum: SGD's `momentum` or Adam's beta1, NaN for an optimizer with neither
    (Adagrad, Adadelta) (for `RecorderCB`)."""
    mom = get_mom(cb.pg)
    return math.nan if mom is None else mom


class RecorderCB(Callback):
    """Records `fn(self)` for each named function at every training step; `self.pg` is the first param group.

    Values are read in `after_step`, so they are those the step just used, whatever the callbacks' order.

    `rec = RecorderCB(lr=rec_lr, mom=rec_mom)`, then `rec.recs['lr']` or `rec.plot()`.
    """
    def __init__(self, **fns: Callable[[RecorderCB], float]):
        self.fns, self.recs = fns, {k: [] for k in fns}

    def state_dict(self) -> dict[str, Any]:
        return {'recs': self.recs}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.recs = {k: list(v) for k, v in sd['recs'].items()}

    def before_fit(self, learn: Learner) -> None:
        self.recs: dict[str, list[float]] = {k: [] for k in self.fns}
        self.pg = learn.opt.param_groups[0]

    def after_step(self, learn: Learner) -> None:
        for k, fn in self.fns.items(): self.recs[k].append(float(fn(self)))

    def plot(self, figsize: tuple[float, float] | None = None) -> Figure:
        """Plot each recorded series in its own labelled panel against the training batch; returns the figure."""
        from .plot import subplots
        n = len(self.recs)
        fig, axs = subplots(1, n, figsize=figsize or (4 * n, 3), squeeze=False)
        for ax, (k, v) in zip(axs.flat, self.recs.items()):
            ax.plot(v)
            ax.set(title=k, xlabel='batch', ylabel=k)
        fig.tight_layout()
        return fig
