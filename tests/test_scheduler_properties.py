"""Properties of the schedules for random valid arguments (hypothesis)."""

import io
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from miniai.schedulers import CosineAnnealing, CyclicLR, OneCycle, get_mom

SETTINGS = settings(max_examples=50, deadline=None)
TOL = 1e-12  # slack for float rounding, relative to the largest value (e.g. `(end - start) * 1 + start`)
lrs_st = st.lists(st.floats(1e-5, 1.0), min_size=2, max_size=2)


def make_opt(lrs: list[float], adam: bool = False) -> torch.optim.Optimizer:
    groups = [{'params': [torch.zeros(1, requires_grad=True)], 'lr': lr} for lr in lrs]
    return torch.optim.AdamW(groups, betas=(0.9, 0.99)) if adam else torch.optim.SGD(groups, momentum=0.9)


def within(v: float, lo: float, hi: float) -> bool:
    return lo - TOL * hi <= v <= hi * (1 + TOL)


def non_increasing(xs: list[float]) -> bool:
    return all(b <= a + TOL * max(xs) for a, b in zip(xs, xs[1:], strict=False))


def non_decreasing(xs: list[float]) -> bool:
    return non_increasing(xs[::-1])


def opposite(lr: list[float], mom: list[float]) -> bool:
    """From one step to the next, the momentum never moves the same way as the lr (beyond rounding)."""
    el, em = TOL * max(lr, default=0), TOL * max(mom, default=0)
    return not any((l1 - l0 > el and m1 - m0 > em) or (l0 - l1 > el and m0 - m1 > em)
                   for l0, l1, m0, m1 in zip(lr, lr[1:], mom, mom[1:], strict=False))


@SETTINGS
@given(lrs=lrs_st, T_max=st.integers(1, 200), eta_frac=st.floats(0, 0.5))
def test_cosine_bounds_and_monotone(lrs, T_max, eta_frac):
    eta_min = min(lrs) * eta_frac
    sched = CosineAnnealing(make_opt(lrs), T_max=T_max, eta_min=eta_min)
    curve = [sched.lrs_at(s) for s in range(3 * T_max + 1)]
    for g, base in enumerate(lrs):
        xs = [c[g] for c in curve]
        assert all(within(x, eta_min, base) for x in xs)
        assert non_increasing(xs[:T_max + 1])
        assert xs[T_max] == eta_min


onecycle_args = st.fixed_dictionaries(dict(
    total_steps=st.integers(1, 300), pct_start=st.floats(0.01, 0.99), three_phase=st.booleans(),
    anneal_strategy=st.sampled_from(['cos', 'linear']), div_factor=st.floats(1.5, 100),
    final_div_factor=st.floats(1, 1e4),
    base_momentum=st.floats(0.5, 0.85), max_momentum=st.floats(0.86, 0.99)))


def phase_of(sched: OneCycle, step: int) -> int:
    return next((i for i, end in enumerate(sched.ends) if step <= end), len(sched.ends) - 1)


@SETTINGS
@given(max_lr=lrs_st, kw=onecycle_args, adam=st.booleans())
def test_onecycle_bounds_monotone_and_momentum_opposite(max_lr, kw, adam):
    if kw['three_phase']:
        kw['pct_start'] = min(kw['pct_start'], 0.45)  # the warm-up and its mirror must fit in the run
    opt = make_opt([0.1, 0.1], adam)
    sched = OneCycle(opt, max_lr=max_lr, **kw)
    n, ends = kw['total_steps'], sched.ends
    steps = range(n)  # step n (the step() after the last batch) extrapolates past the end, as in PyTorch
    lrs, moms = [sched.lrs_at(s) for s in steps], [sched.moms_at(s) for s in steps]
    for g, mx in enumerate(max_lr):
        lr, mom = [o[g] for o in lrs], [o[g] for o in moms]
        assert all(within(x, mx / kw['div_factor'] / kw['final_div_factor'], mx) for x in lr)
        assert all(within(m, kw['base_momentum'], kw['max_momentum']) for m in mom)
        warm = [x for s, x in zip(steps, lr, strict=True) if s <= ends[0]]
        assert non_decreasing(warm)  # warm-up
        assert non_increasing(lr[len(warm):])  # annealing (both later phases when three_phase)
        for p in range(len(ends)):  # within each phase, momentum moves opposite to the lr
            idx = [s for s in steps if phase_of(sched, s) == p]
            assert opposite([lr[s] for s in idx], [mom[s] for s in idx])
    # step() applies that same formula
    for s in steps:
        if s:
            sched.step()
        assert [pg['lr'] for pg in opt.param_groups] == lrs[s]
        assert [get_mom(pg) for pg in opt.param_groups] == moms[s]


cyclic_args = st.fixed_dictionaries(dict(
    step_size_up=st.integers(1, 40), step_size_down=st.one_of(st.none(), st.integers(1, 40)),
    mode=st.sampled_from(['triangular', 'triangular2', 'exp_range']), gamma=st.floats(0.9, 1.0),
    base_momentum=st.floats(0.5, 0.85), max_momentum=st.floats(0.86, 0.99)))


@SETTINGS
@given(base_lr=lrs_st, ratio=st.floats(1.01, 100), kw=cyclic_args, adam=st.booleans())
def test_cyclic_bounds_and_momentum_opposite(base_lr, ratio, kw, adam):
    max_lr = [b * ratio for b in base_lr]
    sched = CyclicLR(make_opt([0.1, 0.1], adam), base_lr=base_lr, max_lr=max_lr, **kw)
    cycle = kw['step_size_up'] + (kw['step_size_down'] or kw['step_size_up'])
    steps = range(3 * cycle + 1)
    lrs, moms = [sched.lrs_at(s) for s in steps], [sched.moms_at(s) for s in steps]
    for g, (b, m) in enumerate(zip(base_lr, max_lr, strict=True)):
        lr, mom = [o[g] for o in lrs], [o[g] for o in moms]
        assert all(within(x, b, m) for x in lr)
        assert all(within(x, kw['base_momentum'], kw['max_momentum']) for x in mom)
        assert opposite(lr, mom)
    if kw['mode'] == 'triangular':  # the full height is reached at the end of every climb
        top = sched.lrs_at(kw['step_size_up'])
        assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(top, max_lr, strict=True))


SCHEDS = {
    'cosine': lambda opt, n: CosineAnnealing(opt, T_max=max(1, n // 2), eta_min=1e-5),
    'onecycle': lambda opt, n: OneCycle(opt, max_lr=[0.1, 0.05], total_steps=n, three_phase=n % 2 == 0),
    'cyclic': lambda opt, n: CyclicLR(opt, base_lr=0.01, max_lr=[0.1, 0.2], step_size_up=1 + n // 5,
                                      mode='triangular2'),
}


@SETTINGS
@given(name=st.sampled_from(list(SCHEDS)), n=st.integers(2, 80), data=st.data(), adam=st.booleans())
def test_state_dict_round_trip_at_random_step(name, n, data, adam):
    k = data.draw(st.integers(0, n - 1), label='resume at')
    oa = make_opt([0.1, 0.03], adam)
    a = SCHEDS[name](oa, n)
    for _ in range(k):
        a.step()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    ob = make_opt([0.5, 0.5], adam)  # a fresh optimizer, even with other lrs
    b = SCHEDS[name](ob, n)
    sd = torch.load(buf, weights_only=True)
    assert b.changed_args(sd) == {}  # the same arguments: progress and the optimizer's lrs are no argument
    b.load_state_dict(sd)
    for _ in range(k, n):
        assert b.last_epoch == a.last_epoch and b.get_last_lr() == a.get_last_lr()
        assert [(pg['lr'], get_mom(pg)) for pg in ob.param_groups] == \
               [(pg['lr'], get_mom(pg)) for pg in oa.param_groups]
        a.step()
        b.step()
