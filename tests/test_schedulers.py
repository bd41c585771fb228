"""Our schedulers side by side with `torch.optim.lr_scheduler`; state_dict, value types, argument errors."""

import io
import math
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as tsched

from miniai.schedulers import CosineAnnealing, CyclicLR, OneCycle, Scheduler, get_mom, set_mom

BETA2 = (0.99, 0.95)  # AdamW's per-group second betas, which the schedulers must leave alone


def make_opt(kind: str = 'sgd') -> torch.optim.Optimizer:
    """A two-layer model with 2 param groups with different lrs (and, for AdamW, different betas)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    if kind == 'sgd':
        return torch.optim.SGD([{'params': m[0].parameters(), 'lr': 0.1},
                                {'params': m[1].parameters(), 'lr': 0.03}], lr=0.1, momentum=0.9)
    if kind == 'adamw':
        return torch.optim.AdamW([{'params': m[0].parameters(), 'lr': 3e-3, 'betas': (0.9, BETA2[0])},
                                  {'params': m[1].parameters(), 'lr': 1e-3, 'betas': (0.8, BETA2[1])}])
    return torch.optim.Adagrad(m.parameters(), lr=0.01)


def hypers(opt: torch.optim.Optimizer) -> list[dict]:
    return [{k: v for k, v in pg.items() if k != 'params'} for pg in opt.param_groups]


def close(a: float, b: float) -> bool: return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def check_same(ours: Scheduler, ref: tsched.LRScheduler) -> None:
    """Every lr and momentum/beta1 within 1e-9 relative of PyTorch's; beta2 untouched; all Python floats."""
    assert ours.last_epoch == ref.last_epoch
    assert all(type(v) is float for v in ours.get_last_lr())
    assert all(close(a, b) for a, b in zip(ours.get_last_lr(), ref.get_last_lr(), strict=True))
    assert ours.get_last_lr() == ours.lrs_at(ours.last_epoch)
    for i, (pa, pb) in enumerate(zip(ours.opt.param_groups, ref.optimizer.param_groups, strict=True)):
        assert type(pa['lr']) is float and close(pa['lr'], pb['lr']), (ours.last_epoch, i, pa['lr'], pb['lr'])
        assert type(get_mom(pa)) is float and close(get_mom(pa), get_mom(pb)), (ours.last_epoch, i)
        if 'betas' in pa:
            assert isinstance(pa['betas'], tuple) and all(type(b) is float for b in pa['betas'])
            assert pa['betas'][1] == pb['betas'][1] == BETA2[i]


# name: (ours, PyTorch's, number of step() calls after construction)
CASES = {
    'cosine': (partial(CosineAnnealing, T_max=50), partial(tsched.CosineAnnealingLR, T_max=50), 150),
    'cosine_odd_eta_min': (partial(CosineAnnealing, T_max=7, eta_min=1e-4),
                           partial(tsched.CosineAnnealingLR, T_max=7, eta_min=1e-4), 21),
    # PyTorch's step() is recursive: within 2e-14 relative of our closed form here (~1e-11 at T_max=1e4).
    # OneCycle and CyclicLR use PyTorch's own expressions and come out bit-identical in 2.14.
    'cosine_long': (partial(CosineAnnealing, T_max=400, eta_min=1e-5),
                    partial(tsched.CosineAnnealingLR, T_max=400, eta_min=1e-5), 1200),
}
ONECYCLE = {
    'onecycle_cos': dict(max_lr=[0.1, 0.03], total_steps=60),
    'onecycle_linear': dict(max_lr=0.05, epochs=4, steps_per_epoch=15, pct_start=0.25,
                            anneal_strategy='linear'),
    'onecycle_three_phase': dict(max_lr=[0.1, 0.03], total_steps=50, three_phase=True,
                                 base_momentum=[0.8, 0.85], max_momentum=[0.9, 0.95]),
    'onecycle_three_phase_linear': dict(max_lr=0.1, total_steps=37, pct_start=0.35, three_phase=True,
                                        anneal_strategy='linear', div_factor=10., final_div_factor=100.),
    'onecycle_no_momentum': dict(max_lr=0.1, total_steps=20, cycle_momentum=False),
}
CYCLIC = {
    'cyclic_triangular': dict(base_lr=[0.01, 0.003], max_lr=[0.1, 0.03], step_size_up=5),
    'cyclic_triangular2': dict(base_lr=0.001, max_lr=0.1, step_size_up=4, mode='triangular2'),
    'cyclic_exp_range': dict(base_lr=0.001, max_lr=[0.1, 0.05], step_size_up=6, mode='exp_range', gamma=0.97,
                             base_momentum=[0.8, 0.85], max_momentum=[0.9, 0.95]),
    'cyclic_step_size_down': dict(base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=7,
                                  mode='triangular2'),
    'cyclic_no_momentum': dict(base_lr=0.01, max_lr=0.1, step_size_up=5, cycle_momentum=False),
    'cyclic_scale_fn': dict(base_lr=0.01, max_lr=0.1, step_size_up=5, scale_fn=lambda x: 1 / (1 + 0.1 * x),
                            scale_mode='iterations'),
}


def _total(kw):
    return kw.get('total_steps') or kw['epochs'] * kw['steps_per_epoch']


CASES.update({k: (partial(OneCycle, **kw), partial(tsched.OneCycleLR, **kw), _total(kw))
              for k, kw in ONECYCLE.items()})
CASES.update({k: (partial(CyclicLR, **kw), partial(tsched.CyclicLR, **kw), 45) for k, kw in CYCLIC.items()})


@pytest.mark.parametrize('kind', ['sgd', 'adamw'])
@pytest.mark.parametrize('case', CASES)
def test_same_as_pytorch(case, kind):
    ours_fn, ref_fn, n = CASES[case]
    oa, ob = make_opt(kind), make_opt(kind)
    ours, ref = ours_fn(oa), ref_fn(ob)
    check_same(ours, ref)
    for _ in range(n):  # the whole run: for OneCycle, all total_steps steps PyTorch allows
        for o in (oa, ob, ours, ref):
            o.step()
        check_same(ours, ref)


def test_cyclic_with_adam_cycles_beta1():
    # PyTorch 2.14's CyclicLR cycles Adam's beta1 (older versions refused any optimizer without `momentum`).
    opt = make_opt('adamw')
    sched = CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=2)
    assert [pg['betas'] for pg in opt.param_groups] == [(0.9, BETA2[0]), (0.9, BETA2[1])]
    sched.step()
    assert [pg['betas'] for pg in opt.param_groups] == [(pytest.approx(0.85), b2) for b2 in BETA2]


@pytest.mark.parametrize('three_phase', [False, True])
@pytest.mark.parametrize('total', [1, 7, 20])
def test_onecycle_past_the_end(total, three_phase):
    """PyTorch allows exactly total_steps step() calls (the last one extrapolates past the final lr)."""
    def allowed(sched, opt):
        n = 0
        with pytest.raises(ValueError) as e:
            while n < total + 5:
                opt.step()
                sched.step()
                n += 1
        return n, e

    ob, oa = make_opt(), make_opt()
    n_ref, _ = allowed(tsched.OneCycleLR(ob, max_lr=0.1, total_steps=total, three_phase=three_phase), ob)
    ours = OneCycle(oa, max_lr=0.1, total_steps=total, three_phase=three_phase)
    n_ours, e = allowed(ours, oa)
    assert n_ours == n_ref == total
    assert 'total_steps' in str(e.value)
    assert ours.last_epoch == total  # a refused step leaves the state alone


def test_onecycle_last_step_extrapolates_like_pytorch():
    # The step() after the last batch goes one step past the end: with 'linear' the lr becomes negative.
    ob = make_opt()
    ref = tsched.OneCycleLR(ob, max_lr=1.0, total_steps=10, anneal_strategy='linear')
    ours = OneCycle(make_opt(), max_lr=1.0, total_steps=10, anneal_strategy='linear')
    for _ in range(10):
        for o in (ob, ref, ours):
            o.step()
    assert ours.get_last_lr() == ref.get_last_lr() and ours.get_last_lr()[0] < 0


SCHEDS = {
    'cosine': partial(CosineAnnealing, T_max=10, eta_min=1e-4),
    'onecycle': partial(OneCycle, max_lr=[0.1, 0.03], total_steps=30, three_phase=True),
    'cyclic': partial(CyclicLR, base_lr=[0.01, 0.003], max_lr=0.1, step_size_up=4, step_size_down=3,
                      mode='exp_range', gamma=0.9),
}


@pytest.mark.parametrize('kind', ['sgd', 'adamw'])
@pytest.mark.parametrize('name', SCHEDS)
def test_state_dict_round_trip(name, kind):
    oa = make_opt(kind)
    a = SCHEDS[name](oa)
    for _ in range(13):
        a.step()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    ob = make_opt(kind)
    for pg in ob.param_groups:
        pg['lr'] = 123.0  # whatever the new optimizer starts with, the loaded state wins
    b = SCHEDS[name](ob)
    b.load_state_dict(sd)
    assert b.last_epoch == a.last_epoch == 13
    for _ in range(15):  # identical lrs, momentums, betas and initial_lrs from the moment it is loaded
        assert hypers(ob) == hypers(oa)
        assert a.get_last_lr() == b.get_last_lr()
        a.step()
        b.step()


def test_state_dict_is_plain_python_and_a_copy():
    sched = OneCycle(make_opt(), max_lr=0.1, total_steps=10)
    sd = sched.state_dict()
    sd['max_lrs'][0] = 99.0
    assert sched.max_lrs[0] == 0.1

    def plain(v):
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(o) for k, o in v.items())
        if isinstance(v, (list, tuple)):
            return all(plain(o) for o in v)
        return v is None or isinstance(v, (bool, int, float, str))
    assert plain(sd)


def test_load_state_dict_wrong_number_of_groups():
    sd = CosineAnnealing(make_opt(), T_max=5).state_dict()
    one_group = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match='param groups'):
        CosineAnnealing(one_group, T_max=5).load_state_dict(sd)


def test_values_are_python_floats():
    opt = make_opt('adamw')
    sched = OneCycle(opt, max_lr=torch.tensor(0.1), total_steps=10, base_momentum=torch.tensor(0.85))
    sched.step()
    for pg in opt.param_groups:
        assert type(pg['lr']) is float and type(pg['initial_lr']) is float
        assert isinstance(pg['betas'], tuple) and all(type(b) is float for b in pg['betas'])
    assert all(type(v) is float for v in sched.get_last_lr())
    opt = make_opt()
    sched = CyclicLR(opt, base_lr=[torch.tensor(0.01), 0.02], max_lr=0.1, step_size_up=3)
    sched.step()
    assert all(type(pg['lr']) is float and type(pg['momentum']) is float for pg in opt.param_groups)


def test_get_mom_set_mom():
    sgd, adamw = make_opt('sgd'), make_opt('adamw')
    assert get_mom(sgd.param_groups[0]) == 0.9 and get_mom(adamw.param_groups[1]) == 0.8
    set_mom(sgd.param_groups[0], 0.5)
    set_mom(adamw.param_groups[1], 0.7)
    assert sgd.param_groups[0]['momentum'] == 0.5 and adamw.param_groups[1]['betas'] == (0.7, BETA2[1])
    assert get_mom(make_opt('adagrad').param_groups[0]) is None


def article_one_cycle(step: int, T_max: int, min_lr: float, lr: float) -> float:
    """The first article's hand-written OneCycle: linear from `min_lr` to `lr` at T_max/2, back at T_max."""
    half = T_max / 2
    return min_lr + (lr - min_lr) * (1 - abs(step - half) / half)


@pytest.mark.parametrize('T_max', [2, 20, 64])
def test_cyclic_is_the_first_articles_one_cycle(T_max):
    opt = make_opt()
    lrs = [pg['lr'] for pg in opt.param_groups]
    min_lr = 1e-3
    sched = CyclicLR(opt, base_lr=min_lr, max_lr=lrs, step_size_up=T_max // 2, cycle_momentum=False)
    for step in range(T_max + 1):
        if step:
            sched.step()
        for pg, lr in zip(opt.param_groups, lrs, strict=True):
            assert math.isclose(pg['lr'], article_one_cycle(step, T_max, min_lr, lr), rel_tol=1e-12)
            assert pg['momentum'] == 0.9  # cycle_momentum=False leaves momentum alone


def _raises(fn, name, kind='sgd'):
    opt = make_opt(kind)
    before = [dict(pg) for pg in opt.param_groups]
    with pytest.raises(ValueError, match=name):
        fn(opt)
    assert [dict(pg) for pg in opt.param_groups] == before  # a refused scheduler changes nothing


ERRORS = [
    (partial(CosineAnnealing, T_max=0), 'T_max'),
    (partial(CosineAnnealing, T_max=-5), 'T_max'),
    (partial(OneCycle, max_lr=0.1, total_steps=0), 'total_steps'),
    (partial(OneCycle, max_lr=0.1, total_steps=-3), 'total_steps'),
    (partial(OneCycle, max_lr=0.1, total_steps=2.5), 'total_steps'),
    (partial(OneCycle, max_lr=0.1), 'total_steps'),
    (partial(OneCycle, max_lr=0.1, epochs=3), 'steps_per_epoch'),
    (partial(OneCycle, max_lr=0.1, epochs=0, steps_per_epoch=10), 'epochs'),
    (partial(OneCycle, max_lr=0.1, epochs=2, steps_per_epoch=0), 'steps_per_epoch'),
    (partial(OneCycle, max_lr=0.1, total_steps=10, pct_start=0.), 'pct_start'),
    (partial(OneCycle, max_lr=0.1, total_steps=10, pct_start=1.), 'pct_start'),
    (partial(OneCycle, max_lr=0.1, total_steps=10, pct_start=1.5), 'pct_start'),
    (partial(OneCycle, max_lr=0.1, total_steps=10, anneal_strategy='exp'), 'anneal_strategy'),
    (partial(OneCycle, max_lr=[0.1, 0.2, 0.3], total_steps=10), 'max_lr'),
    (partial(OneCycle, max_lr=0.1, total_steps=10, base_momentum=[0.8]), 'base_momentum'),
    (partial(OneCycle, max_lr=0.1, total_steps=10, max_momentum=[0.9, 0.9, 0.9]), 'max_momentum'),
    (partial(CyclicLR, base_lr=0.01, max_lr=0.1, step_size_up=0), 'step_size_up'),
    (partial(CyclicLR, base_lr=0.01, max_lr=0.1, step_size_up=-2), 'step_size_up'),
    (partial(CyclicLR, base_lr=0.01, max_lr=0.1, step_size_up=2, step_size_down=-1), 'step_size_down'),
    (partial(CyclicLR, base_lr=0.01, max_lr=0.1, step_size_up=2, mode='triangle'), 'mode'),
    (partial(CyclicLR, base_lr=0.01, max_lr=0.1, step_size_up=2, scale_fn=abs, scale_mode='x'), 'scale_mode'),
    (partial(CyclicLR, base_lr=[0.01], max_lr=0.1, step_size_up=2), 'base_lr'),
    (partial(CyclicLR, base_lr=0.01, max_lr=(0.1, 0.1, 0.1), step_size_up=2), 'max_lr'),
    (partial(CyclicLR, base_lr=0.01, max_lr=0.1, step_size_up=2, base_momentum=[0.8]), 'base_momentum'),
    (partial(OneCycle, max_lr=-0.1, total_steps=10), 'max_lr is a learning rate: it must be positive, got -0.1'),
    (partial(OneCycle, max_lr=0., total_steps=10), 'max_lr is a learning rate'),
    (partial(OneCycle, max_lr=[0.1, math.nan], total_steps=10), r'max_lr .* got \[0.1, nan\]'),
    (partial(CyclicLR, base_lr=-0.01, max_lr=0.1, step_size_up=2), 'base_lr .* must be 0 or more'),
    (partial(CyclicLR, base_lr=0.01, max_lr=-0.1, step_size_up=2), 'max_lr .* must be positive'),
    (partial(OneCycle, max_lr=0.1, total_steps=10, div_factor=-25), 'div_factor .* positive number, got -25'),
    (partial(OneCycle, max_lr=0.1, total_steps=10, div_factor=0), 'div_factor'),
    (partial(OneCycle, max_lr=0.1, total_steps=10, div_factor=math.inf), 'div_factor'),
    (partial(OneCycle, max_lr=0.1, total_steps=10, final_div_factor=0), 'final_div_factor'),
    (partial(OneCycle, max_lr=0.1, total_steps=10, final_div_factor=math.nan), 'final_div_factor'),
    (partial(CosineAnnealing, T_max=2, eta_min=-0.5), 'eta_min .* must be 0 or more, got -0.5'),
    (partial(CosineAnnealing, T_max=2, eta_min=math.nan), 'eta_min .* got nan'),
    (partial(CosineAnnealing, T_max=True), 'T_max .* got True of type bool'),
    (partial(OneCycle, max_lr=0.1, total_steps=10.0), r'total_steps .*integer\), got 10.0 of type float'),
    (partial(OneCycle, max_lr=np.full((2, 1), 0.1), total_steps=10), 'max_lr is a 2-d array'),
    (partial(OneCycle, max_lr=np.array([0.1, 0.2, 0.3]), total_steps=10), 'max_lr has 3 values'),
    (partial(OneCycle, max_lr=0.1, total_steps=10, pct_start=0.7, three_phase=True),
     r'pct_start=0.7 \(over 0.5\) it never anneals'),
]


@pytest.mark.parametrize('fn,name', ERRORS, ids=[f'{i}-{n}' for i, (_, n) in enumerate(ERRORS)])
def test_argument_errors(fn, name):
    _raises(fn, name)


@pytest.mark.parametrize('fn', [partial(OneCycle, max_lr=0.1, total_steps=10),
                                partial(CyclicLR, base_lr=0.01, max_lr=0.1, step_size_up=2)])
def test_cycle_momentum_needs_momentum(fn):
    _raises(fn, 'cycle_momentum', kind='adagrad')
    fn(make_opt('adagrad'), cycle_momentum=False).step()  # fine without momentum
    with pytest.raises(ValueError):  # PyTorch refuses it too
        {OneCycle: tsched.OneCycleLR, CyclicLR: tsched.CyclicLR}[fn.func](make_opt('adagrad'), **fn.keywords)


def test_onecycle_one_step_warmup():
    # pct_start * total_steps == 1: a warm-up of length 0, where PyTorch divides by zero; ours is at max_lr.
    with pytest.raises(ZeroDivisionError):
        tsched.OneCycleLR(make_opt(), max_lr=0.1, total_steps=10, pct_start=0.1)
    sched = OneCycle(make_opt(), max_lr=0.1, total_steps=10, pct_start=0.1)
    lrs = [sched.lrs_at(i)[0] for i in range(10)]
    assert lrs[0] == 0.1 and lrs == sorted(lrs, reverse=True)


def test_onecycle_zero_length_three_phase_phase():
    # pct_start * total_steps == 1 with three_phase: both the warm-up and its mirror have length 0.
    with pytest.raises(ZeroDivisionError):
        tsched.OneCycleLR(make_opt(), max_lr=0.1, total_steps=10, pct_start=0.1, three_phase=True)
    sched = OneCycle(make_opt(), max_lr=0.1, total_steps=10, pct_start=0.1, three_phase=True)
    lrs = [sched.lrs_at(i)[0] for i in range(10)]
    assert lrs[0] == 0.1 and lrs == sorted(lrs, reverse=True) and lrs[-1] == 0.1 / 25 / 1e4


def test_onecycle_three_phase_pct_start_half_anneals():
    sched = OneCycle(make_opt(), max_lr=0.1, total_steps=10, pct_start=0.5, three_phase=True)
    assert sched.lrs_at(9)[0] == 0.1 / 25 / 1e4  # the largest pct_start allowed still reaches the final lr


def test_cosine_after_another_scheduler_restarts_from_initial_lr():
    opt = make_opt()
    step_lr = tsched.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    step_lr.step()  # lr halved; initial_lr kept
    ours = CosineAnnealing(opt, T_max=10)
    assert ours.get_last_lr() == [0.1, 0.03]  # from initial_lr; PyTorch's recursive form would go on from 0.05


def test_numpy_step_counts_are_python_numbers():
    """NumPy integers (e.g. from len(np.arange(...))) count steps like Python ints, and the state stays plain."""
    for sched, kw in [(CosineAnnealing, dict(T_max=5)), (OneCycle, dict(max_lr=0.1, total_steps=10)),
                      (OneCycle, dict(max_lr=0.1, epochs=2, steps_per_epoch=5)),
                      (CyclicLR, dict(base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=2))]:
        np_kw = {k: np.int64(v) if isinstance(v, int) else v for k, v in kw.items()}
        a, b = sched(make_opt(), **kw), sched(make_opt(), **np_kw)
        assert a.state_dict() == b.state_dict()
        buf = io.BytesIO()
        torch.save(b.state_dict(), buf)
        buf.seek(0)
        assert torch.load(buf, weights_only=True) == a.state_dict()
        for _ in range(5):
            a.step()
            b.step()
            assert a.get_last_lr() == b.get_last_lr()


def test_per_group_values_from_a_1d_array():
    ref = OneCycle(make_opt(), max_lr=[0.1, 0.03], total_steps=10, base_momentum=[0.8, 0.85])
    for arr in (np.array, partial(torch.tensor, dtype=torch.float64)):
        sched = OneCycle(make_opt(), max_lr=arr([0.1, 0.03]), total_steps=10, base_momentum=arr([0.8, 0.85]))
        assert sched.state_dict() == ref.state_dict()
        buf = io.BytesIO()  # plain floats (not NumPy or tensor scalars), which checkpoints read back
        torch.save(sched.state_dict(), buf)
        buf.seek(0)
        assert torch.load(buf, weights_only=True) == ref.state_dict()
    sched = CyclicLR(make_opt(), base_lr=np.array([0.01, 0.003]), max_lr=np.float64(0.1), step_size_up=3)
    assert sched.base_lrs == [0.01, 0.003] and sched.max_lrs == [0.1, 0.1]
    assert {type(v) for v in (*sched.base_lrs, *sched.max_lrs)} == {float}


# name: (scheduler, its arguments, {argument: another value})
ARGS = {
    'cosine': (CosineAnnealing, dict(T_max=10, eta_min=1e-5), dict(T_max=11, eta_min=2e-5)),
    'onecycle': (OneCycle, dict(max_lr=[0.1, 0.05], total_steps=20),
                 dict(max_lr=[0.1, 0.06], total_steps=21, pct_start=0.4, anneal_strategy='linear', div_factor=10.,
                      final_div_factor=100., three_phase=True, cycle_momentum=False, base_momentum=0.8,
                      max_momentum=0.9)),
    'cyclic': (CyclicLR, dict(base_lr=0.01, max_lr=[0.1, 0.2], step_size_up=3),
               dict(base_lr=0.02, max_lr=0.1, step_size_up=6, step_size_down=1, mode='triangular2', gamma=0.9,
                    scale_mode='iterations', cycle_momentum=False, base_momentum=0.7, max_momentum=0.95)),
}


@pytest.mark.parametrize('name', ARGS)
def test_changed_args_names_each_argument_not_the_progress(name):
    sched, kw, others = ARGS[name]
    saved = sched(make_opt(), **kw)
    for _ in range(4):
        saved.step()
    opt = make_opt()
    for pg in opt.param_groups:
        pg['lr'] = 0.5  # the optimizer's lr (cosine's base_lrs) is not an argument: a resume restores it
    assert sched(opt, **kw).changed_args(saved.state_dict()) == {}
    for k, v in others.items():
        changed = sched(make_opt(), **{**kw, k: v}).changed_args(saved.state_dict())
        if k.startswith('step_size'):  # saved as the cycle's length and the rising part of it
            assert 'step_size_up + step_size_down' in changed, k
        else:
            assert list(changed) == [k] and changed[k][0] != changed[k][1], k
    sd = saved.state_dict()
    del sd[next(iter(sched._args))]  # a key an older state lacks is skipped
    assert sched(make_opt(), **{**kw, **dict(list(others.items())[:1])}).changed_args(sd) == {}
