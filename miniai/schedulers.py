"""Learning-rate and momentum schedulers, written from scratch.

Each schedule is a pure function of the step index (`lrs_at(step)`, `moms_at(step)`); `step()` just applies it.
The values equal `torch.optim.lr_scheduler`'s `CosineAnnealingLR`, `OneCycleLR` and `CyclicLR` at every step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

__all__ = ["Scheduler", "CosineAnnealing", "OneCycle", "CyclicLR", "get_mom", "set_mom"]


def get_mom(pg: dict) -> float | None:
    "Momentum of param group `pg`: `betas[0]` for Adam-family optimizers, else `momentum` (None if it has neither)."
    return pg["betas"][0] if "betas" in pg else pg.get("momentum")


def set_mom(pg: dict, mom: float) -> None:
    "Set the momentum of param group `pg` (first of `betas`, which stays a tuple, or `momentum`)."
    if "betas" in pg:
        pg["betas"] = (float(mom), *pg["betas"][1:])
    elif "momentum" in pg:
        _put(pg, "momentum", mom)
    else:
        raise KeyError("param group has neither `momentum` nor `betas`")


def _put(pg: dict, key: str, v: float) -> None:
    # A tensor hyper-parameter (e.g. a capturable Adam's lr) is filled in place; otherwise store a Python float.
    if isinstance(pg.get(key), Tensor):
        pg[key].fill_(v)
    else:
        pg[key] = float(v)


def _per_group(name: str, v: float | Sequence[float], n: int) -> list[float]:
    "One float per param group from a scalar or a per-group list."
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise ValueError(f"{name} has {len(v)} values but the optimizer has {n} param groups: "
                             f"pass a single number or a list with one value per param group")
        return [float(o) for o in v]
    return [float(v)] * n


def _check_pos(name: str, v: Any, integer: bool = True) -> None:
    if not isinstance(v, int if integer else (int, float)) or isinstance(v, bool) or v <= 0:
        kind = "integer" if integer else "number"
        raise ValueError(f"{name} must be a positive {kind} (a number of steps), got {v!r}")


class Scheduler:
    """Base class: drives the lr (and optionally the momentum) of every param group of `opt`.

    Subclasses define `lrs_at(step)` (and `moms_at(step)`). As in PyTorch, construction applies step 0
    and each `step()` advances `last_epoch` by one."""

    def __init__(self, opt, base_lrs: list[float] | None = None) -> None:
        self.opt = opt
        for pg in opt.param_groups:
            pg.setdefault("initial_lr", float(pg["lr"]))  # like PyTorch: a later scheduler keeps the first base lr
        self.base_lrs = base_lrs or [float(pg["initial_lr"]) for pg in opt.param_groups]
        self.last_epoch = -1
        self.step()

    def lrs_at(self, step: int) -> list[float]:
        "Learning rate of each param group at `step`."
        raise NotImplementedError

    def moms_at(self, step: int) -> list[float] | None:
        "Momentum (or beta1) of each param group at `step`, or None to leave momentum alone."
        return None

    def step(self) -> None:
        lrs, moms = self.lrs_at(self.last_epoch + 1), self.moms_at(self.last_epoch + 1)  # may raise: state untouched
        self.last_epoch += 1
        self._apply(lrs, moms)

    def _apply(self, lrs: list[float], moms: list[float] | None) -> None:
        for i, pg in enumerate(self.opt.param_groups):
            _put(pg, "lr", lrs[i])
            if moms is not None:
                set_mom(pg, moms[i])

    def get_last_lr(self) -> list[float]:
        return self.lrs_at(self.last_epoch)

    def _need_momentum(self, cycle_momentum: bool) -> bool:
        if cycle_momentum and not all("betas" in pg or "momentum" in pg for pg in self.opt.param_groups):
            raise ValueError(f"cycle_momentum=True but {type(self.opt).__name__} has neither `momentum` nor `betas`: "
                             "pass cycle_momentum=False, or use an optimizer with momentum (SGD, RMSprop, Adam...)")
        return cycle_momentum

    def state_dict(self) -> dict[str, Any]:
        "Plain Python values only (safe for `torch.load(weights_only=True)`); callables such as `scale_fn` are left out."
        return copy.deepcopy({k: v for k, v in vars(self).items() if k != "opt" and not callable(v)})

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        "Restore `sd` and re-apply the schedule at its `last_epoch`, so the run continues exactly."
        if len(sd["base_lrs"]) != len(self.opt.param_groups):
            raise ValueError(f"state_dict is for {len(sd['base_lrs'])} param groups but the optimizer has "
                             f"{len(self.opt.param_groups)}: load it into a scheduler on a matching optimizer")
        vars(self).update(copy.deepcopy(sd))
        self._apply(self.lrs_at(self.last_epoch), self.moms_at(self.last_epoch))


class CosineAnnealing(Scheduler):
    "Half a cosine from each group's initial lr down to `eta_min` at `T_max`; past `T_max` it comes back up."

    def __init__(self, opt, T_max: int, eta_min: float = 0.0) -> None:
        _check_pos("T_max", T_max, integer=False)
        self.T_max, self.eta_min = T_max, float(eta_min)
        super().__init__(opt)

    def lrs_at(self, step: int) -> list[float]:
        # Closed form; PyTorch's recursive update agrees to ~1e-11 relative (checked in the tests).
        return [self.eta_min + (b - self.eta_min) * (1 + math.cos(math.pi * step / self.T_max)) / 2
                for b in self.base_lrs]


class OneCycle(Scheduler):
    """1cycle: warm up from `max_lr/div_factor` to `max_lr` over `pct_start` of the steps, then anneal down to
    `max_lr/div_factor/final_div_factor`; momentum moves the opposite way. `three_phase` comes back down to
    the initial lr symmetrically before the final anneal."""

    def __init__(self, opt, max_lr: float | Sequence[float], total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float | Sequence[float] = 0.85, max_momentum: float | Sequence[float] = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False) -> None:
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycle needs the length of the schedule: pass total_steps, or epochs and "
                                 "steps_per_epoch")
            _check_pos("epochs", epochs)
            _check_pos("steps_per_epoch", steps_per_epoch)
            total_steps = epochs * steps_per_epoch
        _check_pos("total_steps", total_steps)
        if not 0 < pct_start < 1:
            raise ValueError(f"pct_start is the fraction of steps spent warming up: it must be in (0, 1), got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        n = len(opt.param_groups)
        self.max_lrs = _per_group("max_lr", max_lr, n)
        self.total_steps, self.pct_start, self.anneal_strategy = total_steps, float(pct_start), anneal_strategy
        self.div_factor, self.final_div_factor, self.three_phase = float(div_factor), float(final_div_factor), three_phase
        # Same expressions as PyTorch, so the phase boundaries round identically.
        self._ends = [float(pct_start * total_steps) - 1, total_steps - 1]
        if three_phase:
            self._ends.insert(1, float(2 * pct_start * total_steps) - 2)
        self.cycle_momentum = self._need_momentum(cycle_momentum)
        self.base_moms = _per_group("base_momentum", base_momentum, n)
        self.max_moms = _per_group("max_momentum", max_momentum, n)
        for pg, mx in zip(opt.param_groups, self.max_lrs, strict=True):
            pg["initial_lr"] = mx / self.div_factor  # as PyTorch does
        super().__init__(opt, [mx / self.div_factor for mx in self.max_lrs])

    def _phase(self, step: int) -> tuple[int, float]:
        "Which phase `step` is in, and how far through it (0 to 1)."
        if step > self.total_steps:
            raise ValueError(f"OneCycle was stepped to step {step} but total_steps is {self.total_steps}: the "
                             "schedule is over; create the scheduler with more total_steps (or epochs)")
        # Like PyTorch, step == total_steps is allowed and extrapolates one step past the final phase.
        start = 0.0
        for i, end in enumerate(self._ends):
            if step <= end or i == len(self._ends) - 1:
                return i, (step - start) / (end - start) if end != start else 1.0  # PyTorch divides by 0 here
            start = end
        raise AssertionError  # unreachable

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def lrs_at(self, step: int) -> list[float]:
        i, pct = self._phase(step)
        res = []
        for mx in self.max_lrs:
            lo = mx / self.div_factor
            pts = [lo, mx, lo, lo / self.final_div_factor] if self.three_phase else [lo, mx, lo / self.final_div_factor]
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
    """Triangles between `base_lr` and `max_lr`: up over `step_size_up` steps, down over `step_size_down`;
    `triangular2` halves the height every cycle, `exp_range` scales it by `gamma**step`. Momentum moves the
    opposite way, between `max_momentum` and `base_momentum`."""

    def __init__(self, opt, base_lr: float | Sequence[float], max_lr: float | Sequence[float],
                 step_size_up: int, step_size_down: int | None = None, mode: str = "triangular",
                 gamma: float = 1.0, cycle_momentum: bool = True,
                 base_momentum: float | Sequence[float] = 0.8, max_momentum: float | Sequence[float] = 0.9,
                 scale_fn: Callable[[float], float] | None = None, scale_mode: str = "cycle") -> None:
        _check_pos("step_size_up", step_size_up, integer=False)
        if step_size_down is not None and (not isinstance(step_size_down, (int, float)) or step_size_down < 0):
            raise ValueError(f"step_size_down must be a non-negative number of steps (or None), got {step_size_down!r}")
        if scale_fn is None and mode not in ("triangular", "triangular2", "exp_range"):
            raise ValueError(f"mode must be 'triangular', 'triangular2' or 'exp_range' (or pass scale_fn), got {mode!r}")
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}")
        n = len(opt.param_groups)
        base_lrs, self.max_lrs = _per_group("base_lr", base_lr, n), _per_group("max_lr", max_lr, n)
        up = float(step_size_up)
        self.total_size = up + (float(step_size_down) if step_size_down is not None else up)
        self.step_ratio = up / self.total_size
        self.mode, self.gamma, self.scale_fn, self.scale_mode = mode, float(gamma), scale_fn, scale_mode
        self.cycle_momentum = self._need_momentum(cycle_momentum)
        self.base_moms = _per_group("base_momentum", base_momentum, n)
        self.max_moms = _per_group("max_momentum", max_momentum, n)
        for pg, b in zip(opt.param_groups, base_lrs, strict=True):
            pg["lr"] = b  # as PyTorch does, so `initial_lr` defaults to base_lr
        super().__init__(opt, base_lrs)

    def _height(self, step: int) -> float:
        "Fraction (0 to 1) of the way from the bottom to the top of the (scaled) triangle at `step`."
        cycle = math.floor(1 + step / self.total_size)
        x = 1.0 + step / self.total_size - cycle
        frac = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        if self.scale_fn is not None:
            scale = self.scale_fn(cycle if self.scale_mode == "cycle" else step)
        elif self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = 1 / (2.0 ** (cycle - 1))
        else:
            scale = self.gamma**step
        return frac, scale

    def lrs_at(self, step: int) -> list[float]:
        frac, scale = self._height(step)
        return [b + (m - b) * frac * scale for b, m in zip(self.base_lrs, self.max_lrs, strict=True)]

    def moms_at(self, step: int) -> list[float] | None:
        if not self.cycle_momentum:
            return None
        frac, scale = self._height(step)
        return [m - (m - b) * frac * scale for b, m in zip(self.base_moms, self.max_moms, strict=True)]
