"""`BatchSchedCB`/`EpochSchedCB` (ReduceLROnPlateau, validation-only fits) and `RecorderCB`'s argument checks."""

import warnings
from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.optim.lr_scheduler import CosineAnnealingLR, ReduceLROnPlateau, StepLR
from torch.optim.lr_scheduler import CyclicLR as TorchCyclicLR
from torch.utils.data import DataLoader, TensorDataset
from torcheval.metrics import MulticlassAccuracy

from miniai.checkpoint import CheckpointCB
from miniai.learner import Callback, CancelBatchException, CancelEpochException, CancelFitException, TrainLearner
from miniai.metrics import MetricsCB
from miniai.sched import BatchSchedCB, EpochSchedCB, RecorderCB, rec_lr, rec_mom
from miniai.schedulers import CosineAnnealing, CyclicLR, OneCycle

pytestmark = pytest.mark.usefixtures('one_thread')


def make_learner(cbs=()):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(24, 4, generator=g), torch.randint(0, 3, (24,), generator=g))
    dls = SimpleNamespace(train=DataLoader(ds, 8), valid=DataLoader(ds, 8))
    return TrainLearner(nn.Linear(4, 3), dls, F.cross_entropy, lr=0.1, cbs=list(cbs),
                        opt_func=partial(optim.SGD, momentum=0.9))


class EpochLRs(Callback):
    """The lr each training epoch used."""
    def before_fit(self, learn): self.lrs = []

    def before_epoch(self, learn):
        if learn.training: self.lrs.append(learn.opt.param_groups[0]['lr'])


PLATEAU = partial(ReduceLROnPlateau, factor=0.5, patience=1, threshold=0.05)


@pytest.mark.filterwarnings('error')
def test_plateau_steps_with_the_monitored_value_like_torch():
    cb, metrics, lrs = EpochSchedCB(PLATEAU, monitor='valid_loss'), MetricsCB(), EpochLRs()
    learn = make_learner([cb, metrics, lrs])  # listed before MetricsCB: its `order` still puts it after
    learn.fit(6)
    values = [h['loss'] for h in metrics.history if not h['train']]
    ref_opt = optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref, ref_lrs = PLATEAU(ref_opt), []
    for v in values:
        ref_lrs.append(ref_opt.param_groups[0]['lr'])
        ref.step(v)
    assert lrs.lrs == ref_lrs and ref_lrs[-1] < 0.1  # the lr dropped once the loss stopped improving enough
    assert learn.state_dict()['cbs']['EpochSchedCB_0']['sched'] == ref.state_dict()  # in checkpoints


class StopAfter(Callback):
    order = CheckpointCB.order + 1  # after the epoch's checkpoint

    def after_epoch(self, learn):
        if learn.epoch == 2 and not learn.training: raise CancelFitException()


def test_plateau_resumes_from_a_checkpoint(tmp_path):
    def run(*cbs, resume=None):
        cb = EpochSchedCB(PLATEAU, monitor='valid_loss')
        learn = make_learner([cb, MetricsCB(), *cbs])
        learn.fit(6, resume=resume)
        return cb.state_dict(), learn.opt.param_groups[0]['lr']
    full = run()
    run(CheckpointCB(tmp_path), StopAfter())
    assert run(CheckpointCB(tmp_path), resume=tmp_path) == full and full[1] < 0.1


def test_plateau_epoch_without_the_value_warns_and_does_not_step():
    class CancelTraining(Callback):
        def before_epoch(self, learn):
            if learn.training and learn.epoch == 1: raise CancelEpochException()

    cb = EpochSchedCB(PLATEAU, monitor='train_loss')
    with pytest.warns(UserWarning, match="epoch 1 has no 'train_loss'"):
        make_learner([cb, MetricsCB(), CancelTraining()]).fit(3)
    assert cb.schedo.last_epoch == 2


def test_plateau_misuse_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"BatchSchedCB: ReduceLROnPlateau .* EpochSchedCB\(.*monitor="):
        make_learner([BatchSchedCB(PLATEAU)]).fit(1)
    with pytest.raises(ValueError, match=r"EpochSchedCB: ReduceLROnPlateau .*monitor='valid_loss'"):
        make_learner([EpochSchedCB(PLATEAU), MetricsCB()]).fit(1)
    with pytest.raises(ValueError, match="monitor='valid_loss' is for ReduceLROnPlateau, but StepLR"):
        make_learner([EpochSchedCB(partial(StepLR, step_size=1), monitor='valid_loss'), MetricsCB()]).fit(1)
    with pytest.raises(ValueError, match='needs a MetricsCB'):
        make_learner([EpochSchedCB(PLATEAU, monitor='valid_loss')]).fit(1)


@pytest.mark.parametrize('cb', [lambda: BatchSchedCB(partial(OneCycle, max_lr=0.1, total_steps=3)),
                                lambda: EpochSchedCB(PLATEAU, monitor='valid_loss')], ids=['batch', 'plateau'])
def test_validation_only_fit_keeps_the_scheduler_and_its_state(cb):
    cb = cb()
    learn = make_learner([cb, MetricsCB()])
    learn.fit(1)
    schedo, sd = cb.schedo, cb.state_dict()
    learn.fit(1, train=False)
    assert cb.schedo is schedo and cb.state_dict() == sd


def test_recorder_refuses_a_series_that_is_not_a_function():
    with pytest.raises(TypeError, match="RecorderCB: lr must be functions of the callback, such as rec_lr.*got 'lr'"):
        RecorderCB(lr='lr', mom=rec_mom)


def test_recorder_needs_a_series_and_the_saved_ones():
    with pytest.raises(ValueError, match=r'at least one series.*RecorderCB\(lr=rec_lr'):
        RecorderCB()
    sd = RecorderCB(lr=rec_lr).state_dict()
    with pytest.raises(ValueError, match=r"records \['lr'\] but this one records \['lr', 'mom'\].*same series"):
        RecorderCB(lr=rec_lr, mom=rec_mom).load_state_dict(sd)


def test_resume_with_another_recorder_is_refused_before_training(tmp_path):
    make_learner([RecorderCB(lr=rec_lr), CheckpointCB(tmp_path)]).fit(1)
    learn = make_learner([RecorderCB(lr=rec_lr, mom=rec_mom), CheckpointCB(tmp_path)])
    w = learn.model.weight.detach().clone()
    with pytest.raises(ValueError, match='RecorderCB: the saved state records'):
        learn.fit(2, resume=tmp_path)
    assert torch.equal(w, learn.model.weight)


def test_plateau_resume_with_another_monitor_or_mode_is_refused(tmp_path):
    def learner(sched=PLATEAU, monitor='valid_loss'):
        return make_learner([EpochSchedCB(sched, monitor=monitor), MetricsCB(), CheckpointCB(tmp_path)])
    learner().fit(2)
    for sched, monitor in [(PLATEAU, 'train_loss'), (partial(PLATEAU, mode='max'), 'valid_loss')]:
        learn = learner(sched, monitor)
        w = learn.model.weight.detach().clone()
        mode = sched.keywords.get('mode', 'min')
        with pytest.raises(ValueError, match=rf"EpochSchedCB: .*monitor='valid_loss', mode='min'; this one with "
                                             rf"monitor='{monitor}', mode='{mode}'"):
            learn.fit(4, resume=tmp_path)
        assert torch.equal(w, learn.model.weight)  # refused before anything changed
    with pytest.raises(ValueError, match="monitor='valid_loss'.*this one with monitor='train_loss'"):
        learner(monitor='train_loss').load(tmp_path)  # before any fit: the monitor is checked
    learner().fit(4, resume=tmp_path)  # the same monitor and mode resume


def test_plateau_state_keeps_its_monitor_and_mode_and_old_states_load():
    cb = EpochSchedCB(PLATEAU, monitor='valid_loss')
    make_learner([cb, MetricsCB()]).fit(1)
    sd = cb.state_dict()
    assert (sd['monitor'], sd['sched']['mode']) == ('valid_loss', 'min')
    old = {'sched': {**sd['sched'], 'best': -1.}}  # saved before the monitor was kept
    cb.load_state_dict(old)
    assert cb.schedo.best == -1.
    EpochSchedCB(PLATEAU, monitor='train_loss').load_state_dict(old)
    with pytest.raises(ValueError, match=r"mode='max'; this one with monitor='valid_loss', mode='min'"):
        cb.load_state_dict({'sched': {**sd['sched'], 'mode': 'max'}})  # an old state of another mode


def test_plateau_on_a_metric_needs_its_mode():
    for sched in (PLATEAU, ReduceLROnPlateau, lambda opt: ReduceLROnPlateau(opt)):
        with pytest.raises(ValueError, match=r"EpochSchedCB\(monitor='accuracy'\): say which way is better"):
            make_learner([EpochSchedCB(sched, monitor='accuracy'), MetricsCB(accuracy=MulticlassAccuracy())]).fit(1)
    make_learner([EpochSchedCB(partial(PLATEAU, mode='max'), monitor='accuracy'),
                  MetricsCB(accuracy=MulticlassAccuracy())]).fit(1)


# 3 batches an epoch, 4 epochs: 12 steps. (the saved run's scheduler, another argument, how the error names it)
RESUMES = {
    'cosine': (partial(CosineAnnealing, T_max=12), dict(T_max=20), 'T_max: saved 12, this fit 20'),
    'onecycle': (partial(OneCycle, max_lr=0.1, total_steps=12), dict(max_lr=0.2),
                 r'max_lr: saved \[0.1\], this fit \[0.2\]'),
    'cyclic': (partial(CyclicLR, base_lr=0.01, max_lr=0.1, step_size_up=3), dict(step_size_up=4),
               r'step_size_up \+ step_size_down: saved 6.0, this fit 8.0'),
}


@pytest.mark.filterwarnings('ignore:BatchSchedCB. .* but this fit takes')
@pytest.mark.parametrize('name', RESUMES)
def test_resume_with_other_scheduler_arguments_is_refused_then_the_right_one_resumes(tmp_path, name):
    sched, other, match = RESUMES[name]
    full = make_learner([BatchSchedCB(sched)])
    full.fit(4)
    make_learner([BatchSchedCB(sched), CheckpointCB(tmp_path), StopAfter()]).fit(4)  # saved after 3 epochs
    cb = BatchSchedCB(partial(sched, **other))
    learn = make_learner([cb, CheckpointCB(tmp_path)])
    w = learn.model.weight.detach().clone()
    refused = rf"BatchSchedCB: the checkpoint's {sched.func.__name__} .*{match}.*saved run's arguments"
    with pytest.raises(ValueError, match=refused):
        learn.fit(4, resume=tmp_path)
    assert torch.equal(w, learn.model.weight) and not hasattr(cb, 'schedo')  # refused before anything changed
    cb.sched = sched  # the saved run's arguments: the same learner resumes, as if never stopped
    learn.fit(4, resume=tmp_path)
    assert torch.equal(learn.model.weight, full.model.weight)


@pytest.mark.filterwarnings('ignore:BatchSchedCB. .* but this fit takes')
@pytest.mark.parametrize('saved, other', [
    (partial(CosineAnnealing, T_max=12), partial(OneCycle, max_lr=0.1, total_steps=12)),
    (partial(OneCycle, max_lr=0.1, total_steps=12), partial(CosineAnnealing, T_max=12)),
    (partial(CosineAnnealing, T_max=12), partial(CyclicLR, base_lr=0.05, max_lr=0.1, step_size_up=3)),
    (partial(StepLR, step_size=2), partial(CosineAnnealingLR, T_max=12)),  # PyTorch's too
    (partial(TorchCyclicLR, base_lr=0.05, max_lr=0.1, step_size_up=3),  # the same name, another class
     partial(CyclicLR, base_lr=0.05, max_lr=0.1, step_size_up=3))])
def test_resume_with_another_kind_of_scheduler_is_refused(tmp_path, saved, other):
    make_learner([BatchSchedCB(saved), CheckpointCB(tmp_path), StopAfter()]).fit(4)
    name = lambda p: f'{p.func.__module__}.{p.func.__name__}'
    with pytest.raises(ValueError, match=rf"the checkpoint's scheduler is a {name(saved)}, this fit's a "
                                         rf'{name(other)}: build the scheduler of the run that saved it'):
        make_learner([BatchSchedCB(other), CheckpointCB(tmp_path)]).fit(4, resume=tmp_path)


@pytest.mark.filterwarnings('ignore:BatchSchedCB. .* but this fit takes', 'ignore:Checkpoint. callback states')
def test_a_checkpoint_from_before_the_kind_was_kept_is_checked_by_its_keys(tmp_path):
    make_learner([BatchSchedCB(partial(CosineAnnealing, T_max=12)), CheckpointCB(tmp_path), StopAfter()]).fit(4)
    ck = torch.load(tmp_path / 'checkpoint.pt', weights_only=True)
    del ck['cbs']['BatchSchedCB_0']['kind']
    torch.save(ck, tmp_path / 'old.pt')
    with pytest.raises(ValueError, match=r"the checkpoint's scheduler is a scheduler with T_max, eta_min, this fit's "
                                         r'a miniai.schedulers.OneCycle'):
        make_learner([BatchSchedCB(partial(OneCycle, max_lr=0.1, total_steps=12))]).fit(4, resume=tmp_path / 'old.pt')
    make_learner([BatchSchedCB(partial(CosineAnnealing, T_max=12))]).fit(4, resume=tmp_path / 'old.pt')  # its own


def test_load_of_another_kinds_state_keeps_it_as_saved(tmp_path):
    saved = make_learner([BatchSchedCB(partial(CosineAnnealing, T_max=3))])
    saved.fit(1)
    saved.save(tmp_path / 'cos.pt')
    cb = BatchSchedCB(partial(OneCycle, max_lr=0.1, total_steps=3))
    learn = make_learner([cb])
    learn.fit(1)
    learn.load(tmp_path / 'cos.pt')
    assert not hasattr(cb, 'schedo') and cb.state_dict() == saved.cbs[0].state_dict()


def test_load_after_a_fit_takes_the_saved_scheduler(tmp_path):
    saved = make_learner([BatchSchedCB(partial(CosineAnnealing, T_max=3))])
    saved.fit(1)
    saved.save(tmp_path / 'ck.pt')
    cb = BatchSchedCB(partial(CosineAnnealing, T_max=6))
    learn = make_learner([cb])
    learn.fit(2)
    learn.load(tmp_path / 'ck.pt')  # not a resume: everything the checkpoint holds, the scheduler's arguments too
    assert cb.schedo.T_max == 3


@pytest.mark.parametrize('sched, past_end', [(partial(CosineAnnealing, T_max=4), 'climbs back up'),
                                             (partial(OneCycle, max_lr=0.1, total_steps=4), 'raises an error')])
def test_a_schedule_shorter_than_the_fit_warns_what_it_does_past_its_end(sched, past_end):
    rec = RecorderCB(lr=rec_lr)
    learn = make_learner([BatchSchedCB(sched), rec])
    with pytest.warns(UserWarning, match=f'ends early: .*{past_end}'), warnings.catch_warnings():
        warnings.simplefilter('always')
        try:
            learn.fit(3)  # 9 steps
        except ValueError as e:
            assert past_end == 'raises an error' and 'total_steps is 4' in str(e)
        else:
            lrs = rec.recs['lr']
            assert lrs[4] < lrs[5] < lrs[6] < 0.1  # back up along the cosine after step T_max


class AccumulateTwo(Callback):
    """Gradient accumulation: every other batch of the fit is cancelled after its backward, so steps no optimizer."""
    def before_fit(self, learn): self.n = 0

    def after_backward(self, learn):
        self.n += 1
        if self.n % 2: raise CancelBatchException()


def fit_warnings(learn, n_epochs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        learn.fit(n_epochs)
    return [str(w.message) for w in caught]


def test_batch_sched_with_gradient_accumulation_says_what_its_length_should_be():
    """4 epochs of 3 batches, an optimizer (and scheduler) step every 2: 6 steps."""
    rec = RecorderCB(lr=rec_lr)
    said = fit_warnings(make_learner([BatchSchedCB(partial(OneCycle, max_lr=0.1, total_steps=6)), rec,
                                      AccumulateTwo()]), 4)
    assert len(said) == 1 and 'takes 12 training batches' in said[0]
    assert 'with gradient accumulation over k batches' in said[0] and 'about 12/k), and then this warning' in said[0]
    assert rec.recs['lr'][-1] == pytest.approx(0.1 / 25 / 1e4)  # the schedule ran to its end
    said = fit_warnings(make_learner([BatchSchedCB(partial(OneCycle, max_lr=0.1, total_steps=12)), AccumulateTwo()]), 4)
    assert len(said) == 1 and 'total_steps=12 but this run stepped it 6 times' in said[0]
    assert 'stopped 50% of the way to its end. Build it with total_steps=6' in said[0]
    assert not fit_warnings(make_learner([BatchSchedCB(partial(OneCycle, max_lr=0.1, total_steps=12))]), 4)


def test_batch_sched_end_check_only_after_a_fit_through_all_its_batches():
    class StopEarly(Callback):
        def after_epoch(self, learn): learn.should_stop = True
    learn = make_learner([BatchSchedCB(partial(CosineAnnealing, T_max=12)), StopEarly()])
    assert not fit_warnings(learn, 4)
    assert learn.cbs[0].schedo.last_epoch == 3


def test_recorder_in_a_validation_only_fit_records_nothing():
    ds = TensorDataset(torch.randn(16, 1), torch.randn(16, 1))
    learn = TrainLearner(nn.Identity(), SimpleNamespace(train=DataLoader(ds, 8), valid=DataLoader(ds, 8)), F.mse_loss)
    rec = RecorderCB(lr=rec_lr)
    learn.fit(1, train=False, cbs=[rec])  # a model without parameters: no optimizer
    assert learn.opt is None and rec.recs == {'lr': []}
    learn = make_learner([rec])
    learn.fit(1)
    recs = {k: list(v) for k, v in rec.recs.items()}
    learn.fit(1, train=False)
    assert rec.recs == recs and len(recs['lr']) == 3  # the last training fit's records are kept


def test_epoch_sched_warns_once_when_a_cancelled_epoch_does_not_step():
    class ShortEpochs(Callback):
        def after_batch(self, learn):
            if learn.training and learn.epoch in (1, 2) and learn.iter == 1: raise CancelEpochException()
    cb = EpochSchedCB(partial(CosineAnnealing, T_max=4))
    said = fit_warnings(make_learner([cb, ShortEpochs()]), 4)
    assert said == ['EpochSchedCB: training epoch 1 was cancelled (CancelEpochException skips after_epoch), so the '
                    'scheduler did not step for it, nor will it for other such epochs of this fit (warned once).']
    assert cb.schedo.last_epoch == 2  # epochs 0 and 3 stepped
    assert len(fit_warnings(make_learner([cb, ShortEpochs()]), 4)) == 1  # once a fit
    assert not fit_warnings(make_learner([EpochSchedCB(partial(CosineAnnealing, T_max=4))]), 4)
