"""Callbacks that step a scheduler during training, and `RecorderCB`, which records hyperparameters."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from torch.optim.lr_scheduler import ReduceLROnPlateau

from .guards import check_sched_end, check_sched_steps
from .learner import Callback, Learner
from .metrics import MetricsCB, check_monitor, is_loss, monitored_value
from .param_sched import fit_batch
from .schedulers import Scheduler, get_mom

__all__ = ['BaseSchedCB', 'BatchSchedCB', 'EpochSchedCB', 'RecorderCB', 'rec_lr', 'rec_mom']


def _kind(schedo: Any) -> str:
    """A scheduler's class by its full name (miniai's `CyclicLR` is not PyTorch's)."""
    return f'{type(schedo).__module__}.{type(schedo).__qualname__}'


class BaseSchedCB(Callback):
    """Builds `sched(opt)` at the start of a fit that trains; subclasses say when it steps.

    `sched` is any callable taking the optimizer: a scheduler class of ours or of `torch.optim.lr_scheduler`,
    usually through `functools.partial`, e.g. `partial(OneCycle, max_lr=6e-2, total_steps=n)`
    (`ReduceLROnPlateau`: with `EpochSchedCB(..., monitor=...)` only). Warns when its `total_steps` (or `T_max`)
    differs from the steps the fit takes. Its state goes into checkpoints; a resume refuses one of our schedulers
    built with other arguments than the saved run's. A validation-only fit builds and steps nothing: the scheduler
    of the last fit, and its state, are kept.
    """
    per_batch = False  # whether it steps after training batches (`check_sched_steps`)

    def __init__(self, sched: Callable[..., Any]):
        if not callable(sched):
            raise TypeError(f'{type(self).__name__}: sched is a {type(sched).__name__}; give a callable taking the '
                            'optimizer, e.g. partial(OneCycle, max_lr=6e-2, total_steps=n).')
        self.sched, self._loaded, self._fitting = sched, {}, False

    def before_fit(self, learn: Learner) -> None:
        if 'train' not in learn.phases:
            return  # validation only: keep the last fit's scheduler and its state
        schedo = self.sched(learn.opt)
        self.check_sched(learn, schedo)
        self.schedo, self._loaded, self._fitting = schedo, {}, True
        check_sched_steps(self.schedo, self.n_steps(learn), type(self).__name__, self.per_batch)

    def cleanup_fit(self, learn: Learner) -> None: self._fitting = False

    def check_sched(self, learn: Learner, schedo: Any) -> None:
        """Raise if this callback cannot step `schedo` in this fit."""

    def n_steps(self, learn: Learner) -> int:
        """How many times this fit steps the scheduler (0: unknown, no check)."""
        return 0

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state and its class name."""
        if not hasattr(self, 'schedo'):
            return self._loaded
        return {'sched': self.schedo.state_dict(), 'kind': _kind(self.schedo)}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Into the scheduler of this fit (a resume: a state of another kind of scheduler is refused, and one of
        our `Scheduler`s refuses a state saved with other arguments; PyTorch's take the saved ones, as they do) or of
        the last fit (`learn.load`); before any fit (`learn.load`), kept for `state_dict`."""
        if not (sd and hasattr(self, 'schedo')):
            self._loaded = sd
        elif self._fitting:  # a resume
            self._check_kind(sd['sched'], sd.get('kind'))
            if isinstance(self.schedo, Scheduler):
                self._check_args(sd['sched'])
            else:
                self._check_length(sd['sched'])
            self.schedo.load_state_dict(sd['sched'])
        elif sd.get('kind', _kind(self.schedo)) == _kind(self.schedo):  # `learn.load` between fits
            self.schedo.load_state_dict(sd['sched'])
        else:  # `learn.load` of another kind's state: kept as it is, for `state_dict`
            del self.schedo
            self._loaded = sd

    def _check_length(self, sd: dict[str, Any]) -> None:
        """Raise if PyTorch's scheduler of state `sd` was built for another number of steps (`total_steps`,
        `T_max`) than this fit's: loading it would replace this fit's, and the fit would fail, or end, part-way."""
        for attr in ('total_steps', 'T_max'):
            if attr in sd and (own := getattr(self.schedo, attr, None)) is not None and sd[attr] != own:
                raise ValueError(f"{type(self).__name__}: the checkpoint's {type(self.schedo).__name__} was built with "
                                 f'{attr}={sd[attr]}, this fit\'s with {attr}={own}. A resume continues the saved '
                                 "schedule: resume with the saved run's n_epochs and scheduler (to train on with a "
                                 'new schedule: learn.load(path), then fit(n) without resume).')

    def _check_kind(self, sd: dict[str, Any], kind: str | None) -> None:
        """Raise if state `sd` is of another kind of scheduler: its class as saved, else (a state from before the
        class was kept) for one of ours, keys it does not have."""
        if kind is None and isinstance(self.schedo, Scheduler):
            foreign = sorted(set(sd) - set(vars(self.schedo)))
            kind = f'scheduler with {", ".join(foreign)}' if foreign else None
        if kind not in (None, _kind(self.schedo)):
            raise ValueError(f"{type(self).__name__}: the checkpoint's scheduler is a {kind}, this fit's a "
                             f'{_kind(self.schedo)}: build the scheduler of the run that saved it.')

    def _check_args(self, sd: dict[str, Any]) -> None:
        """Raise if the scheduler of state `sd` was built with other arguments than this fit's."""
        if not (changed := self.schedo.changed_args(sd)):
            return
        diffs = '; '.join(f'{k}: saved {old!r}, this fit {new!r}' for k, (old, new) in changed.items())
        raise ValueError(f"{type(self).__name__}: the checkpoint's {type(self.schedo).__name__} was built with other "
                         f"arguments than this fit's ({diffs}). A resume continues the saved schedule: build the "
                         "scheduler with the saved run's arguments. To train on with a new schedule instead: "
                         'learn.load(path), then fit(n) without resume.')

    def _step(self, learn: Learner) -> None:
        if learn.training: self.schedo.step()


class BatchSchedCB(BaseSchedCB):
    """Steps the scheduler after every training batch that steps the optimizer: with gradient accumulation (a batch
    cancelled after its backward) once every k batches, so build it with the optimizer steps the fit takes. After a
    fit that went through all its batches, warns if the schedule did not reach its end (`check_sched_end`)."""
    per_batch = True

    def check_sched(self, learn: Learner, schedo: Any) -> None:
        if isinstance(schedo, ReduceLROnPlateau):
            raise ValueError("BatchSchedCB: ReduceLROnPlateau steps once per epoch with a monitored value: use "
                             "EpochSchedCB(partial(ReduceLROnPlateau, ...), monitor='valid_loss')")

    def n_steps(self, learn: Learner) -> int:
        return learn.n_iter

    def before_fit(self, learn: Learner) -> None:
        self._batch = -1  # the last training batch of this fit (`fit_batch`)
        super().before_fit(learn)

    def before_batch(self, learn: Learner) -> None:
        if learn.training: self._batch = fit_batch(learn)

    def after_batch(self, learn: Learner) -> None: self._step(learn)

    def after_fit(self, learn: Learner) -> None:
        if self._fitting and self._batch == learn.n_iter - 1:  # (not when it stopped early)
            check_sched_end(self.schedo, learn.n_iter, 'BatchSchedCB')


class EpochSchedCB(BaseSchedCB):
    """Steps the scheduler after every training epoch; with `monitor` (for `ReduceLROnPlateau`, and only for it),
    once per epoch after its last phase, with the `MetricsCB` value named `monitor` ('valid_loss', 'accuracy',
    'train_loss', ... as for `EarlyStoppingCB`). An epoch without that value (cancelled) does not step, with a
    warning; so, without `monitor`, does a training epoch cancelled by `CancelEpochException`, which skips
    `after_epoch` (warned once per fit: an epoch schedule counts the epochs trained to their end)."""
    order = MetricsCB.order + 1  # after `MetricsCB` has the epoch's row

    def __init__(self, sched: Callable[..., Any], monitor: str | None = None):
        super().__init__(sched)
        self.monitor = monitor

    @property
    def mode(self) -> str | None:
        """The plateau scheduler's mode ('min' or 'max'); None before a fit built it, or for another scheduler."""
        schedo = getattr(self, 'schedo', None)
        return schedo.mode if isinstance(schedo, ReduceLROnPlateau) else None

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state (a plateau's holds its mode) with the monitor it stepped with."""
        sd = super().state_dict()
        return {**sd, 'monitor': self.monitor} if hasattr(self, 'schedo') else sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Refuses a state saved with another monitor, or another plateau mode (checked once a fit has built the
        scheduler: `learn.load` before any fit checks the monitor only); states from before the monitor was kept
        pass."""
        saved = (sd.get('monitor', self.monitor), sd.get('sched', {}).get('mode'))
        if saved[0] != self.monitor or None not in (saved[1], self.mode) and saved[1] != self.mode:
            raise ValueError(f"EpochSchedCB: the checkpoint's EpochSchedCB stepped with monitor={saved[0]!r}, "
                             f'mode={saved[1]!r}; this one with monitor={self.monitor!r}, mode={self.mode!r}. Its '
                             "scheduler state (best, bad epochs) is another value's: build it with the monitor and "
                             'mode of the run that saved the checkpoint.')
        super().load_state_dict(sd)

    def check_sched(self, learn: Learner, schedo: Any) -> None:
        plateau = isinstance(schedo, ReduceLROnPlateau)
        if plateau and self.monitor is None:
            raise ValueError("EpochSchedCB: ReduceLROnPlateau steps with the value it watches: name it, e.g. "
                             "EpochSchedCB(partial(ReduceLROnPlateau, ...), monitor='valid_loss')")
        if not plateau and self.monitor is not None:
            raise ValueError(f'EpochSchedCB: monitor={self.monitor!r} is for ReduceLROnPlateau, but '
                             f'{type(schedo).__name__} steps without a value: leave monitor out')
        if self.monitor is not None:
            check_monitor(learn, self.monitor, 'EpochSchedCB')
        said = 'mode' in getattr(self.sched, 'keywords', {})  # partial(ReduceLROnPlateau, mode=...)
        if plateau and not is_loss(self.monitor) and schedo.mode == 'min' and not said:
            raise ValueError(f"EpochSchedCB(monitor={self.monitor!r}): say which way is better, e.g. "
                             "partial(ReduceLROnPlateau, mode='max') if higher is (accuracy), or mode='min'; only "
                             "for a loss is ReduceLROnPlateau's default, mode='min', taken as meant.")

    def n_steps(self, learn: Learner) -> int:
        return learn.n_epochs

    def before_fit(self, learn: Learner) -> None:
        self._due, self._warned = None, False  # the training epoch not stepped yet; whether that was warned of
        super().before_fit(learn)

    def before_epoch(self, learn: Learner) -> None:
        self._check_stepped()
        if self._fitting and learn.training and self.monitor is None:
            self._due = learn.epoch

    def after_epoch(self, learn: Learner) -> None:
        if self.monitor is None:
            self._step(learn)
            self._due = None
        elif 'train' in learn.phases and learn.phase == learn.phases[-1]:  # not in a validation-only fit
            v = monitored_value(learn, self.monitor)
            if v is None:
                warnings.warn(f'EpochSchedCB: epoch {learn.epoch} has no {self.monitor!r} (was its phase cancelled?); '
                              'the scheduler does not step.', stacklevel=2)
            else:
                self.schedo.step(v)

    def after_fit(self, learn: Learner) -> None: self._check_stepped()

    def _check_stepped(self) -> None:
        """Warn (once a fit) if the last training epoch did not step: `CancelEpochException` skipped its
        `after_epoch`."""
        if self._due is not None and not self._warned:
            self._warned = True
            warnings.warn(f'EpochSchedCB: training epoch {self._due} was cancelled (CancelEpochException skips '
                          'after_epoch), so the scheduler did not step for it, nor will it for other such epochs of '
                          'this fit (warned once).', stacklevel=4)
        self._due = None


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

    Values are read in `after_step`, so they are those the step just used, whatever the callbacks' order. A
    validation-only fit records nothing and keeps the last fit's records.

    `rec = RecorderCB(lr=rec_lr, mom=rec_mom)`, then `rec.recs['lr']` or `rec.plot()`.
    """
    def __init__(self, **fns: Callable[[RecorderCB], float]):
        if not fns:
            raise ValueError('RecorderCB: name at least one series to record, e.g. RecorderCB(lr=rec_lr, mom=rec_mom)')
        if bad := [k for k, f in fns.items() if not callable(f)]:
            raise TypeError(f'RecorderCB: {", ".join(bad)} must be functions of the callback, such as rec_lr or '
                            "rec_mom (or lambda cb: cb.pg['weight_decay']); got "
                            f'{", ".join(repr(fns[k]) for k in bad)}')
        self.fns, self.recs = fns, {k: [] for k in fns}

    def state_dict(self) -> dict[str, Any]:
        return {'recs': self.recs}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if set(sd['recs']) != set(self.fns):
            raise ValueError(f"RecorderCB: the saved state records {sorted(sd['recs'])} but this one records "
                             f"{sorted(self.fns)}: resume with a RecorderCB recording the same series")
        self.recs = {k: list(v) for k, v in sd['recs'].items()}

    def before_fit(self, learn: Learner) -> None:
        if 'train' not in learn.phases:
            return  # validation only (maybe with no optimizer): nothing to record; the last fit's records are kept
        self.recs: dict[str, list[float]] = {k: [] for k in self.fns}
        self.pg = learn.opt.param_groups[0]

    def after_step(self, learn: Learner) -> None:
        for k, fn in self.fns.items(): self.recs[k].append(float(fn(self)))

    def plot(self, figsize: tuple[float, float] | None = None) -> None:
        """Plot each recorded series in its own labelled panel against the training batch (`plt.savefig` saves
        it)."""
        from .plot import subplots
        n = len(self.recs)
        fig, axs = subplots(1, n, figsize=figsize or (4 * n, 3), squeeze=False)
        for ax, (k, v) in zip(axs.flat, self.recs.items()):
            ax.plot(v)
            ax.set(title=k, xlabel='batch', ylabel=k)
        fig.tight_layout()
