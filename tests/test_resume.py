"""Resuming across Learner kinds and loaders: a MomentumLearner's carried gradients, a batch sampler's own
generator, a compiled model's weights, and loaders unlike the saved run's refused before anything changes."""

import contextlib
import time
import warnings
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset
from torcheval.metrics import MulticlassAccuracy

from miniai.checkpoint import CheckpointError
from miniai.learner import Callback, CancelEpochException, CancelFitException, MomentumLearner, TrainLearner
from miniai.metrics import MetricsCB
from miniai.sched import BatchSchedCB, RecorderCB, rec_lr

pytestmark = pytest.mark.usefixtures('one_thread')


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 6, generator=g)
    return TensorDataset(x[:32], (x[:32, 0] > 0).long()), TensorDataset(x[32:], (x[32:, 0] > 0).long())


def shuffled(bs=8, seed=0):
    """Loaders shuffling with a generator of their own."""
    train, valid = data()
    return SimpleNamespace(train=DataLoader(train, bs, shuffle=True, generator=torch.Generator().manual_seed(seed)),
                           valid=DataLoader(valid, 8))


class StopAt(Callback):
    """Ends the fit after `n` training batches (as Ctrl-C with `InterruptCB` would, at a batch end)."""
    def __init__(self, n): self.n = n
    def after_batch(self, learn):
        if learn.train_iter == self.n: raise CancelFitException()


def run(make, dls, path=None, stop=None):
    """The same run, fresh: whole, or stopped after `stop` batches and saved to `path`, or resumed from `path`."""
    torch.manual_seed(0)
    learn = make(dls())
    if stop:
        learn.fit(3, cbs=[StopAt(stop)])
        learn.save(path)
    else:
        learn.fit(3, resume=path)
    return learn


def model(): return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
def lazy_model(): return nn.Sequential(nn.LazyLinear(8), nn.LazyBatchNorm1d(), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize('make, dls', [
    (lambda dls: MomentumLearner(model(), dls, F.cross_entropy, lr=0.05, mom=0.9), shuffled),
    (lambda dls: TrainLearner(model(), dls, F.cross_entropy, lr=0.05), lambda: SimpleNamespace(
        train=DataLoader(data()[0], batch_sampler=BatchSampler(
            RandomSampler(data()[0], generator=torch.Generator().manual_seed(3)), 8, False)),
        valid=DataLoader(data()[1], 8))),
    (lambda dls: TrainLearner(lazy_model(), dls, F.cross_entropy, lr=0.05, opt_func=torch.optim.AdamW), shuffled),
], ids=['momentum-learner', 'batch-sampler-generator', 'lazy-layers'])
def test_resumed_run_is_bit_identical(tmp_path, make, dls):
    ref = run(make, dls)
    run(make, dls, tmp_path / 'ck.pt', stop=6)
    learn = run(make, dls, tmp_path / 'ck.pt')
    for p, q in zip(ref.model.parameters(), learn.model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize('other, match', [
    (lambda: shuffled(bs=4), 'had 4 batches per epoch; this one has 8'),
    (lambda: SimpleNamespace(train=DataLoader(data()[0], 8, shuffle=True), valid=DataLoader(data()[1], 8)),
     r'keeps its data order in no state .* kept 1 generator\(s\) of its own'),
])
def test_a_refused_resume_puts_back_what_its_start_changed(tmp_path, other, match):
    make = lambda dls: TrainLearner(model(), dls, F.cross_entropy, lr=0.05)
    run(make, shuffled, tmp_path / 'ck.pt', stop=2)
    metrics, rec = MetricsCB(), RecorderCB(lr=rec_lr)
    learn = make(other())
    learn.fit(1, cbs=[metrics, rec, BatchSchedCB(partial(OneCycleLR, max_lr=0.1, total_steps=len(learn.dls.train)))])
    learn.cbs += [metrics, rec]
    state = learn.state_dict()
    with pytest.raises(CheckpointError, match=match):
        learn.fit(3, resume=tmp_path / 'ck.pt')
    assert all(torch.equal(p, q) for p, q in zip(state['model'].values(), learn.model.state_dict().values()))
    assert learn.opt.state_dict() == state['opt']
    assert (learn.epoch, learn.train_iter, learn.n_epochs) == (state['epoch'] - 1, state['train_iter'], 1)
    assert len(metrics.history) == 2 and len(rec.recs['lr']) == state['train_iter'] > 0
    assert metrics.loss.weights.item() == len(data()[1])  # the running mean, which before_fit reset in place


class CancelsAtStart(Callback):
    def before_fit(self, learn): raise CancelFitException()


class KeepsTheLoss(Callback):
    """Keeps the last loss, a tensor of the autograd graph, in its state."""
    def __init__(self): self.last = None
    def after_loss(self, learn): self.last = learn.loss
    def state_dict(self): return {'last': self.last}
    def load_state_dict(self, sd): self.last = sd['last']


def test_a_resume_cancelled_at_its_start_changes_nothing_and_graph_tensors_in_states_load(tmp_path):
    make = lambda dls: TrainLearner(model(), dls, F.cross_entropy, lr=0.05, cbs=[MetricsCB(), KeepsTheLoss()])
    saved = run(make, shuffled, tmp_path / 'ck.pt', stop=2)
    assert saved.cbs[1].last.requires_grad
    learn = make(shuffled())
    learn.fit(1)
    history = list(learn.cbs[0].history)
    learn.fit(3, resume=tmp_path / 'ck.pt', cbs=[CancelsAtStart()])
    assert learn.cbs[0].history == history and learn.n_epochs == 1
    learn.load(tmp_path / 'ck.pt')
    assert torch.equal(learn.cbs[1].last, saved.cbs[1].last)


def test_a_callback_refusing_its_state_leaves_the_others_as_they_were(tmp_path):
    make = lambda dls: TrainLearner(model(), dls, F.cross_entropy, lr=0.05,
                                    cbs=[RecorderCB(lr=rec_lr), MetricsCB()])
    run(make, shuffled, tmp_path / 'ck.pt', stop=2)
    learn = make(shuffled())
    learn.cbs[1] = MetricsCB(acc=MulticlassAccuracy())  # other metrics than the saved run's
    learn.fit(1)
    recs = [list(v) for v in learn.cbs[0].recs.values()]
    with pytest.raises(ValueError, match="checkpoint's metrics are"):
        learn.load(tmp_path / 'ck.pt')
    assert [list(v) for v in learn.cbs[0].recs.values()] == recs


def test_load_into_a_learner_with_other_loaders_warns_and_loads_the_weights(tmp_path):
    make = lambda dls: TrainLearner(model(), dls, F.cross_entropy, lr=0.05)
    saved = run(make, shuffled, tmp_path / 'ck.pt', stop=2)
    learn = make(SimpleNamespace(train=DataLoader(data()[0], 8, shuffle=True), valid=DataLoader(data()[1], 8)))
    with pytest.warns(UserWarning, match="dls.train's data order was not restored"):
        learn.load(tmp_path / 'ck.pt')
    assert all(torch.equal(p, q) for p, q in zip(saved.model.parameters(), learn.model.parameters(), strict=True))


def test_a_compiled_models_checkpoint_loads_into_the_plain_model(tmp_path):
    torch.manual_seed(0)
    plain = model()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        learn = TrainLearner(torch.compile(plain, backend='eager'), shuffled(), F.cross_entropy, lr=0.05)
        learn.fit(1)
    learn.save(tmp_path / 'ck.pt')
    other = TrainLearner(model(), shuffled(), F.cross_entropy).load(tmp_path / 'ck.pt')
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), other.model.parameters(), strict=True))


class CountsBatches(Callback):
    """Sets its state up in before_fit: it has none before the first fit."""
    def before_fit(self, learn): self.n = 0
    def after_batch(self, learn): self.n += 1
    def state_dict(self): return {'n': self.n}
    def load_state_dict(self, sd): self.n = sd['n']


def test_a_callback_whose_state_starts_in_before_fit_resumes(tmp_path):
    make = lambda dls: TrainLearner(model(), dls, F.cross_entropy, lr=0.05, cbs=[CountsBatches()])
    run(make, shuffled, tmp_path / 'ck.pt', stop=2)
    learn = run(make, shuffled, tmp_path / 'ck.pt')
    assert learn.cbs[0].n == 3 * 4 + 3 * 2  # the 2 saved training batches, the rest, and the validation batches


def test_a_model_with_lazy_layers_not_yet_initialised_is_not_saved(tmp_path):
    learn = TrainLearner(lazy_model(), shuffled(), F.cross_entropy, lr=0.05)
    with pytest.raises(ValueError, match=r"lazy layers have no weights yet \(0.weight, 0.bias, 1.weight.*run a batch"):
        learn.save(tmp_path / 'ck.pt')
    assert not (tmp_path / 'ck.pt').exists()


class SaveAt(Callback):
    """Saves in `event` of the second training batch of the second epoch: ordered before every other callback."""
    order = -10

    def __init__(self, event, path):
        self.path = path
        setattr(self, event, self.save)

    def save(self, learn):
        if learn.training and (learn.epoch, learn.iter) == (1, 1):
            assert learn.save(self.path) == self.path


@pytest.mark.parametrize('event', ['after_step', 'after_batch', 'before_batch'])
def test_a_save_during_a_batch_holds_the_whole_batch_whatever_the_savers_order(tmp_path, event):
    """Written when the batch ends: a scheduler stepping, and metrics counting, after the saver are in it."""
    def learner(*cbs):
        torch.manual_seed(0)
        return TrainLearner(model(), shuffled(), F.cross_entropy, lr=0.05, opt_func=torch.optim.AdamW, cbs=[
            *cbs, BatchSchedCB(partial(OneCycleLR, max_lr=0.1, total_steps=12)), RecorderCB(lr=rec_lr),
            MetricsCB(acc=MulticlassAccuracy())])
    ref = learner()
    ref.fit(3)
    learner(SaveAt(event, tmp_path / 'ck.pt')).fit(3)
    learn = learner()
    learn.fit(3, resume=tmp_path / 'ck.pt')
    untimed = lambda learn: [{k: v for k, v in row.items() if k != 'time'} for row in learn.cbs[-1].history]
    assert learn.cbs[-2].recs['lr'] == ref.cbs[-2].recs['lr'] and untimed(learn) == untimed(ref)
    for p, q in zip(ref.model.parameters(), learn.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_lazy_layer_refuses_a_checkpoint_of_another_output_size(tmp_path):
    learn = TrainLearner(lazy_model(), shuffled(), F.cross_entropy, lr=0.05)
    learn.fit(1)
    learn.save(tmp_path / 'ck.pt')
    other = nn.Sequential(nn.LazyLinear(16), nn.LazyBatchNorm1d(), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(CheckpointError, match=r"0.weight \(checkpoint \[8, 6\], model \[16, '\?'\]\), 0.bias"):
        TrainLearner(other, shuffled(), F.cross_entropy, lr=0.05).load(tmp_path / 'ck.pt')
    TrainLearner(lazy_model(), shuffled(), F.cross_entropy, lr=0.05).load(tmp_path / 'ck.pt')  # its own size loads


class SaveThenRaise(Callback):
    """Saves in after_step of the second batch, then ends the fit there (before the batch's after_batch)."""
    def __init__(self, path, exc): self.path, self.exc = path, exc

    def after_step(self, learn):
        if learn.iter == 1:
            learn.save(self.path)
            raise self.exc


@pytest.mark.parametrize('exc', [CancelFitException(), ZeroDivisionError()], ids=['cancelled', 'error'])
def test_a_save_in_a_batch_that_stops_part_way_is_not_written(tmp_path, exc):
    learn = TrainLearner(model(), shuffled(), F.cross_entropy, lr=0.05, cbs=[SaveThenRaise(tmp_path / 'ck.pt', exc)])
    raised = pytest.raises(ZeroDivisionError) if isinstance(exc, ZeroDivisionError) else contextlib.nullcontext()
    with pytest.warns(UserWarning, match=r'ck.pt\) during batch 1 was not written: the batch stopped part-way'), raised:
        learn.fit(1)
    assert not (tmp_path / 'ck.pt').exists()


class NumpyState(Callback):
    def state_dict(self): return {'x': np.float32(1)}  # checkpoints refuse it
    def load_state_dict(self, sd): pass


class SaveThenFail(Callback):
    order = 100
    def __init__(self, path): self.path = path
    def after_batch(self, learn):
        learn.save(self.path)
        raise ZeroDivisionError


def test_a_failed_save_at_the_batch_end_is_a_note_on_the_batchs_own_error(tmp_path):
    learn = TrainLearner(model(), shuffled(), F.cross_entropy, lr=0.05,
                         cbs=[NumpyState(), SaveThenFail(tmp_path / 'ck.pt')])
    with pytest.raises(ZeroDivisionError) as e:
        learn.fit(1)
    assert any('learn.save during batch 0 also failed: TypeError' in n for n in e.value.__notes__)


def test_a_save_inside_lr_find_writes_nothing(tmp_path):
    class SaveEvery(Callback):
        def after_batch(self, learn): learn.save(tmp_path / 'ck.pt')
    learn = TrainLearner(model(), shuffled(), F.cross_entropy, lr=0.05, cbs=[SaveEvery()])
    learn.fit(1)
    saved = (tmp_path / 'ck.pt').read_bytes()
    with pytest.warns(UserWarning, match=r'inside lr_find or get_preds was not written: they leave no trace'):
        learn.lr_find(num_it=3)
    assert (tmp_path / 'ck.pt').read_bytes() == saved


class CancelEpochAt(Callback):
    """Ends each training phase after its second batch (in after_batch, after `SaveAt`)."""
    def after_batch(self, learn):
        if learn.training and learn.iter == 1: raise CancelEpochException()


def test_a_save_in_the_batch_that_cancels_its_epoch_resumes_with_the_next_phase(tmp_path):
    def learner(*cbs):
        torch.manual_seed(0)
        return TrainLearner(model(), shuffled(), F.cross_entropy, lr=0.05, cbs=[*cbs, CancelEpochAt()])
    ref = learner()
    ref.fit(3)
    learner(SaveAt('after_batch', tmp_path / 'ck.pt')).fit(3)
    learn = learner()
    learn.fit(3, resume=tmp_path / 'ck.pt')
    assert learn.train_iter == ref.train_iter == 6
    for p, q in zip(ref.model.parameters(), learn.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_save_in_a_validation_batch_is_written_even_if_the_batch_then_fails(tmp_path):
    class SaveInValid(Callback):
        def after_loss(self, learn):
            if not learn.training:
                learn.save(tmp_path / 'ck.pt')
                raise ZeroDivisionError
    learn = TrainLearner(model(), shuffled(), F.cross_entropy, lr=0.05, cbs=[SaveInValid()])
    with pytest.raises(ZeroDivisionError):
        learn.fit(1)
    ck = torch.load(tmp_path / 'ck.pt', weights_only=True)
    assert (ck['phase'], ck['iter']) == ('valid', 0)  # a resume validates from the start


class LazyScale(nn.modules.lazy.LazyModuleMixin, nn.Module):
    """A user's lazy layer: one weight per input feature (its `out_features` says nothing of the weight's shape)."""
    def __init__(self):
        super().__init__()
        self.out_features, self.weight = 3, nn.UninitializedParameter()

    def initialize_parameters(self, x):
        with torch.no_grad():
            self.weight.materialize((x.shape[-1],))
            self.weight.fill_(1.)

    def forward(self, x): return x * self.weight


def test_a_users_lazy_layer_takes_its_own_checkpoint():
    from miniai.checkpoint import check_model_state
    done = LazyScale()
    done(torch.randn(2, 5))
    check_model_state(LazyScale(), done.state_dict())  # no shape guessed from out_features


def metrics_learner(dls, cbs=()):
    from miniai.progress import ProgressCB
    return TrainLearner(model(), dls, F.cross_entropy, lr=0.1,
                        cbs=[MetricsCB(acc=MulticlassAccuracy()), ProgressCB(), *cbs])


def rows(learn): return [{k: v for k, v in r.items() if k != 'time'} for r in learn.metrics.history]


def test_a_save_after_a_validation_only_fit_resumes_the_training_runs_rows(tmp_path):
    """Stopped mid-epoch, validated, saved: the checkpoint is the training run's, running metrics and all; the
    validation-only fit shows its own rows meanwhile."""
    make = partial(metrics_learner)
    whole = run(make, shuffled)
    learn = run(make, shuffled, tmp_path / 'direct.pt', stop=5)  # mid-epoch 1
    learn.fit(1, train=False)
    assert [r['train'] for r in learn.metrics.history] == [False]
    learn.summary(torch.randn(2, 6))  # leaves no trace: the rows shown stay this fit's
    assert [r['train'] for r in learn.metrics.history] == [False]
    learn.save(tmp_path / 'after.pt')
    resumed = run(make, shuffled, tmp_path / 'after.pt')
    assert rows(resumed) == rows(whole) and len(rows(whole)) == 6
    progress = [cb.state_dict() for r in (whole, resumed) for cb in r.cbs if hasattr(cb, 'losses')]
    assert progress[0] == progress[1]


def test_the_loss_mean_weighs_batches_by_their_targets():
    """Inputs given as a tuple: `len` of the first item counts the tensors, not the items."""
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 2)
        def forward(self, xs): return self.lin(xs[0] + xs[1])
    train, valid = data()
    x, y = valid.tensors
    batches = [((x[:4], x[:4]), y[:4]), ((x[4:5], x[4:5]), y[4:5])]  # 4 items, then 1
    learn = TrainLearner(Pair(), SimpleNamespace(train=batches, valid=batches), F.cross_entropy, cbs=[MetricsCB()])
    learn.fit(1, train=False)
    with torch.no_grad():
        expected = F.cross_entropy(learn.model((x[:5], x[:5])), y[:5]).item()
    assert learn.metrics.history[-1]['loss'] == pytest.approx(expected, rel=1e-6)
    # targets given as a tuple (weighed by its first tensor), and unbatched items (0-d targets: equal weights)
    two = lambda preds, ys: F.cross_entropy(preds, ys[0]) + F.cross_entropy(preds, ys[1])
    learn = TrainLearner(nn.Linear(6, 2), SimpleNamespace(train=batches, valid=[(x[:4], (y[:4], y[:4])),
                         (x[4:5], (y[4:5], y[4:5]))]), two, cbs=[MetricsCB()])
    learn.fit(1, train=False)
    with torch.no_grad():
        expected = two(learn.model(x[:5]), (y[:5], y[:5])).item()
    assert learn.metrics.history[-1]['loss'] == pytest.approx(expected, rel=1e-6)
    learn = TrainLearner(nn.Linear(6, 2), SimpleNamespace(train=batches, valid=list(zip(x[:5], y[:5]))),
                         F.cross_entropy, cbs=[MetricsCB()])
    learn.fit(1, train=False)
    with torch.no_grad():
        expected = F.cross_entropy(learn.model(x[:5]), y[:5]).item()
    assert learn.metrics.history[-1]['loss'] == pytest.approx(expected, rel=1e-6)


class Refuse(Callback):
    order = 100  # after MetricsCB and ProgressCB have started the fit

    def before_fit(self, learn): raise ValueError('refused')


def test_a_fit_refused_after_a_validation_only_fit_leaves_its_rows(tmp_path):
    learn = run(metrics_learner, shuffled, tmp_path / 'ck.pt', stop=5)
    learn.fit(1, train=False)
    for kw in ({}, {'train': False}):
        with pytest.raises(ValueError, match='refused'):
            learn.fit(3, cbs=[Refuse()], **kw)
        assert [r['train'] for r in learn.metrics.history] == [False]
    learn.save(tmp_path / 'after.pt')
    assert rows(run(metrics_learner, shuffled, tmp_path / 'after.pt')) == rows(run(metrics_learner, shuffled))


def test_a_checkpoint_whose_validation_loader_kept_no_state_resumes(tmp_path):
    """An older miniai gave `from_dd`'s and `image_folder_dls`'s validation loaders no generator; now they have one.
    A validation phase has no order to replay, so the resume goes on."""
    def with_generator(dls):
        dls.valid.generator = torch.Generator().manual_seed(1)
        return dls
    whole = run(metrics_learner, lambda: with_generator(shuffled()))
    run(metrics_learner, shuffled, tmp_path / 'ck.pt', stop=5)  # saved without one
    resumed = run(metrics_learner, lambda: with_generator(shuffled()), tmp_path / 'ck.pt')
    assert rows(resumed) == rows(whole)


class Slow(Callback):
    def after_batch(self, learn):
        if learn.training: time.sleep(0.02)


def test_an_epoch_resumed_mid_way_times_the_batches_before_the_save_too(tmp_path):
    make = partial(metrics_learner, cbs=[Slow()])
    run(make, shuffled, tmp_path / 'ck.pt', stop=6)  # 2 of epoch 1's 4 batches done
    resumed = run(make, shuffled, tmp_path / 'ck.pt')
    assert resumed.metrics.history[2]['time'] >= 4 * 0.02  # all four batches, not the two after the resume


def dropout_learner(dls, cbs=(), opt_func=torch.optim.SGD):
    """Dropout (so the global RNG matters) and a per-epoch StepLR (so the lr at the save matters)."""
    from torch.optim.lr_scheduler import StepLR

    from miniai.sched import EpochSchedCB
    m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
    return TrainLearner(m, dls, F.cross_entropy, lr=0.05, opt_func=opt_func,
                        cbs=[EpochSchedCB(partial(StepLR, step_size=1, gamma=0.5)), RecorderCB(lr=rec_lr), *cbs])


def test_a_validation_only_fit_leaves_the_lrs_and_the_random_state_to_the_run(tmp_path):
    whole = run(dropout_learner, shuffled)
    learn = run(dropout_learner, shuffled, tmp_path / 'ck.pt', stop=6)  # mid-epoch 1
    lr, rng = learn.opt.param_groups[0]['lr'], torch.get_rng_state()
    learn.fit(1, train=False)
    assert learn.opt.param_groups[0]['lr'] == lr and torch.equal(torch.get_rng_state(), rng)
    learn.save(tmp_path / 'after.pt')
    resumed = run(dropout_learner, shuffled, tmp_path / 'after.pt')
    assert all(torch.equal(p, q) for p, q in zip(whole.model.parameters(), resumed.model.parameters()))


class SaveBeforeEpoch(Callback):
    def __init__(self, path): self.path = path
    def before_epoch(self, learn):
        if learn.training and learn.epoch == 1:
            learn.save(self.path)
            raise CancelFitException()


def test_a_save_between_a_phase_and_the_next_keeps_the_pending_gradients(tmp_path):
    """MomentumLearner's gradients carry over: a save at the start of epoch 1 must hold them."""
    make = lambda dls, cbs=(): MomentumLearner(model(), dls, F.cross_entropy, lr=0.05, cbs=list(cbs))
    whole = run(make, shuffled)
    torch.manual_seed(0)
    make(shuffled(), [SaveBeforeEpoch(tmp_path / 'ck.pt')]).fit(3)
    assert any(g is not None for g in torch.load(tmp_path / 'ck.pt', weights_only=True)['grads'])
    resumed = run(make, shuffled, tmp_path / 'ck.pt')
    assert all(torch.equal(p, q) for p, q in zip(whole.model.parameters(), resumed.model.parameters()))


def test_a_resume_with_a_torch_scheduler_of_another_length_is_refused_before_training(tmp_path):
    sched = lambda n: BatchSchedCB(partial(OneCycleLR, max_lr=0.1, total_steps=n * 4))
    learn = run(lambda dls: TrainLearner(model(), dls, F.cross_entropy, cbs=[sched(3)]), shuffled, tmp_path / 'ck.pt',
                stop=5)
    other = TrainLearner(model(), shuffled(), F.cross_entropy, cbs=[sched(5)])
    before = [p.detach().clone() for p in other.model.parameters()]
    with pytest.raises(ValueError, match=r"checkpoint's OneCycleLR was built with total_steps=12, this fit's with "
                                         r"total_steps=20.*saved run's n_epochs"):
        other.fit(5, resume=tmp_path / 'ck.pt')
    assert all(torch.equal(p, q) for p, q in zip(before, other.model.parameters())) and learn.train_iter == 5


def test_a_refused_fit_keeps_the_optimizer_that_a_changed_opt_func_would_replace():
    learn = TrainLearner(model(), shuffled(), F.cross_entropy, opt_func=partial(torch.optim.SGD, momentum=0.9))
    learn.fit(1)
    opt, n_state = learn.opt, len(learn.opt.state)
    learn.opt_func = torch.optim.AdamW
    with pytest.raises(ValueError, match='refused'):
        learn.fit(1, cbs=[Refuse()])
    assert learn.opt is opt and len(opt.state) == n_state > 0


class SaveEachEpoch(Callback):
    order = -5  # before MetricsCB and EarlyStoppingCB: its save must still hold their epoch

    def __init__(self, path): self.path = path
    def after_epoch(self, learn):
        if learn.phase == learn.phases[-1]:
            learn.save(self.path / f'epoch{learn.epoch}.pt')


def test_a_save_in_after_epoch_holds_the_whole_epoch_whatever_the_savers_order(tmp_path):
    from miniai.early_stopping import EarlyStoppingCB
    make = lambda dls, cbs=(): metrics_learner(dls, [EarlyStoppingCB(patience=5), *cbs])
    whole = run(make, shuffled)
    torch.manual_seed(0)
    make(shuffled(), [SaveEachEpoch(tmp_path)]).fit(3)
    resumed = run(make, shuffled, tmp_path / 'epoch0.pt')
    assert rows(resumed) == rows(whole)
    assert [cb.state_dict() for cb in resumed.cbs[1:]] == [cb.state_dict() for cb in whole.cbs[1:]]


def test_a_validation_only_fit_builds_and_replaces_no_optimizer(tmp_path):
    make = lambda dls, cbs=(): TrainLearner(model(), dls, F.cross_entropy, lr=0.06, opt_func=torch.optim.AdamW,
                                            cbs=[BatchSchedCB(partial(OneCycleLR, max_lr=0.1, total_steps=12)), *cbs])
    whole = run(make, shuffled)
    torch.manual_seed(0)
    learn = make(shuffled())
    learn.fit(1, train=False)
    assert learn.opt is None
    learn.save(tmp_path / 'ck.pt')
    resumed = run(make, shuffled, tmp_path / 'ck.pt')
    assert all(torch.equal(p, q) for p, q in zip(whole.model.parameters(), resumed.model.parameters()))
    opt = whole.opt
    whole.opt_func = torch.optim.SGD
    whole.fit(1, train=False)
    assert whole.opt is opt and len(opt.state) > 0  # the next training fit builds the SGD
