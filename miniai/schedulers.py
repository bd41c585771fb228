"""Learning-rate and momentum schedulers, written from scratch.

A schedule is a pure function of the step index (`lrs_at(step)`, `moms_at(step)`); `step()` just applies it.
The values equal those of `torch.optim.lr_scheduler.CosineAnnealingLR`, `OneCycleLR` and `CyclicLR`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

__all__ = ['Scheduler', 'CosineAnnealing', 'OneCycle', 'CyclicLR', 'get_mom', 'set_mom', 'uses_momentum']


def get_mom(pg: dict) -> float | None:
    """Momentum of param group `pg`: `betas[0]` (Adam family), else `momentum`; None if it has neither."""
    return pg['betas'][0] if 'betas' in pg else pg.get('momentum')


def uses_momentum(opt: Optimizer) -> bool:
    """Whether every param group of `opt` uses momentum (a nonzero `momentum` or beta1): where it is worth
    cycling (`cycle_momentum`). Adagrad and Adadelta have none; RMSprop's default is 0."""
    return all(get_mom(pg) for pg in opt.param_groups)


def set_mom(pg: dict, mom: float) -> None:
    """Set the momentum of param group `pg`: the first of `betas` (kept a tuple), or `momentum`."""
    if 'betas' in pg:
        pg['betas'] = (float(mom), *pg['betas'][1:])
    elif 'momentum' in pg:
        _put(pg, 'momentum', mom)
    else:
        raise KeyError('param group has neither `momentum` nor `betas`')


def _put(pg: dict, key: str, v: float) -> None:
    # A tensor hyper-parameter (e.g. a capturable Adam's lr) is filled in place; otherwise store a float.
    if isinstance(pg.get(key), Tensor):
        pg[key].fill_(v)
    else:
        pg[key] = float(v)


def _per_group(name: str, v: float | Sequence[float], n: int) -> list[float]:
    """One float per param group, from a scalar or a per-group list, tuple or 1-d array."""
    ndim = getattr(v, 'ndim', None)  # a NumPy array or a tensor
    if isinstance(v, (list, tuple)) or ndim == 1:
        if len(v) != n:
            raise ValueError(f'{name} has {len(v)} values but the optimizer has {n} param groups: '
                             'pass a single number or a list with one value per param group')
        return [float(o) for o in v]
    if ndim not in (None, 0):
        raise ValueError(f'{name} is a {ndim}-d array: pass a single number or one value per param group '
                         '(a list or 1-d array)')
    return [float(v)] * n


def _check_lrs(name: str, lrs: list[float], zero_ok: bool = False) -> list[float]:
    if not all(math.isfinite(v) and (v >= 0 if zero_ok else v > 0) for v in lrs):
        raise ValueError(f'{name} is a learning rate: it must be {"0 or more" if zero_ok else "positive"}, got '
                         f'{lrs[0] if len(set(lrs)) == 1 else lrs}')
    return lrs


def _check_div(name: str, v: Any) -> None:
    """Raise a ValueError unless `v`, a factor dividing the lr, is a positive finite number."""
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f'{name} divides the lr: it must be a positive number, got {v!r}')


def _steps(name: str, v: Any, whole: bool = True, zero_ok: bool = False) -> int | float:
    """`v`, a number of steps, as a Python int (or float): a ValueError unless it is a positive (`zero_ok`: or
    zero) integer, Python or NumPy, or, where `whole=False`, any such finite number."""
    kind = Integral if whole else Real
    if isinstance(v, bool) or not isinstance(v, kind) or not math.isfinite(v) or not (v >= 0 if zero_ok else v > 0):
        raise ValueError(f'{name} must be a {"whole " if whole else ""}number of steps {">= 0" if zero_ok else "> 0"} '
                         f'(a Python or NumPy {"integer" if whole else "int or float"}), got {v!r} of type '
                         f'{type(v).__name__}')
    return int(v) if isinstance(v, Integral) else float(v)


def _check_momentum(opt: Optimizer, cycle_momentum: bool) -> bool:
    if cycle_momentum and not all('betas' in pg or 'momentum' in pg for pg in opt.param_groups):
        raise ValueError(f'cycle_momentum=True but {type(opt).__name__} has neither `momentum` nor `betas`: '
                         'pass cycle_momentum=False, or use an optimizer with momentum (SGD, Adam...)')
    return cycle_momentum


class Scheduler:
    """Base class: sets the lr (and optionally the momentum) of every param group of `opt` from
    `lrs_at(step)` and `moms_at(step)`. As in PyTorch, construction applies step 0 and each `step()`
    advances `last_epoch` by one."""

    _not_state = ('opt',)  # attributes left out of `state_dict`
    _args: dict[str, str] = {}  # state keys holding the scheduler's arguments: {key: the argument's name}

    def __init__(self, opt: Optimizer, base_lrs: list[float] | None = None) -> None:
        self.opt = opt
        # Base lr: `initial_lr`, set by the first scheduler on `opt`, as in PyTorch (whose recursive cosine
        # would instead start from the current lr; the two agree unless the lr was changed in between).
        for pg in opt.param_groups:
            pg.setdefault('initial_lr', float(pg['lr']))
        self.base_lrs = base_lrs or [float(pg['initial_lr']) for pg in opt.param_groups]
        self.last_epoch = -1
        self.step()

    def lrs_at(self, step: int) -> list[float]:
        """Learning rate of each param group at `step`."""
        raise NotImplementedError

    def moms_at(self, step: int) -> list[float] | None:
        """Momentum (or beta1) of each param group at `step`; None leaves momentum alone."""
        return None

    def step(self) -> None:
        """Advance one step and set every param group's lr (and momentum) to the schedule's values."""
        n = self.last_epoch + 1
        lrs, moms = self.lrs_at(n), self.moms_at(n)  # if this raises, the state is untouched
        self.last_epoch = n
        self._apply(lrs, moms)

    def _apply(self, lrs: list[float], moms: list[float] | None) -> None:
        for i, pg in enumerate(self.opt.param_groups):
            _put(pg, 'lr', lrs[i])
            if moms is not None:
                set_mom(pg, moms[i])

    def get_last_lr(self) -> list[float]:
        """The lr of each param group at the current step (Python floats)."""
        return self.lrs_at(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values only, so it survives `torch.save` / `torch.load(weights_only=True)`."""
        return copy.deepcopy({k: v for k, v in vars(self).items() if k not in self._not_state})

    def changed_args(self, sd: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """The arguments that state `sd` was built with and this scheduler was not: {name: (saved, this one's)}.
        Progress (`last_epoch`) is not an argument; keys an older state lacks are skipped."""
        return {name: (sd[k], getattr(self, k)) for k, name in self._args.items()
                if k in sd and sd[k] != getattr(self, k)}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore `sd`, arguments included (as PyTorch does; `BatchSchedCB` refuses a resume whose arguments
        differ, see `changed_args`), and re-apply the schedule at its `last_epoch`, so the run continues exactly."""
        n = len(self.opt.param_groups)
        if len(sd['base_lrs']) != n:
            raise ValueError(f"state_dict is for {len(sd['base_lrs'])} param groups but the optimizer has "
                             f'{n}: load it into a scheduler whose optimizer has the same param groups')
        vars(self).update(copy.deepcopy(sd))
        for pg, b in zip(self.opt.param_groups, self.base_lrs, strict=True):
            pg['initial_lr'] = b
        self._apply(self.lrs_at(self.last_epoch), self.moms_at(self.last_epoch))


class CosineAnnealing(Scheduler):
    """Half a cosine from each group's initial lr to `eta_min` at step `T_max`, then back up after it.

    Unlike PyTorch, after another scheduler on the same optimizer it restarts from `initial_lr` (set by the first
    scheduler); PyTorch's recursive form goes on from the current lr."""

    _args = {'T_max': 'T_max', 'eta_min': 'eta_min'}  # base_lrs: the optimizer's, which a resume restores

    def __init__(self, opt: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        T_max = _steps('T_max', T_max, whole=False)
        _check_lrs('eta_min', [eta_min], zero_ok=True)
        self.T_max, self.eta_min = T_max, float(eta_min)
        super().__init__(opt)

    def lrs_at(self, step: int) -> list[float]:
        # PyTorch's `step()` uses a recursive form of this; the tests check they agree to 1e-9 relative.
        return [self.eta_min + (b - self.eta_min) * (1 + math.cos(math.pi * step / self.T_max)) / 2
                for b in self.base_lrs]


class OneCycle(Scheduler):
    """1cycle: warm up from `max_lr/div_factor` to `max_lr` over `pct_start` of the steps, then anneal to
    `max_lr/div_factor/final_div_factor`; momentum moves the opposite way. `three_phase` first comes back
    down to the initial lr (mirroring the warm-up), then anneals to the final lr.

    Unlike PyTorch, which raises ZeroDivisionError, a phase of length 0 (a one-step warm-up, pct_start *
    total_steps == 1, or such a three-phase phase) runs: it is over at once."""

    _args = {'max_lrs': 'max_lr', 'total_steps': 'total_steps', 'pct_start': 'pct_start',
             'anneal_strategy': 'anneal_strategy', 'div_factor': 'div_factor', 'final_div_factor': 'final_div_factor',
             'three_phase': 'three_phase', 'cycle_momentum': 'cycle_momentum', 'base_moms': 'base_momentum',
             'max_moms': 'max_momentum'}

    def __init__(self, opt: Optimizer, max_lr: float | Sequence[float], total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = 'cos', cycle_momentum: bool = True,
                 base_momentum: float | Sequence[float] = 0.85, max_momentum: float | Sequence[float] = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False) -> None:
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError('OneCycle needs its length: pass total_steps, or epochs and steps_per_epoch')
            total_steps = _steps('epochs', epochs) * _steps('steps_per_epoch', steps_per_epoch)
        total_steps = _steps('total_steps', total_steps)
        if not 0 < pct_start < 1:
            raise ValueError(f'pct_start is the fraction of steps spent warming up: pass a number in (0, 1), '
                             f'got {pct_start!r}')
        if three_phase and pct_start > 0.5:
            raise ValueError(f'three_phase=True warms up over pct_start of the steps and comes back down over as '
                             f'many, so with pct_start={pct_start!r} (over 0.5) it never anneals: pass pct_start '
                             '<= 0.5, or three_phase=False')
        if anneal_strategy not in ('cos', 'linear'):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        _check_div('div_factor', div_factor)
        _check_div('final_div_factor', final_div_factor)
        n = len(opt.param_groups)
        self.max_lrs = _check_lrs('max_lr', _per_group('max_lr', max_lr, n))
        self.total_steps, self.pct_start, self.anneal_strategy = total_steps, float(pct_start), anneal_strategy
        self.div_factor, self.final_div_factor = float(div_factor), float(final_div_factor)
        self.three_phase = bool(three_phase)
        # Phase ends, written as in PyTorch so they round identically.
        self.ends = [float(pct_start * total_steps) - 1, total_steps - 1]
        if three_phase:
            self.ends.insert(1, float(2 * pct_start * total_steps) - 2)
        self.cycle_momentum = _check_momentum(opt, cycle_momentum)
        self.base_moms = _per_group('base_momentum', base_momentum, n)
        self.max_moms = _per_group('max_momentum', max_momentum, n)
        for pg, mx in zip(opt.param_groups, self.max_lrs, strict=True):
            pg['initial_lr'] = mx / div_factor  # as PyTorch does
        super().__init__(opt, [mx / div_factor for mx in self.max_lrs])

    def _phase(self, step: int) -> tuple[int, float]:
        """Which phase `step` is in, and how far through it (0 to 1)."""
        # As in PyTorch, step == total_steps (the step() after the last batch) is still allowed: it
        # extrapolates one step past the final lr (below it, even negative, with 'linear').
        if step > self.total_steps:
            raise ValueError(f'OneCycle was stepped to step {step} but total_steps is {self.total_steps}: '
                             'the schedule is over; create it with more total_steps (or epochs)')
        start = 0.0
        for i, end in enumerate(self.ends):
            if step <= end or i == len(self.ends) - 1:
                # A phase of length 0 (pct_start * total_steps == 1) is over; PyTorch divides by zero here.
                return i, (step - start) / (end - start) if end != start else 1.0
            start = end
        raise AssertionError('unreachable')

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == 'cos':
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def lrs_at(self, step: int) -> list[float]:
        i, pct = self._phase(step)
        res = []
        for mx in self.max_lrs:
            lo = mx / self.div_factor
            final = lo / self.final_div_factor
            pts = [lo, mx, lo, final] if self.three_phase else [lo, mx, final]
            res.append(self._anneal(pts[i], pts[i + 1], pct))
        return res

    def moms_at(self, step: int) -> list[float] | None:
        if not self.cycle_momentum:
            return None
        i, pct = self._phase(step)
        res = []
        for b, m in zip(self.base_moms, self.max_moms, strict=True):
            pts = [m, b, m, m] if self.three_phase else [m, b, m]
            res.append(self._anneal(pts[i], pts[i + 1], pct))
        return res


class CyclicLR(Scheduler):
    """Triangles between `base_lr` and `max_lr`: up over `step_size_up` steps, down over `step_size_down`.
    `triangular2` halves the height every cycle, `exp_range` multiplies it by `gamma**step`. Momentum moves
    the opposite way, from `max_momentum` down to `base_momentum` at the peak."""

    _not_state = ('opt', 'scale_fn')  # a custom scale_fn is not saved: pass it again when resuming
    _args = {'base_lrs': 'base_lr', 'max_lrs': 'max_lr', 'total_size': 'step_size_up + step_size_down',
             'step_ratio': 'step_size_up / (step_size_up + step_size_down)', 'mode': 'mode', 'gamma': 'gamma',
             'scale_mode': 'scale_mode', 'cycle_momentum': 'cycle_momentum', 'base_moms': 'base_momentum',
             'max_moms': 'max_momentum'}

    def __init__(self, opt: Optimizer, base_lr: float | Sequence[float], max_lr: float | Sequence[float],
                 step_size_up: int, step_size_down: int | None = None, mode: str = 'triangular',
                 gamma: float = 1.0, cycle_momentum: bool = True,
                 base_momentum: float | Sequence[float] = 0.8, max_momentum: float | Sequence[float] = 0.9,
                 scale_fn: Callable[[float], float] | None = None, scale_mode: str = 'cycle') -> None:
        up = _steps('step_size_up', step_size_up, whole=False)
        # step_size_down=0 is allowed: a sawtooth
        down = up if step_size_down is None else _steps('step_size_down', step_size_down, False, zero_ok=True)
        if scale_fn is None and mode not in ('triangular', 'triangular2', 'exp_range'):
            raise ValueError(f"mode must be 'triangular', 'triangular2' or 'exp_range' (or give a scale_fn), "
                             f'got {mode!r}')
        if scale_mode not in ('cycle', 'iterations'):
            raise ValueError(f"scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}")
        n = len(opt.param_groups)
        base_lrs = _check_lrs('base_lr', _per_group('base_lr', base_lr, n), zero_ok=True)
        self.max_lrs = _check_lrs('max_lr', _per_group('max_lr', max_lr, n))
        self.total_size = float(up + down)
        self.step_ratio = up / self.total_size
        self.mode, self.gamma, self.scale_fn, self.scale_mode = mode, float(gamma), scale_fn, scale_mode
        self.cycle_momentum = _check_momentum(opt, cycle_momentum)
        self.base_moms = _per_group('base_momentum', base_momentum, n)
        self.max_moms = _per_group('max_momentum', max_momentum, n)
        for pg, b in zip(opt.param_groups, base_lrs, strict=True):
            _put(pg, 'lr', b)  # as PyTorch does (so `initial_lr` defaults to base_lr)
        super().__init__(opt, base_lrs)

    def _height(self, step: int) -> tuple[float, float]:
        """Position of `step` on its triangle (0 bottom, 1 top) and the height scale of its cycle."""
        cycle = math.floor(1 + step / self.total_size)
        x = 1.0 + step / self.total_size - cycle
        frac = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        if self.scale_fn is not None:
            return frac, self.scale_fn(cycle if self.scale_mode == 'cycle' else step)
        if self.mode == 'triangular':
            return frac, 1.0
        if self.mode == 'triangular2':
            return frac, 1 / (2.0 ** (cycle - 1))
        return frac, self.gamma**step

    def lrs_at(self, step: int) -> list[float]:
        frac, scale = self._height(step)
        return [b + (m - b) * frac * scale for b, m in zip(self.base_lrs, self.max_lrs, strict=True)]

    def moms_at(self, step: int) -> list[float] | None:
        if not self.cycle_momentum:
            return None
        frac, scale = self._height(step)
        return [m - (m - b) * frac * scale for b, m in zip(self.base_moms, self.max_moms, strict=True)]
