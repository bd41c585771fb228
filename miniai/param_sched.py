"""Scheduling any hyperparameter, fastai's way: schedules are functions of training progress `pos` in [0, 1].

`sched_cos(1e-3, 1e-2)(0.5)` is the value halfway along; `combine_scheds` glues schedules one after the other;
`ParamScheduler` sets any hyperparameter of every param group from them before each training batch, and
`fit_one_cycle` is the 1cycle policy built from those pieces.
"""

from __future__ import annotations

import math
import warnings
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from itertools import accumulate
from numbers import Real
from typing import Any, Literal

from .learner import Callback, Learner, as_float, check_n_epochs
from .schedulers import _check_div, _check_lrs, _per_group, get_mom, set_mom, uses_momentum

__all__ = ['Sched', 'annealer', 'sched_lin', 'sched_cos', 'sched_exp', 'sched_no', 'combine_scheds',
           'ParamScheduler', 'fit_one_cycle']

Sched = Callable[[float], float]


def annealer(f: Callable[[float, float, float], float]) -> Callable[[float, float], Sched]:
    """Decorator: `f(start, end, pos)` becomes `f(start, end)`, which returns the schedule `pos -> value`."""
    def _inner(start: float, end: float) -> Sched: return partial(f, start, end)
    _inner.__name__, _inner.__doc__ = f.__name__, f.__doc__
    return _inner


@annealer
def sched_lin(start: float, end: float, pos: float) -> float:
    """Linear from `start` to `end`."""
    return start + pos * (end - start)


@annealer
def sched_cos(start: float, end: float, pos: float) -> float:
    """Half a cosine from `start` to `end` (flat at both ends); the form of torch's `OneCycleLR`."""
    return end + (start - end) / 2 * (1 + math.cos(math.pi * pos))


def _exp(start: float, end: float, pos: float) -> float:
    return start * (end / start) ** pos


def sched_exp(start: float, end: float) -> Sched:
    """Exponential (linear on a log scale) from `start` to `end`; both must be positive."""
    if not all(math.isfinite(v) and v > 0 for v in (start, end)):
        raise ValueError(f"sched_exp is linear on a log scale: start and end must be positive, got {start=}, {end=}")
    return partial(_exp, start, end)


@annealer
def sched_no(start: float, end: float, pos: float) -> float:
    """Constant `start`."""
    return start


def combine_scheds(pcts: Sequence[float], scheds: Sequence[Sched]) -> Sched:
    """One schedule made of `scheds[i]` run over the fraction `pcts[i]` of training, in turn.

    A position on a boundary belongs to the later piece (also where the sum of the `pcts` before it rounds up:
    `pcts=[0.1, 0.2, 0.7]` puts 0.3 in the third); each piece sees its own position 0 → 1.
    """
    if len(pcts) != len(scheds):
        raise ValueError(f"combine_scheds: pcts has {len(pcts)} fractions but scheds has {len(scheds)} "
                         "schedules: give one fraction per schedule")
    if not pcts or not all(math.isfinite(p) and p > 0 for p in pcts):
        raise ValueError(f"combine_scheds: pcts must be positive fractions of training, got {list(pcts)}")
    if not abs(sum(pcts) - 1) <= 1e-6:
        raise ValueError(f"combine_scheds: pcts must sum to 1, got {list(pcts)} (sum {sum(pcts)})")
    starts = [0., *accumulate(pcts)][:-1]

    def _inner(pos: float) -> float:
        i = min(max(bisect_right(starts, pos + 1e-12) - 1, 0), len(pcts) - 1)  # (1e-12: the sums' rounding)
        return scheds[i](max(pos - starts[i], 0.) / pcts[i])
    return _inner


def fit_batch(learn: Learner) -> int:
    """Index of the current training batch among the fit's `learn.n_iter`: batches cancelled before their
    optimizer step (gradient accumulation) count, as in fastai; a mid-epoch resume restores it."""
    return learn.epoch * (learn.n_iter // learn.n_epochs) + learn.iter


class ParamScheduler(Callback):
    """Before each training batch, sets hyperparameters of every param group from schedules of the progress.

    `scheds` maps a param-group key ('lr', 'weight_decay', 'eps', ...) or 'mom' (SGD's `momentum`, or Adam's
    `betas[0]` with beta2 kept) to a schedule, or to a list of schedules, one per param group (discriminative
    lrs). `hps[name]` records, per optimizer step, the value set in the last param group (as fastai does; a batch
    cancelled before its step, as gradient accumulation does, is set again by the next, and recorded once).

    Where batch `i` of the fit's `n` training batches sits (`i` counts every training batch, cancelled ones too,
    as fastai does: with gradient accumulation the schedules still run their course): by default `pos = i/n`
    (fastai's convention: the last batch stops one step short of `f(1)`). With `endpoint=True`,
    `pos = i/(n-1)` (like `np.linspace`): the first batch gets `f(0)` and the last `f(1)`. That is torch's
    `OneCycleLR` convention (step `i` of `total_steps` at `i/(total_steps-1)`), so with it and matching `pcts`
    a `ParamScheduler` reproduces that curve exactly (see the tests). A validation-only fit sets and records
    nothing.
    """
    skip_in_lr_find = True  # `lr_find` sets the lr itself: pause this callback meanwhile

    def __init__(self, scheds: dict[str, Sched | Sequence[Sched]], endpoint: bool = False):
        for name, fs in scheds.items():
            if not all(callable(f) for f in (fs if isinstance(fs, (list, tuple)) else [fs])):
                raise TypeError(f"ParamScheduler: the schedule for {name!r} must be a function of pos (e.g. "
                                f"sched_cos(1e-3, 1e-2)) or a list of them, one per param group; got {fs!r}")
        self.scheds, self.endpoint = scheds, endpoint
        self.hps: dict[str, list[float]] = {name: [] for name in scheds}
        self._at: list[int] = []  # the training batch (`fit_batch`) at which each recorded value was set
        self._last: dict[str, list[float]] = {}  # the values last set, in every param group
        self._learn: Learner | None = None  # the Learner fitting, while it fits

    def _pos(self, i: int, n: int) -> float:
        """Where training batch `i` of `n` sits in the schedules."""
        return i / max(n - 1, 1) if self.endpoint else i / n if n else 0.

    def before_fit(self, learn: Learner) -> None:
        if 'train' not in learn.phases:
            return  # validation only (maybe with no optimizer): nothing to set
        pgs = learn.opt.param_groups
        self._fs = {}
        for name, fs in self.scheds.items():
            if isinstance(fs, (list, tuple)) and len(fs) != len(pgs):
                raise ValueError(f"ParamScheduler: {len(fs)} schedules for {name!r} but the optimizer has "
                                 f"{len(pgs)} param groups: give one per group, or a single schedule")
            for i, pg in enumerate(pgs):
                if not (get_mom(pg) is not None if name == 'mom' else name in pg):
                    keys = [k for k in pg if k != 'params']
                    raise ValueError(f"ParamScheduler: param group {i} of {type(learn.opt).__name__} has no "
                                     f"hyperparameter {name!r} ('mom' means `momentum` or `betas`); "
                                     f"it has {keys}")
            self._fs[name] = fs if isinstance(fs, (list, tuple)) else [fs] * len(pgs)
        self.hps, self._at, self._last, self._learn = {name: [] for name in self.scheds}, [], {}, learn

    def cleanup_fit(self, learn: Learner) -> None: self._learn = None

    def state_dict(self) -> dict[str, Any]:
        """The recorded values, the training batches they were set at and the values last set in every group, for
        checkpoints (the position itself is the Learner's)."""
        return {'hps': self.hps, 'at': self._at, 'last': self._last}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if set(sd['hps']) != set(self.scheds):
            raise ValueError(f"ParamScheduler: the saved state schedules {sorted(sd['hps'])} but this one schedules "
                             f"{sorted(self.scheds)}: resume with a ParamScheduler of the same hyperparameters")
        if self._learn is not None:  # resuming: the saved values must be this fit's schedules' own
            self._check_saved(sd)
        self.hps = {k: list(v) for k, v in sd['hps'].items()}
        self._at = _saved_at(sd)
        self._last = {k: list(v) for k, v in sd.get('last', {}).items()}  # states from before it was kept: none

    def _check_saved(self, sd: dict[str, Any]) -> None:
        """Raise unless the saved values are this fit's schedules' at their batches: each step's in the last group,
        and the last step's in every group."""
        n, at = self._learn.n_iter, _saved_at(sd)  # (n counted once `DDPCB` has sharded the loader)
        checks = [(name, -1, i, v) for name, vals in sd['hps'].items() for i, v in enumerate(vals)]
        checks += [(name, g, len(sd['hps'][name]) - 1, v) for name, vs in sd.get('last', {}).items()
                   for g, v in enumerate(vs)]
        for name, g, i, v in checks:  # (the number of param groups is the optimizer's, checked before)
            if not math.isclose(v, own := self._fs[name][g](self._pos(at[i], n)), rel_tol=1e-9, abs_tol=1e-12):
                group = f'param group {g}' if g >= 0 else 'the last param group'
                raise ValueError(f'ParamScheduler: the saved run set {name} to {v:.6g} in {group} at training '
                                 f"step {i}, where this fit's schedule gives {own:.6g}: resume with the schedules "
                                 'and n_epochs of the run that saved the checkpoint (for fit_one_cycle: the same '
                                 'lr_max, div, div_final, pct_start and moms).')

    def before_batch(self, learn: Learner) -> None:
        if not learn.training:
            return
        i, b = learn.train_iter, fit_batch(learn)  # (step i's batch may be cancelled: set again, recorded once)
        pos = self._pos(b, learn.n_iter)
        _record(self._at, i, b)
        for name, fs in self._fs.items():
            vs = [as_float(f(pos)) for f in fs]
            for pg, v in zip(learn.opt.param_groups, vs, strict=True):
                if name == 'mom':
                    set_mom(pg, v)
                else:
                    pg[name] = v
            self._last[name] = vs
            _record(self.hps[name], i, vs[-1])


def _record(xs: list, i: int, v: Any) -> None:
    """`xs[i] = v`, appended where `xs` has no item `i` yet."""
    if len(xs) > i:
        xs[i] = v
    else:
        xs.append(v)


def _saved_at(sd: dict[str, Any]) -> list[int]:
    """The training batch of each value recorded in `ParamScheduler` state `sd`; a state from before they were kept
    has one value per batch."""
    return list(sd.get('at', range(max(map(len, sd['hps'].values()), default=0))))


def _check_one_cycle(lr_max: Any, div: float, div_final: float, pct_start: float,
                     moms: Any) -> float | list[float]:
    """Raise a ValueError unless `fit_one_cycle`'s arguments make a 1cycle schedule; returns `lr_max` as a float,
    or a list of them (one per param group, from a list, tuple or 1-d array)."""
    if not 0 < pct_start < 1:
        raise ValueError(f"fit_one_cycle: pct_start is the fraction of training spent warming up, in (0, 1); "
                         f"got {pct_start!r}")
    _check_div('fit_one_cycle: div', div)
    _check_div('fit_one_cycle: div_final', div_final)
    if not (moms is None or (moms == 'auto' if isinstance(moms, str) else isinstance(moms, (tuple, list)) and
                             len(moms) == 3 and all(isinstance(m, Real) and 0 <= m < 1 for m in moms))):
        raise ValueError(f'fit_one_cycle: moms is the momentum (or beta1) at the start, the peak lr and the end: three '
                         f"numbers in [0, 1), e.g. {_MOMS}, or 'auto' or None; got {moms!r}")
    per_group, name = isinstance(lr_max, (list, tuple)) or getattr(lr_max, 'ndim', None) == 1, 'fit_one_cycle: lr_max'
    lrs = _check_lrs(name, _per_group(name, lr_max, len(lr_max) if per_group else 1))
    return lrs if per_group else lrs[0]


def _one_cycle(lr_max: float | Sequence[float], div: float, div_final: float, pct_start: float,
               moms: tuple[float, float, float] | None) -> dict[str, Sched | list[Sched]]:
    """The 1cycle schedules of `fit_one_cycle`: 'lr' (one per param group for a list `lr_max`) and 'mom'."""
    pcts = [pct_start, 1 - pct_start]

    def cycle(lr: float) -> Sched:
        return combine_scheds(pcts, [sched_cos(lr / div, lr), sched_cos(lr, lr / div_final)])
    scheds = {'lr': [cycle(lr) for lr in lr_max] if isinstance(lr_max, (list, tuple)) else cycle(lr_max)}
    if moms is not None:
        scheds['mom'] = combine_scheds(pcts, [sched_cos(moms[0], moms[1]), sched_cos(moms[1], moms[2])])
    return scheds


def _saved_hps(learn: Learner, resume: Any) -> dict[str, list[float]] | None:
    """The values that the `ParamScheduler` of checkpoint `resume` (the one `fit_one_cycle` would resume) recorded;
    None without a resume, or when the checkpoint holds no such state."""
    if resume is None:
        return None
    from .checkpoint import load_checkpoint
    key = f"ParamScheduler_{sum(type(cb).__name__ == 'ParamScheduler' for cb in learn.cbs)}"
    sd = load_checkpoint(resume)['cbs'].get(key)
    return None if sd is None else sd['hps']


_MOMS = (0.95, 0.85, 0.95)


def _resumed_moms(moms: tuple[float, float, float] | Literal['auto'] | None,
                  hps: dict[str, list[float]]) -> tuple[float, float, float] | None:
    """`moms` for resuming a run whose `ParamScheduler` recorded `hps` ('auto': as that run did); raises if they
    would schedule momentum where it did not, or not where it did (the values are checked by `ParamScheduler`)."""
    if moms == 'auto':
        return _MOMS if 'mom' in hps else None
    if ('mom' in hps) != (moms is not None):
        did, fix = (('cycled', f"the moms it was given (moms='auto' for the default {_MOMS})") if 'mom' in hps
                    else ('did not cycle', 'moms=None'))
        raise ValueError(f'fit_one_cycle(..., resume=...): moms={moms!r}, but the run in the checkpoint {did} '
                         f'momentum: resume with {fix}')
    return moms


def fit_one_cycle(learn: Learner, n_epochs: int, lr_max: float | Sequence[float], div: float = 25.,
                  div_final: float = 1e5, pct_start: float = 0.25,
                  moms: tuple[float, float, float] | Literal['auto'] | None = 'auto',
                  cbs: Iterable[Callback] | None = None, **kwargs) -> ParamScheduler:
    """Fit with fastai's 1cycle policy; returns the `ParamScheduler` used (its `hps` hold the lr, mom curves).

    The lr rises (cosine) from `lr_max/div` to `lr_max` over `pct_start` of the batches, then anneals to
    `lr_max/div_final`; momentum goes the opposite way through `moms` (`None` leaves it alone; 'auto' is
    (0.95, 0.85, 0.95) if the optimizer uses momentum (`uses_momentum`), else `None`). `lr_max` may be a list
    (or 1-d array), one per param group. `kwargs` go to `learn.fit`. With `resume=path`, momentum is scheduled
    as the checkpoint's run did ('auto' for the default moms), or the call is refused.
    """
    check_n_epochs(n_epochs)
    lr_max = _check_one_cycle(lr_max, div, div_final, pct_start, moms)
    if (hps := _saved_hps(learn, kwargs.get('resume'))) is not None:
        moms = _resumed_moms(moms, hps)
    elif kwargs.get('resume') is not None:
        warnings.warn("fit_one_cycle(..., resume=...): the checkpoint holds no ParamScheduler state (it was saved "
                      "after fit_one_cycle ended, when its ParamScheduler was no longer on the Learner), so this "
                      "resume cannot check lr_max, div, div_final, pct_start and moms against the saved run's: give "
                      "the same ones. Saved during the fit (CheckpointCB, or learn.save from a callback), it holds "
                      'that state.', stacklevel=2)
    if hps is None and moms is not None:
        opt = learn.new_opt()[0] if learn.opt is None or learn.opt_is_stale() else learn.opt  # (as) the fit's
        if moms == 'auto':
            moms = _MOMS if uses_momentum(opt) else None
        elif not uses_momentum(opt):
            raise ValueError(f"fit_one_cycle: moms={moms!r} cycles momentum, but this {type(opt).__name__} does not "
                             "use any (its momentum or beta1 is 0, or it has none): leave moms out, or use an "
                             "optimizer with momentum, e.g. opt_func=partial(optim.SGD, momentum=0.9)")
    sched = ParamScheduler(_one_cycle(lr_max, div, div_final, pct_start, moms))
    learn.fit(n_epochs, cbs=[sched, *(cbs or ())], **kwargs)
    return sched


Learner.fit_one_cycle = fit_one_cycle
