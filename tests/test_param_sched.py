"""Schedule functions, `combine_scheds`, `ParamScheduler` (against OneCycle exactly) and `fit_one_cycle`."""

import math
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from miniai.checkpoint import CheckpointCB, load_checkpoint
from miniai.learner import Callback, CancelBatchException, CancelFitException, Learner, TrainLearner
from miniai.param_sched import (
    _MOMS,
    ParamScheduler,
    _one_cycle,
    combine_scheds,
    fit_one_cycle,
    sched_cos,
    sched_exp,
    sched_lin,
    sched_no,
)
from miniai.schedulers import OneCycle

SGD = partial(optim.SGD, momentum=0.9)


pytestmark = pytest.mark.usefixtures('one_thread')


def tiny_dls(n=40, bs=8):
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g))
    return SimpleNamespace(train=DataLoader(ds, bs), valid=DataLoader(ds, bs))


def two_groups(model): return [{'params': model[0].parameters()}, {'params': model[1].parameters()}]


def make_learner(opt_func=SGD, splitter=None, n=40):
    torch.manual_seed(0)
    return TrainLearner(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3)), tiny_dls(n), F.cross_entropy, lr=0.1,
                        opt_func=opt_func, splitter=splitter)


class GroupsRec(Callback):
    """Records every param group's hyperparameters at each step (the values the step used)."""
    def before_fit(self, learn): self.recs = []

    def after_step(self, learn):
        self.recs.append([{k: v for k, v in pg.items() if k != 'params'} for pg in learn.opt.param_groups])


def test_sched_functions_endpoints_and_midpoints():
    assert [sched_lin(1, 3)(p) for p in (0, 0.5, 1)] == [1, 2, 3]
    cos = sched_cos(1, 3)
    assert (cos(0), cos(0.5), cos(1)) == pytest.approx((1, 2, 3))
    assert cos(0.25) == pytest.approx(2 - math.sqrt(2) / 2)  # slow start: below the straight line
    assert sched_cos(1e-3, 1e-2)(0.5) == pytest.approx(5.5e-3)
    assert [sched_exp(1, 100)(p) for p in (0, 0.5, 1)] == pytest.approx([1, 10, 100])
    assert [sched_no(1, 3)(p) for p in (0, 0.5, 1)] == [1, 1, 1]


def test_combine_scheds_pieces():
    f = combine_scheds([0.3, 0.7], [sched_lin(0, 1), sched_lin(1, 0)])
    assert [f(p) for p in (0, 0.15, 0.3, 0.65, 1)] == pytest.approx([0, 0.5, 1, 0.5, 0])
    g = combine_scheds([0.5, 0.5], [sched_no(2, 2), sched_lin(1, 0)])
    assert (g(0.49), g(0.5), g(1)) == pytest.approx((2, 1, 0))  # a boundary belongs to the later piece
    assert combine_scheds([0.1] * 10, [sched_no(i, i) for i in range(10)])(0.95) == 9  # sum 0.999...9: fine


@pytest.mark.parametrize('pcts,n,msg', [([0.5, 0.5], 3, 'one fraction per schedule'), ([], 0, 'positive'),
                                        ([1.2, -0.2], 2, 'positive'), ([0.5, 0.4], 2, 'sum to 1'),
                                        ([math.nan, 1.], 2, 'positive'), ([math.inf, 1.], 2, 'positive')])
def test_combine_scheds_validates_pcts(pcts, n, msg):
    with pytest.raises(ValueError, match=msg) as e:
        combine_scheds(pcts, [sched_no(1, 1)] * n)
    assert 'pcts' in str(e.value)


@pytest.mark.parametrize('start,end', [(0., 1e-2), (1e-3, -1e-2), (math.nan, 1.), (1., math.inf)])
def test_sched_exp_needs_positive_ends_when_built(start, end):
    with pytest.raises(ValueError, match='sched_exp .* must be positive'):
        sched_exp(start, end)


def matching_one_cycle(total, pct_start=0.3, max_lr=0.1, div=25., div_final=1e4, moms=(0.95, 0.85)):
    """ParamScheduler args reproducing `OneCycle`/`OneCycleLR`: their warm-up ends at step
    `pct_start*total - 1` of `total - 1`, so that is the first piece's fraction, and `endpoint=True` puts step
    i at i/(total-1)."""
    pcts = [(pct_start * total - 1) / (total - 1), (total - pct_start * total) / (total - 1)]
    lr = combine_scheds(pcts, [sched_cos(max_lr / div, max_lr), sched_cos(max_lr, max_lr / div / div_final)])
    mom = combine_scheds(pcts, [sched_cos(moms[0], moms[1]), sched_cos(moms[1], moms[0])])
    return ParamScheduler({'lr': lr, 'mom': mom}, endpoint=True)


def reference_curve(sched_cls, opt, total):
    sched, lrs, moms = sched_cls(opt, max_lr=0.1, total_steps=total), [], []
    for _ in range(total):
        pg = opt.param_groups[0]
        lrs.append(pg['lr'])
        moms.append(pg['betas'][0] if 'betas' in pg else pg['momentum'])
        opt.step()
        sched.step()
    return lrs, moms


@pytest.mark.parametrize('sched_cls', [OneCycle, optim.lr_scheduler.OneCycleLR])
@pytest.mark.parametrize('opt_func', [SGD, optim.AdamW])
@pytest.mark.parametrize('n_batches', [10, 37])
def test_param_scheduler_reproduces_one_cycle_exactly(sched_cls, opt_func, n_batches):
    learn, rec = make_learner(opt_func, n=8 * n_batches), GroupsRec()
    learn.fit(1, valid=False, cbs=[matching_one_cycle(n_batches), rec])
    ref_opt = opt_func([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref_lrs, ref_moms = reference_curve(sched_cls, ref_opt, n_batches)
    lrs = [r[0]['lr'] for r in rec.recs]
    moms = [r[0]['betas'][0] if 'betas' in r[0] else r[0]['momentum'] for r in rec.recs]
    assert lrs == pytest.approx(ref_lrs, rel=1e-9, abs=0)
    assert moms == pytest.approx(ref_moms, rel=1e-9, abs=0)


def test_positions_default_and_endpoint():
    for endpoint, last in ((False, 4 / 5), (True, 1.)):
        learn, ps = make_learner(), ParamScheduler({'lr': sched_lin(0., 1.)}, endpoint=endpoint)
        learn.fit(1, cbs=[ps])  # 5 training batches; validation batches leave the lr alone
        assert ps.hps['lr'] == pytest.approx([i * last / 4 for i in range(5)])


def test_per_group_schedules():
    learn, rec = make_learner(splitter=two_groups), GroupsRec()
    ps = ParamScheduler({'lr': [sched_no(0.01, 0), sched_lin(0.1, 0.2)], 'weight_decay': sched_no(1e-4, 0)})
    learn.fit(1, valid=False, cbs=[ps, rec])
    assert [r[0]['lr'] for r in rec.recs] == [0.01] * 5
    assert [r[1]['lr'] for r in rec.recs] == pytest.approx([0.1 + 0.02 * i for i in range(5)])
    assert all(g['weight_decay'] == 1e-4 for r in rec.recs for g in r)
    assert ps.hps['lr'] == [r[1]['lr'] for r in rec.recs]  # `hps` records the last group
    with pytest.raises(ValueError, match="3 schedules for 'lr'.*2 param groups"):
        learn.fit(1, cbs=[ParamScheduler({'lr': [sched_no(1, 1)] * 3})])


@pytest.mark.parametrize('opt_func', [SGD, partial(optim.AdamW, betas=(0.9, 0.99))])
def test_mom_sets_sgd_momentum_or_adam_beta1(opt_func):
    learn, rec = make_learner(opt_func), GroupsRec()
    learn.fit(1, valid=False, cbs=[ParamScheduler({'mom': sched_lin(0.95, 0.85)}), rec])
    pgs = [r[0] for r in rec.recs]
    moms = [pg['betas'][0] if 'betas' in pg else pg['momentum'] for pg in pgs]
    assert moms == pytest.approx([0.95 - 0.02 * i for i in range(5)])
    assert all(pg['betas'][1] == 0.99 for pg in pgs if 'betas' in pg)  # beta2 kept
    assert ('betas' in pgs[0]) == (opt_func is not SGD)


def test_unknown_hyperparameter_is_named_with_the_groups_keys():
    with pytest.raises(ValueError, match=r"no hyperparameter 'lrr'.*'lr'.*'momentum'"):
        make_learner().fit(1, cbs=[ParamScheduler({'lrr': sched_no(1, 1)})])
    with pytest.raises(ValueError, match="'mom'"):
        make_learner(optim.Adagrad).fit(1, cbs=[ParamScheduler({'mom': sched_no(.9, .9)})])
    with pytest.raises(TypeError, match="'lr'"):
        ParamScheduler({'lr': 1e-3})


def test_fit_one_cycle_goes_up_then_down():
    learn, rec = make_learner(n=80), GroupsRec()
    w0 = learn.model[0].weight.detach().clone()
    assert Learner.fit_one_cycle is fit_one_cycle
    ps = learn.fit_one_cycle(2, lr_max=0.1, cbs=[rec])
    lrs, moms = ps.hps['lr'], ps.hps['mom']
    assert lrs == [r[0]['lr'] for r in rec.recs] and len(lrs) == 20
    top = max(range(20), key=lrs.__getitem__)
    assert lrs[0] == pytest.approx(0.1 / 25) and 0 < top < 19 and lrs[top] <= 0.1
    assert all(a < b for a, b in zip(lrs[:top], lrs[1:top + 1], strict=True))
    assert all(a > b for a, b in zip(lrs[top:], lrs[top + 1:], strict=False))
    assert lrs[-1] < 0.1 / 25 and min(range(20), key=moms.__getitem__) == top  # momentum the opposite way
    assert not torch.equal(w0, learn.model[0].weight)
    assert ParamScheduler not in map(type, learn.cbs)  # a temporary callback


def test_fit_one_cycle_per_group_lr_max_and_no_moms():
    learn, rec = make_learner(splitter=two_groups), GroupsRec()
    ps = fit_one_cycle(learn, 1, lr_max=[0.01, 0.1], moms=None, valid=False, cbs=[rec])
    assert max(r[0]['lr'] for r in rec.recs) <= 0.01 < max(r[1]['lr'] for r in rec.recs) <= 0.1
    assert set(ps.hps) == {'lr'} and {r[0]['momentum'] for r in rec.recs} == {0.9}
    with pytest.raises(ValueError, match='pct_start'):
        fit_one_cycle(learn, 1, 0.1, pct_start=1)


@pytest.mark.parametrize('opt_func', [optim.SGD, optim.RMSprop])
def test_fit_one_cycle_cycles_momentum_only_where_the_optimizer_uses_it(opt_func):
    learn = make_learner(opt_func)
    ps = fit_one_cycle(learn, 1, 0.01, valid=False)
    assert set(ps.hps) == {'lr'} and learn.opt.param_groups[0]['momentum'] == 0
    fit_one_cycle(learn, 1, 0.01, valid=False)  # a second fit: RMSprop made no momentum buffer, none is needed
    with pytest.raises(ValueError, match=rf'moms=\(0.9, 0.8, 0.9\) cycles momentum, but this {opt_func.__name__}'):
        fit_one_cycle(make_learner(opt_func), 1, 0.01, moms=(0.9, 0.8, 0.9))
    assert fit_one_cycle(make_learner(), 1, 0.01, moms=(0.9, 0.8, 0.9)).hps['mom'][0] == 0.9  # SGD momentum 0.9


def test_param_scheduler_refuses_a_state_of_other_hyperparameters():
    ps = ParamScheduler({'lr': sched_no(1, 1), 'mom': sched_no(.9, .9)})
    ps.load_state_dict({'hps': {'mom': [], 'lr': [1.]}})
    with pytest.raises(ValueError, match=r"schedules \['lr'\] but this one schedules \['lr', 'mom'\].*same"):
        ps.load_state_dict({'hps': {'lr': [1.]}})


class StopAfter(Callback):
    order = 20  # after CheckpointCB has saved the epoch

    def __init__(self, epoch): self.epoch = epoch

    def after_epoch(self, learn):
        if learn.epoch == self.epoch and not learn.training:
            raise CancelFitException()


def test_fit_one_cycle_resumes_from_a_checkpoint(tmp_path):
    full = fit_one_cycle(make_learner(), 3, 0.1)
    fit_one_cycle(make_learner(), 3, 0.1, cbs=[CheckpointCB(tmp_path), StopAfter(1)])  # stops after 2
    resumed = fit_one_cycle(make_learner(), 3, 0.1, cbs=[CheckpointCB(tmp_path)], resume=tmp_path)
    assert resumed.hps == full.hps and len(full.hps['lr']) == 15


def test_refused_fit_one_cycle_keeps_the_optimizer(tmp_path):
    learn = make_learner()
    fit_one_cycle(learn, 1, 0.1, valid=False)
    opt, bufs = learn.opt, [s['momentum_buffer'].clone() for s in learn.opt.state.values()]
    for bad in ({'pct_start': 2}, {'n_epochs': 0}, {'resume': tmp_path / 'none.pt'}):
        with pytest.raises((ValueError, FileNotFoundError)):
            fit_one_cycle(learn, **{'n_epochs': 1, 'lr_max': 0.1, **bad})
        assert learn.opt is opt
        assert all(torch.equal(b, s['momentum_buffer']) for b, s in zip(bufs, opt.state.values(), strict=True))
    fresh = make_learner()
    for bad in ({'n_epochs': 0}, {'resume': tmp_path / 'none.pt'}, {'moms': (0.9, 0.8, 0.9), 'n_epochs': 0}):
        with pytest.raises((ValueError, FileNotFoundError)):
            fit_one_cycle(fresh, **{'n_epochs': 1, 'lr_max': 0.1, **bad})
        assert fresh.opt is None  # no optimizer built before fit checked its arguments


@pytest.mark.parametrize('cycled', [True, False], ids=['mom', 'no_mom'])
def test_fit_one_cycle_resumes_a_plain_sgd_run_as_it_was_scheduled(tmp_path, cycled):
    """Plain SGD (momentum 0) whose ParamScheduler cycled 'mom' anyway (as fit_one_cycle's 'auto' once did), or not:
    a resume with 'auto' goes on as the run did."""
    def scheds(): return _one_cycle(0.1, 25., 1e5, 0.25, _MOMS if cycled else None)
    full, full_learn = ParamScheduler(scheds()), make_learner(optim.SGD)
    full_learn.fit(3, cbs=[full])
    make_learner(optim.SGD).fit(3, cbs=[ParamScheduler(scheds()), CheckpointCB(tmp_path), StopAfter(1)])
    saved = set(load_checkpoint(tmp_path)['cbs']['ParamScheduler_0']['hps'])
    fix = r"the moms it was given \(moms='auto' for the default" if cycled else 'moms=None'
    with pytest.raises(ValueError, match=f'run in the checkpoint .* momentum.*: resume with {fix}'):
        fit_one_cycle(make_learner(optim.SGD), 3, 0.1, moms=(0.9, 0.8, 0.9) if not cycled else None, resume=tmp_path)
    learn = make_learner(optim.SGD)
    resumed = fit_one_cycle(learn, 3, 0.1, cbs=[CheckpointCB(tmp_path)], resume=tmp_path)
    assert set(resumed.hps) == saved == ({'lr', 'mom'} if cycled else {'lr'})
    assert resumed.hps == full.hps and len(full.hps['lr']) == 15
    assert torch.equal(learn.model[0].weight, full_learn.model[0].weight)


def test_fit_one_cycle_decides_momentum_on_the_optimizer_the_fit_uses(tmp_path):
    weights_only = lambda ps, lr: SGD([p for p in ps if p.ndim > 1], lr=lr, momentum=0.9)  # needs real params
    learn = make_learner(weights_only)
    sched = fit_one_cycle(learn, 2, 0.1, cbs=[CheckpointCB(tmp_path), StopAfter(0)])
    assert sched.hps['mom'][0] == 0.95 and len(learn.opt.param_groups[0]['params']) == 2
    fresh = make_learner()
    with pytest.raises(ValueError, match='would run nothing'):
        fit_one_cycle(fresh, 1, 0.1, train=False, valid=False)
    assert fresh.opt is None  # a refused call builds no optimizer


@pytest.mark.filterwarnings('ignore:Checkpoint. callback states without a matching callback')
@pytest.mark.parametrize('kw, msg', [
    (dict(moms=(0.9, 0.8, 0.9)), 'set mom to 0.95 in the last param group at training step 0, where .* gives 0.9:'),
    (dict(lr_max=0.2), 'set lr to 0.004 in the last param group at training step 0, where .* gives 0.008:'),
    (dict(n_epochs=3), r'set lr to 0.\d+ in the last param group at training step 1, where'),
])
def test_a_resume_with_another_schedule_is_refused(tmp_path, kw, msg):
    fit_one_cycle(make_learner(), 2, 0.1, cbs=[CheckpointCB(tmp_path), StopAfter(0)])
    learn = make_learner()
    with pytest.raises(ValueError, match=f'ParamScheduler: the saved run {msg}'):
        fit_one_cycle(learn, **{'n_epochs': 2, 'lr_max': 0.1, **kw}, resume=tmp_path)
    assert learn.epoch == 0  # nothing restored
    fit_one_cycle(learn, 2, 0.1, resume=tmp_path)
    assert learn.epoch == 1


class SkipsBatch(Callback):
    """Cancels training batch 3 of each epoch before its step (a bad-batch filter)."""
    def after_loss(self, learn):
        if learn.training and learn.iter == 3: raise CancelBatchException()


def test_a_resume_checks_every_group_and_counts_steps_not_cancelled_batches(tmp_path):
    splitter = lambda m: [{'params': m[0].parameters()}, {'params': m[1].parameters()}]
    fit_one_cycle(make_learner(splitter=splitter), 2, [0.01, 0.05], cbs=[CheckpointCB(tmp_path), StopAfter(0),
                                                                         SkipsBatch()])
    learn = make_learner(splitter=splitter)
    with pytest.raises(ValueError, match=r'set lr to 0.0\d+ in param group 0 at training step \d+, where'):
        fit_one_cycle(learn, 2, [0.03, 0.05], cbs=[SkipsBatch()], resume=tmp_path)
    resumed = fit_one_cycle(learn, 2, [0.01, 0.05], cbs=[SkipsBatch(), CheckpointCB(tmp_path)], resume=tmp_path)
    assert len(resumed.hps['lr']) == learn.train_iter  # one value per step taken


def test_numpy_lrs_are_plain_floats_in_checkpoints(tmp_path):
    learn = make_learner()
    learn.create_opt(np.float64(0.05))
    fit_one_cycle(learn, 1, np.float32(0.1), cbs=[CheckpointCB(tmp_path)])
    learn.fit(1, lr=np.float64(0.01))
    learn.save(tmp_path / 'ck.pt')
    assert type(learn.lr) is float and type(learn.opt.param_groups[0]['lr']) is float


class AccumulateTwo(Callback):
    """Gradient accumulation: cancels every even training batch after its backward, so the odd ones step."""
    def after_backward(self, learn):
        if learn.iter % 2 == 0: raise CancelBatchException()


def test_with_gradient_accumulation_the_schedule_follows_the_batches():
    plain = fit_one_cycle(make_learner(), 2, 0.1)  # 10 batches: hps one per batch
    learn = make_learner()
    accum = fit_one_cycle(learn, 2, 0.1, cbs=[AccumulateTwo()])  # steps at batches 1, 3, 6, 8 (4 pends to 6)
    assert learn.train_iter == 4  # and the last batch, 9, set the values of a 5th step, not taken
    assert accum.hps == {k: [v[b] for b in (1, 3, 6, 8, 9)] for k, v in plain.hps.items()}  # one value per step
    assert accum.state_dict()['at'] == [1, 3, 6, 8, 9]


class SaveMidAccumulation(Callback):
    """Saves at the end of batch 2 of epoch 1 (cancelled: its gradients pending), then stops the fit."""
    def __init__(self, path): self.path = path

    def after_loss(self, learn):
        if (learn.epoch, learn.iter) == (1, 2): learn.save(self.path)

    def before_batch(self, learn):
        if (learn.epoch, learn.iter) == (1, 3): raise CancelFitException()


def test_accumulated_fit_resumes_mid_epoch_exactly_and_checks_the_saved_values(tmp_path):
    full_learn = make_learner()
    full = fit_one_cycle(full_learn, 2, 0.1, cbs=[AccumulateTwo()])
    fit_one_cycle(make_learner(), 2, 0.1, cbs=[AccumulateTwo(), SaveMidAccumulation(tmp_path / 'ck.pt')])
    with pytest.raises(ValueError, match=r'saved run set lr to .* at training step 0, where .* gives'):
        fit_one_cycle(make_learner(), 2, 0.2, cbs=[AccumulateTwo()], resume=tmp_path / 'ck.pt')
    learn = make_learner()
    resumed = fit_one_cycle(learn, 2, 0.1, cbs=[AccumulateTwo()], resume=tmp_path / 'ck.pt')
    assert resumed.hps == full.hps and resumed.state_dict() == full.state_dict()
    assert torch.equal(learn.model[0].weight, full_learn.model[0].weight)


@pytest.mark.filterwarnings('ignore:Checkpoint. callback states without a matching callback')
def test_a_state_from_before_the_batches_were_kept_resumes(tmp_path):
    full = fit_one_cycle(make_learner(), 3, 0.1)
    fit_one_cycle(make_learner(), 3, 0.1, cbs=[CheckpointCB(tmp_path), StopAfter(1)])
    ck = torch.load(tmp_path / 'checkpoint.pt', weights_only=True)
    del ck['cbs']['ParamScheduler_0']['at']
    torch.save(ck, tmp_path / 'old.pt')
    assert fit_one_cycle(make_learner(), 3, 0.1, resume=tmp_path / 'old.pt').hps == full.hps


@pytest.mark.parametrize('kw, msg', [
    (dict(lr_max=-0.1), 'lr_max is a learning rate: it must be positive, got -0.1'),
    (dict(lr_max=0.), 'lr_max is a learning rate: it must be positive'),
    (dict(lr_max=math.nan), 'lr_max is a learning rate'),
    (dict(lr_max=[0.1, -0.01]), r'lr_max is a learning rate: .*\[0.1, -0.01\]'),
    (dict(lr_max=np.ones((2, 2))), 'lr_max is a 2-d array'),
    (dict(div=-25.), 'div divides the lr: it must be a positive number, got -25.0'),
    (dict(div=0.), 'div divides the lr'),
    (dict(div_final=0.), 'div_final divides the lr'),
    (dict(div_final=math.inf), 'div_final divides the lr'),
    (dict(moms=(0.95, 0.85)), r'moms is .* three numbers in \[0, 1\).*got \(0.95, 0.85\)'),
    (dict(moms=(1.5, 0.85, 1.5)), r'moms .* three numbers in \[0, 1\)'),
    (dict(moms=(0.95, -0.1, 0.95)), r'moms .* three numbers in \[0, 1\)'),
    (dict(moms='on'), "moms .* got 'on'"),
])
def test_fit_one_cycle_refuses_bad_arguments_before_building_anything(kw, msg):
    learn = make_learner()
    with pytest.raises(ValueError, match=f'fit_one_cycle: {msg}'):
        fit_one_cycle(learn, 1, **{'lr_max': 0.1, **kw})
    assert learn.opt is None


def test_fit_one_cycle_takes_an_array_of_lr_max_one_per_group():
    learn, rec = make_learner(splitter=two_groups), GroupsRec()
    ps = fit_one_cycle(learn, 1, np.array([0.01, 0.1]), valid=False, cbs=[rec])
    ref = fit_one_cycle(make_learner(splitter=two_groups), 1, [0.01, 0.1], valid=False)
    assert ps.hps == ref.hps and all(type(g['lr']) is float for r in rec.recs for g in r)
    assert max(r[0]['lr'] for r in rec.recs) <= 0.01 < max(r[1]['lr'] for r in rec.recs)


def test_combine_scheds_boundary_belongs_to_the_later_piece_despite_rounding():
    f = combine_scheds([0.1, 0.2, 0.7], [sched_no(0.01, 0.01), sched_no(0.1, 0.1), sched_no(0.001, 0.001)])
    assert (f(0.1), f(0.3 - 1e-9), f(0.3), f(1.)) == (0.1, 0.1, 0.001, 0.001)  # 0.1 + 0.2 > 0.3 in floats
    ten = combine_scheds([0.1] * 10, [sched_no(i, i) for i in range(10)])
    assert [ten(i / 10) for i in range(10)] == list(range(10))  # 0.1 + 0.1 + 0.1 > 0.3 too
    lin = combine_scheds([0.1, 0.2, 0.7], [sched_lin(0, 1)] * 3)
    assert lin(0.3) == 0 and lin(0.3 - 1e-9) == pytest.approx(1)  # the later piece at its own position 0


def test_validation_only_fit_sets_and_records_nothing():
    ds = TensorDataset(torch.randn(16, 1), torch.randn(16, 1))
    learn = TrainLearner(nn.Identity(), SimpleNamespace(train=DataLoader(ds, 8), valid=DataLoader(ds, 8)), F.mse_loss)
    ps = ParamScheduler({'lr': sched_lin(0.1, 0.01)})
    learn.fit(1, train=False, cbs=[ps])  # a model without parameters: no optimizer
    assert learn.opt is None and ps.hps == {'lr': []}
    learn = make_learner()
    learn.fit(1, cbs=[ps])
    hps = {k: list(v) for k, v in ps.hps.items()}
    learn.fit(1, train=False, cbs=[ps])
    assert ps.hps == hps and len(hps['lr']) == 5  # the last training fit's record is kept


class StopAtBatch(Callback):
    def after_batch(self, learn):
        if learn.train_iter == 7: raise CancelFitException()


def test_a_resume_from_a_save_made_after_fit_one_cycle_ended_says_its_schedule_is_unchecked(tmp_path):
    learn = make_learner()
    learn.fit_one_cycle(3, 0.1, cbs=[StopAtBatch()])
    learn.save(tmp_path / 'ck.pt')  # its ParamScheduler, a callback of that fit only, is gone
    with pytest.warns(UserWarning, match='the checkpoint holds no ParamScheduler state .*cannot check lr_max'):
        make_learner().fit_one_cycle(3, 0.1, resume=tmp_path / 'ck.pt')
