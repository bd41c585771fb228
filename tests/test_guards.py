"""Guards: the NaN/inf loss check, interrupts that clean up, bad inputs named with their fix, determinism."""

import warnings
from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset
from torcheval.metrics import MulticlassAccuracy

import miniai.progress
from miniai.callbacks import DeviceCB, TrainCB
from miniai.guards import BatchError, DeviceMismatchError, NonFiniteLossError
from miniai.hooks import ActivationStats
from miniai.learner import Callback, Learner, TrainLearner
from miniai.metrics import MetricsCB
from miniai.models import set_seed
from miniai.progress import ProgressCB
from miniai.sched import BatchSchedCB
from miniai.schedulers import CosineAnnealing, OneCycle

FIT_EVENTS = ('before_fit', 'after_fit', 'cleanup_fit', 'cleanup_epoch', 'cleanup_batch')


pytestmark = pytest.mark.usefixtures('one_thread')


def dls_of(x, y, bs=4, shuffle=False):
    return SimpleNamespace(train=DataLoader(TensorDataset(x, y), bs, shuffle=shuffle),
                           valid=DataLoader(TensorDataset(x, y), bs))


def data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] > 0).long()


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


class Log(Callback):
    """Logs the fit-level and cleanup events; snapshots the model's state before each training batch."""
    def __init__(self): self.events, self.before = [], None

    def __getattr__(self, name):
        if name not in FIT_EVENTS:
            raise AttributeError(name)
        return lambda learn: self.events.append(name)

    def before_batch(self, learn):
        if learn.training:
            self.before = {k: v.clone() for k, v in learn.model.state_dict().items()}


def same_state(model, sd): return all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


# -- the NaN/inf guard ------------------------------------------------------------------------------
def test_nan_in_the_data_stops_before_the_step_with_weights_and_bn_stats_intact():
    x, y = data()
    x[9, 2] = float('nan')  # in the third batch of 4
    log = Log()
    learn = TrainLearner(bn_model(), dls_of(x, y), F.cross_entropy, lr=0.1, cbs=[log])
    with pytest.raises(NonFiniteLossError) as e:
        learn.fit(2)
    msg = str(e.value)
    assert all(s in msg for s in ('epoch 0, batch 2', 'lr 0.1', 'inputs contain NaN', 'check the data'))
    assert same_state(learn.model, log.before)  # weights and BatchNorm running stats: as before the bad batch
    assert log.events[-3:] == ['cleanup_batch', 'cleanup_epoch', 'cleanup_fit']
    assert 'after_fit' not in log.events
    assert learn.train_iter == 2


class BlowUp(Callback):
    """Makes the loss infinite at training step `at`."""
    def __init__(self, at): self.at = at

    def after_loss(self, learn):
        if learn.training and learn.train_iter == self.at:
            learn.loss = learn.loss * float('inf')


def test_diverging_loss_names_epoch_batch_lr_and_what_to_try():
    x, y = data()
    learn = TrainLearner(bn_model(), dls_of(x, y), F.cross_entropy, lr=0.3, cbs=[BlowUp(5)],
                         opt_func=optim.AdamW)
    with pytest.raises(NonFiniteLossError, match=r'\[inf\] at epoch 1, batch 1 \(training step 5\) with lr '
                       r'0.3.*changed no weights.*lower learning rate.*gradient clipping.*check the data.*'
                       r'nan_guard=False'):
        learn.fit(2)
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


def test_nan_gradients_from_a_finite_loss_are_named_when_the_next_loss_is_nan():
    """sqrt of 0 in the loss: the value is finite, its gradient NaN, so the step spoils the weights and the
    guard fires a batch later; the message must not claim the weights are intact."""
    x, y = data()
    loss = lambda p, y: F.cross_entropy(p, y) + ((p - p.detach()) ** 2).sum().sqrt()
    learn = TrainLearner(bn_model(), dls_of(x, y), loss, lr=0.1)
    with pytest.raises(NonFiniteLossError, match=r'batch 1 .*weights were already NaN or inf.*an lr too high.*'
                                                 r'sqrt\(x \+ eps\)') as e:
        learn.fit(1)
    assert 'changed no weights' not in str(e.value) and 'lower learning rate' not in str(e.value)


@pytest.mark.parametrize('guard', [True, False])
def test_a_lazy_batchnorm_model_trains(guard):
    x, y = data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyLinear(8), nn.LazyBatchNorm1d(), nn.ReLU(), nn.Linear(8, 2))
    TrainLearner(model, dls_of(x, y), F.cross_entropy, lr=0.1, nan_guard=guard).fit(2)
    assert model[1].num_batches_tracked == 8


@pytest.mark.parametrize('bad', [0, 2])  # the batch that materialises the layer, or a later one
def test_a_nan_batch_leaves_a_lazy_batchnorms_running_stats_as_they_were(bad):
    x, y = data(12)
    x[4 * bad, 0] = float('nan')
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LazyBatchNorm1d(), nn.ReLU(), nn.Linear(8, 2))
    before = {}
    class Snapshot(Callback):
        def before_batch(self, learn):
            if learn.iter == bad and bad:  # the lazy layer has its buffers since the first batch
                before.update({k: v.clone() for k, v in learn.model[1].state_dict().items()})
    learn = TrainLearner(model, dls_of(x, y), F.cross_entropy, lr=0.1, cbs=[Snapshot()])
    with pytest.raises(NonFiniteLossError):
        learn.fit(1)
    after = model[1].state_dict()
    if not bad:  # as the layer is when new
        before = nn.BatchNorm1d(8).state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_nan_guard_can_be_turned_off():
    x, y = data()
    learn = TrainLearner(bn_model(), dls_of(x, y), F.cross_entropy, lr=0.1, cbs=[BlowUp(2)], nan_guard=False)
    learn.fit(1, valid=False)
    assert not torch.isfinite(learn.model[0].weight).all()


def test_nan_guard_skips_validation_losses():
    x, y = data()
    class NanValid(Callback):
        def after_loss(self, learn):
            if not learn.training:
                learn.loss = learn.loss * float('nan')
    metrics = MetricsCB()
    with pytest.warns(UserWarning, match='the valid loss of epoch 0 is nan'):  # reported, not raised
        TrainLearner(bn_model(), dls_of(x, y), F.cross_entropy, cbs=[NanValid(), metrics]).fit(1)
    assert metrics.history[-1]['loss'] != metrics.history[-1]['loss']


# -- interrupts -----------------------------------------------------------------------------------
class Raise(Callback):
    def __init__(self, at, exc): self.at, self.exc = at, exc

    def __getattr__(self, name):
        if name != self.at:
            raise AttributeError(name)

        def handler(learn):
            if learn.epoch == 1 or name == 'before_fit':
                raise self.exc
        return handler


def n_forward_hooks(model): return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize('at', ['before_fit', 'after_loss', 'after_epoch'])
@pytest.mark.parametrize('exc', [KeyboardInterrupt(), RuntimeError('a bug in a callback')])
def test_interrupts_clean_up_and_reraise(monkeypatch, capsys, at, exc):
    from fastprogress.fastprogress import ConsoleProgressBar
    monkeypatch.setattr(miniai.progress, '_isatty', lambda: True)  # draw console bars
    closed, on_interrupt = [], ConsoleProgressBar.on_interrupt
    monkeypatch.setattr(ConsoleProgressBar, 'on_interrupt', lambda b: closed.append(b) or on_interrupt(b))
    x, y = data()
    model = bn_model()
    metrics, progress, log = MetricsCB(MulticlassAccuracy()), ProgressCB(), Log()
    learn = TrainLearner(model, dls_of(x, y), F.cross_entropy, cbs=[DeviceCB('cpu'), metrics, progress, log])
    with pytest.raises(type(exc)):
        learn.fit(3, cbs=[ActivationStats(lambda m: isinstance(m, nn.Linear)), Raise(at, exc)])
    assert log.events[-1] == 'cleanup_fit' and 'after_fit' not in log.events
    if at != 'before_fit':
        assert log.events[-3:-1] == ['cleanup_batch', 'cleanup_epoch'] and closed  # the bars were closed
    assert learn.cbs[1:] == [metrics, progress, log]  # the fit's callbacks are gone
    assert n_forward_hooks(model) == 0 and '_log' not in vars(metrics)  # hooks off, MetricsCB prints again
    assert next(model.parameters()).device.type == 'cpu' and model(x).shape == (16, 2)  # usable
    learn.fit(1)


# -- bad input ------------------------------------------------------------------------------------
class DictDS(torch.utils.data.Dataset):
    def __len__(self): return 8
    def __getitem__(self, i): return {'image': torch.randn(4), 'label': i % 2}


@pytest.mark.parametrize('learner', ['TrainLearner', 'TrainCB'])
def test_batches_that_are_not_x_y_tuples(learner):
    mk = (lambda dls: TrainLearner(nn.Linear(4, 2), dls, F.cross_entropy)) if learner == 'TrainLearner' else (
        lambda dls: Learner(nn.Linear(4, 2), dls, F.cross_entropy, cbs=[TrainCB()]))
    dl = DataLoader(DictDS(), 4)
    with pytest.raises(BatchError, match=r"a dict with keys \['image', 'label'\].*as_tuple=True"):
        mk(SimpleNamespace(train=dl, valid=dl)).fit(1)
    dl = DataLoader(torch.randn(8, 4), 4)
    with pytest.raises(BatchError, match=r'a bare tensor \(torch.float32 \[4, 4\].*TensorDataset\(x, y\)'):
        mk(SimpleNamespace(train=dl, valid=dl)).fit(1)


@pytest.mark.parametrize('y, hint', [
    (torch.zeros(16), r'preds torch.float32 \[4, 2\].*target torch.float32 \[4\].*y.long\(\)'),
    (torch.zeros(16, 1, dtype=torch.long), r'torch.int64 \[4, 1\].*shape \[4\], not \[4, 1\].*squeeze'),
    (torch.full((16,), 5), r'labels range 5..5 but the model has 2 outputs.*0..1'),
    (torch.zeros(16, dtype=torch.int32), r'must be int64, not torch.int32: convert them with y.long\(\)')])
def test_labels_the_loss_cannot_use(y, hint):
    x, _ = data()
    with pytest.raises(BatchError, match=f'cross_entropy.*{hint}'):
        TrainLearner(nn.Linear(4, 2), dls_of(x, y), F.cross_entropy).fit(1)


def test_class_labels_with_the_default_loss_say_it_is_the_default():
    x, _ = data()
    with pytest.raises(BatchError, match=r"mse_loss is the Learner's default loss_func: for class labels pass "
                                         r'F.cross_entropy'), pytest.warns(UserWarning, match='target size'):
        TrainLearner(nn.Linear(4, 3), dls_of(x, torch.zeros(16, dtype=torch.long))).fit(1)
    with pytest.raises(BatchError) as e, pytest.warns(UserWarning, match='target size'):  # regression: no such hint
        TrainLearner(nn.Linear(4, 3), dls_of(x, torch.zeros(16, 2))).fit(1)
    assert 'cross_entropy' not in str(e.value)


@pytest.mark.parametrize('loss, msg', [
    (partial(F.cross_entropy, reduction='none'), r"The loss is torch.float32 \[4\] on cpu; backward needs a "
                                                 r"one-element loss.*reduction='mean'"),
    (lambda p, y: F.cross_entropy(p, y).item(), r'returned a float; the loss must be a tensor.*no .item\(\)')])
def test_losses_that_cannot_be_backpropagated(loss, msg):
    x, y = data()
    with pytest.raises(BatchError, match=msg):
        TrainLearner(nn.Linear(4, 2), dls_of(x, y), loss).fit(1)


def test_a_per_item_loss_trains_with_its_own_backward():
    class MeanBackward(TrainLearner):
        def backward(self): self.loss.mean().backward()
    x, y = data()
    learn = MeanBackward(nn.Linear(4, 2), dls_of(x, y), partial(F.cross_entropy, reduction='none'))
    before = learn.model.weight.detach().clone()
    learn.fit(1)
    assert not torch.equal(before, learn.model.weight)


def test_what_is_not_a_model_a_callback_or_dataloaders():
    x, y = data()
    with pytest.raises(TypeError, match='model is a function, not a torch nn.Module'):
        TrainLearner(lambda x: x, dls_of(x, y), F.cross_entropy)
    with pytest.raises(TypeError, match=r'pass an instance, ProgressCB\(\)'):
        TrainLearner(nn.Linear(4, 2), dls_of(x, y), F.cross_entropy, cbs=[ProgressCB])
    with pytest.raises(TypeError, match=r'42 is not a callback; pass a Callback'):
        TrainLearner(nn.Linear(4, 2), dls_of(x, y), F.cross_entropy).add_cb(42)
    with pytest.raises(TypeError, match=r'dls \(a tuple\) has no .train; give DataLoaders\(train, valid\)'):
        TrainLearner(nn.Linear(4, 2), (x, y), F.cross_entropy).fit(1)


def test_empty_loader_and_bad_epoch_counts():
    x, y = data()
    dls = dls_of(x[:0], y[:0])
    with pytest.raises(ValueError, match='dls.train has no batches.*drop_last'):
        TrainLearner(nn.Linear(4, 2), dls, F.cross_entropy).fit(1)
    dls.train = DataLoader(TensorDataset(x, y), 4)
    with pytest.raises(ValueError, match='dls.valid has no batches'):
        TrainLearner(nn.Linear(4, 2), dls, F.cross_entropy).fit(1)
    for n in (0, -2):
        with pytest.raises(ValueError, match='positive whole number'):
            TrainLearner(nn.Linear(4, 2), dls_of(x, y), F.cross_entropy).fit(n)


def test_scheduler_length_mismatch_warns_before_the_first_step():
    x, y = data()  # 4 batches an epoch: a 2-epoch fit takes 8 steps
    seen = []
    class FirstBatch(Callback):
        def before_batch(self, learn): seen.append(len(caught))
    for sched, what in ((partial(OneCycle, max_lr=0.1, total_steps=6), 'total_steps=6 but this fit takes 8'),
                        (partial(CosineAnnealing, T_max=20), 'T_max=20 but this fit takes 8')):
        seen.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            learn = TrainLearner(nn.Linear(4, 2), dls_of(x, y), F.cross_entropy, cbs=[BatchSchedCB(sched)])
            try:
                learn.fit(2, cbs=[FirstBatch()])
            except ValueError:  # OneCycle, stepped past its end
                pass
        assert seen[0] == 1 and what in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        TrainLearner(nn.Linear(4, 2), dls_of(x, y), F.cross_entropy,
                     cbs=[BatchSchedCB(partial(OneCycle, max_lr=0.1, total_steps=8))]).fit(2)


def test_objects_that_are_not_metrics():
    with pytest.raises(TypeError, match="'acc' is a function, not a torcheval Metric.*MulticlassAccuracy"):
        MetricsCB(acc=lambda preds, y: 0.)


def test_model_on_another_device_than_the_data():
    x, y = data()
    learn = TrainLearner(nn.Linear(4, 2).to('meta'), dls_of(x, y), F.cross_entropy)
    with pytest.raises(DeviceMismatchError, match=r'model is on meta but the batch is on cpu: add DeviceCB'):
        learn.fit(1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_model_on_cuda_data_on_cpu():
    x, y = data()
    learn = TrainLearner(nn.Linear(4, 2).cuda(), dls_of(x, y), F.cross_entropy)
    with pytest.raises(DeviceMismatchError, match=r'on cuda:0 but the batch is on cpu: add DeviceCB'):
        learn.fit(1)


# -- determinism ----------------------------------------------------------------------------------
def test_set_seed_deterministic_repeats_a_fit_exactly():
    def run():
        set_seed(7, deterministic=True)
        model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
                              nn.Linear(16, 2))
        losses = []
        class Losses(Callback):
            def after_loss(self, learn): losses.append(learn.loss.item())
        x, y = data(32, seed=int(torch.randint(100, ())))
        TrainLearner(model, dls_of(x, y, shuffle=True), F.cross_entropy, lr=0.01, opt_func=optim.AdamW,
                     cbs=[Losses()]).fit(2)
        return losses, model.state_dict()
    try:
        (la, wa), (lb, wb) = run(), run()
    finally:
        torch.use_deterministic_algorithms(False)
    assert la == lb and len(la) == 2 * (8 + 8) and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize('y, hint', [
    (torch.zeros(16), r'floats of shape \[4, 1\]: use y.float\(\).unsqueeze\(1\)'),
    (torch.zeros(16, 1, dtype=torch.long), r'floats of shape \[4, 1\]: use y.float\(\)\.$')])
def test_a_binary_loss_gets_binary_hints(y, hint):
    x, _ = data()
    with pytest.raises(BatchError, match=f'binary_cross_entropy_with_logits.*{hint}'):
        TrainLearner(nn.Linear(4, 1), dls_of(x, y), F.binary_cross_entropy_with_logits).fit(1)


@pytest.mark.filterwarnings('ignore:The reduce argument of torch.scatter')  # torcheval's, for average=None
def test_a_metric_giving_several_values_is_named():
    x, y = data()
    metrics = MetricsCB(per_class=MulticlassAccuracy(num_classes=2, average=None))
    with pytest.raises(ValueError, match=r"metric 'per_class' \(MulticlassAccuracy\) gives 2 values.*average="):
        TrainLearner(nn.Linear(4, 2), dls_of(x, y), F.cross_entropy, cbs=[metrics]).fit(1)


def test_a_loss_that_cannot_take_preds_and_targets_is_named_not_the_targets():
    from miniai.guards import call_loss
    preds, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(TypeError, match=r'loss_func mean_loss cannot be called as mean_loss\(preds, target\): .*'
                                        r'Fix: give a loss function of \(preds, targets\)'):
        def mean_loss(preds): return preds.mean()
        call_loss(mean_loss, preds, y)
    with pytest.raises(BatchError, match='Fix:'):  # a loss that takes them, and fails on their values: the targets
        call_loss(F.cross_entropy, preds, y.float()[:2])
    assert call_loss(nn.CrossEntropyLoss(), preds, y).ndim == 0  # a module's signature is read through forward
