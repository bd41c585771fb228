"""The Learner's event loop: the exact event sequence, cancelling, order, temporary callbacks, core callbacks."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset
from torcheval.metrics import MulticlassAccuracy

from miniai import (
    BatchTransformCB,
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    DeviceCB,
    Learner,
    MetricsCB,
    MomentumLearner,
    SingleBatchCB,
    TrainCB,
    TrainLearner,
    run_cbs,
    to_cpu,
    to_device,
)

EVENTS = ['before_fit', 'before_epoch', 'before_batch', 'after_predict', 'after_loss', 'after_backward',
          'after_step', 'after_batch', 'after_epoch', 'after_fit', 'cleanup_fit', 'cleanup_epoch', 'cleanup_batch']


def tiny_dls(n_train=6, n_valid=4, bs=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    def ds(n): return TensorDataset(torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g))
    return SimpleNamespace(train=DataLoader(ds(n_train), bs), valid=DataLoader(ds(n_valid), bs))


class EventLog(Callback):
    """Logs every event with whether the model is training; optionally raises `exc` at event `at`."""
    def __init__(self, at=None, exc=None, when=lambda learn: True):
        self.log, self.at, self.exc, self.when = [], at, exc, when

    def __getattr__(self, name):
        if name not in EVENTS: raise AttributeError(name)
        def handler(learn):
            self.log.append(name if name.endswith('_fit') else (name, learn.training))
            if name == self.at and self.when(learn): raise self.exc()
        return handler


def batch_events(training):
    steps = ['after_predict', 'after_loss'] + (['after_backward', 'after_step'] if training else [])
    return [(e, training) for e in ['before_batch', *steps, 'after_batch', 'cleanup_batch']]


def epoch_events(training, n_batches):
    return [('before_epoch', training), *batch_events(training) * n_batches,
            ('after_epoch', training), ('cleanup_epoch', training)]


def make_learner(cbs=(), **kw):
    torch.manual_seed(0)
    return TrainLearner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy, lr=0.1, cbs=list(cbs), **kw)


def test_exact_event_sequence_of_two_epochs():
    log = EventLog()
    make_learner([log]).fit(2)
    expected = ['before_fit', *(epoch_events(True, 3) + epoch_events(False, 2)) * 2, 'after_fit', 'cleanup_fit']
    assert log.log == expected


def test_cancel_batch_skips_rest_of_batch_only():
    log = EventLog('after_loss', CancelBatchException, when=lambda learn: learn.training and learn.iter == 1)
    learn = make_learner([log])
    w0 = learn.model.weight.detach().clone()
    learn.fit(1, valid=False)
    cancelled = [('before_batch', True), ('after_predict', True), ('after_loss', True), ('cleanup_batch', True)]
    expected = ['before_fit', ('before_epoch', True), *batch_events(True), *cancelled, *batch_events(True),
                ('after_epoch', True), ('cleanup_epoch', True), 'after_fit', 'cleanup_fit']
    assert log.log == expected
    assert not torch.equal(w0, learn.model.weight)  # the other batches trained
    assert learn.train_iter == 2  # the cancelled batch took no step


def test_cancel_epoch_skips_rest_of_epoch_and_goes_on():
    log = EventLog('after_batch', CancelEpochException, when=lambda learn: learn.training)
    make_learner([log]).fit(2)
    one = [('before_epoch', True), *batch_events(True)[:-1], ('cleanup_batch', True), ('cleanup_epoch', True),
           *epoch_events(False, 2)]
    assert log.log == ['before_fit', *one * 2, 'after_fit', 'cleanup_fit']


def test_cancel_fit_skips_after_fit_but_cleans_up():
    log = EventLog('after_batch', CancelFitException)
    learn = make_learner([log])
    learn.fit(3)
    assert log.log == ['before_fit', ('before_epoch', True), *batch_events(True)[:-1], ('cleanup_batch', True),
                       ('cleanup_epoch', True), 'cleanup_fit']
    assert learn.epoch == 0


def test_other_exceptions_run_cleanups_and_propagate():
    log = EventLog('after_loss', KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        make_learner([log]).fit(1)
    assert log.log[-3:] == [('cleanup_batch', True), ('cleanup_epoch', True), 'cleanup_fit']


def test_callbacks_run_sorted_by_order():
    calls = []
    class A(Callback):
        order = 2
        def before_fit(self, learn): calls.append('A')
    class B(Callback):
        order = -1
        def before_fit(self, learn): calls.append('B')
    class C(Callback):
        def before_fit(self, learn): calls.append('C')
    make_learner([A(), C(), B()]).fit(1)
    assert calls == ['B', 'C', 'A']
    calls.clear()
    run_cbs([A(), B(), C()], 'before_fit')
    assert calls == ['B', 'C', 'A']


def test_callback_receives_the_learner():
    seen = []
    class CB(Callback):
        def before_fit(self, learn): seen.append(learn)
    learn = make_learner([CB()])
    learn.fit(1)
    assert seen == [learn]


def test_fit_callbacks_are_temporary_even_when_fit_raises():
    learn = make_learner()
    keep = EventLog()
    learn.add_cb(keep)
    temp = EventLog('after_batch', RuntimeError)
    with pytest.raises(RuntimeError):
        learn.fit(1, cbs=[temp])
    assert learn.cbs == [keep]
    learn.fit(1, cbs=[EventLog()])
    assert learn.cbs == [keep]
    learn.remove_cb(keep)
    assert learn.cbs == []


def test_state_exposed_to_callbacks():
    seen = []
    class Spy(Callback):
        def after_batch(self, learn):
            seen.append((learn.epoch, learn.iter, learn.training, learn.n_epochs, learn.pct_train,
                         learn.loss.shape, learn.preds.shape, len(learn.batch), learn.opt is not None))
    make_learner([Spy()]).fit(2)
    train = [s for s in seen if s[2]]
    assert [s[:2] for s in train] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert [s[4] for s in train] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1])
    assert all(s[3] == 2 and s[5] == () and s[6] == (2, 2) and s[7] == 2 and s[8] for s in seen)


def test_trainlearner_equals_hand_written_sgd():
    learn = make_learner()
    torch.manual_seed(0)
    ref = nn.Linear(3, 2)
    opt = optim.SGD(ref.parameters(), lr=0.1)
    learn.fit(1, valid=False)
    for x, y in learn.dls.train:
        F.cross_entropy(ref(x), y).backward()
        opt.step()
        opt.zero_grad()
    assert torch.equal(ref.weight, learn.model.weight)


def test_plain_learner_with_traincb_matches_trainlearner():
    a = make_learner()
    torch.manual_seed(0)
    b = Learner(nn.Linear(3, 2), a.dls, F.cross_entropy, lr=0.1, cbs=[TrainCB()])
    a.fit(2)
    b.fit(2)
    assert torch.equal(a.model.weight, b.model.weight)


def test_momentum_learner_accumulates_gradients():
    torch.manual_seed(0)
    learn = MomentumLearner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy, lr=0.1, mom=0.5)
    torch.manual_seed(0)
    ref = nn.Linear(3, 2)
    learn.fit(1, valid=False)
    acc = [torch.zeros_like(p) for p in ref.parameters()]
    for x, y in learn.dls.train:
        grads = torch.autograd.grad(F.cross_entropy(ref(x), y), list(ref.parameters()))
        with torch.no_grad():
            for p, a, g in zip(ref.parameters(), acc, grads):
                a.mul_(0.5).add_(g)
                p -= 0.1 * a
    assert torch.allclose(ref.weight, learn.model.weight)


def test_fit_rejects_bad_epoch_counts():
    learn = make_learner()
    for n in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match='n_epochs'):
            learn.fit(n)


def test_fit_lr_overrides_learning_rate_and_optimizer_persists():
    learn = make_learner()
    learn.fit(1)
    opt = learn.opt
    learn.fit(1, lr=0.01)
    assert learn.opt is opt and opt.param_groups[0]['lr'] == 0.01


def test_splitter_gives_discriminative_param_groups():
    learn = make_learner(splitter=lambda m: [{'params': [m.weight], 'lr': 0.5}, {'params': [m.bias]}])
    learn.fit(1)
    assert [pg['lr'] for pg in learn.opt.param_groups] == [0.5, 0.1]


def test_metricscb_equals_hand_computation(capsys):
    metrics = MetricsCB(accuracy=MulticlassAccuracy())
    learn = make_learner([metrics])
    learn.fit(1, train=False)
    xs, ys = zip(*learn.dls.valid)
    x, y = torch.cat(xs), torch.cat(ys)
    with torch.no_grad(): preds = learn.model(x)
    row = metrics.history[-1]
    assert row['accuracy'] == pytest.approx((preds.argmax(1) == y).float().mean().item())
    assert row['loss'] == pytest.approx(F.cross_entropy(preds, y).item(), rel=1e-6)
    assert row['epoch'] == 0 and row['train'] is False and row['time'] >= 0
    out = capsys.readouterr().out.split('\n')
    assert out[0].split() == ['accuracy', 'loss', 'epoch', 'train', 'time']
    assert out[1].split()[:4] == [f"{row['accuracy']:.3f}", f"{row['loss']:.3f}", '0', 'eval']


def test_metricscb_weights_loss_by_batch_size():
    metrics = MetricsCB()
    learn = make_learner([metrics])
    learn.dls = tiny_dls(n_valid=5)  # batches of 2, 2, 1
    learn.fit(1, train=False)
    x, y = learn.dls.valid.dataset.tensors
    with torch.no_grad(): expected = F.cross_entropy(learn.model(x), y).item()
    assert metrics.history[-1]['loss'] == pytest.approx(expected, rel=1e-6)


def test_metricscb_one_row_per_train_and_valid_epoch():
    metrics = MetricsCB(MulticlassAccuracy())
    make_learner([metrics]).fit(2)
    assert [(r['epoch'], r['train']) for r in metrics.history] == [(0, True), (0, False), (1, True), (1, False)]
    assert set(metrics.history[0]) == {'MulticlassAccuracy', 'loss', 'epoch', 'train', 'time'}


def test_metricscb_names_are_unique_and_not_its_own_columns():
    with pytest.raises(ValueError, match="two metrics named 'MulticlassAccuracy'; name them yourself"):
        MetricsCB(MulticlassAccuracy(), MulticlassAccuracy(average='macro', num_classes=2))
    with pytest.raises(ValueError, match="'loss' is the name of a column MetricsCB writes itself"):
        MetricsCB(loss=MulticlassAccuracy())


def test_metricscb_history_is_the_last_fits():
    metrics = MetricsCB()
    learn = make_learner([metrics])
    learn.fit(2)
    learn.fit(1)
    assert [(r['epoch'], r['train']) for r in metrics.history] == [(0, True), (0, False)]


def test_metricscb_target_comes_after_traincbs_inputs():
    """With `TrainCB(n_inp=2)` a batch is (x, z, y): the metric compares the predictions with y, not z."""
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x, z): return self.lin(x)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=g), torch.randint(0, 2, (8,), generator=g)
    z = 1 - y
    metrics = MetricsCB(acc=MulticlassAccuracy())
    learn = Learner(TwoInputs(), SimpleNamespace(train=None, valid=DataLoader(TensorDataset(x, z, y), 4)),
                    F.cross_entropy, cbs=[TrainCB(n_inp=2), metrics])
    learn.fit(1, train=False)
    with torch.no_grad(): hits = learn.model(x, z).argmax(1)
    acc_y, acc_z = ((hits == t).float().mean().item() for t in (y, z))
    assert acc_y != acc_z and metrics.history[-1]['acc'] == pytest.approx(acc_y)


class FailingCleanup(Callback):
    def __init__(self, msg): self.msg = msg
    def cleanup_fit(self, learn): raise RuntimeError(self.msg)


def test_every_cleanup_handler_runs_and_no_error_is_lost():
    log = EventLog()
    with pytest.raises(RuntimeError, match='first') as e:
        make_learner([FailingCleanup('first'), FailingCleanup('second'), log]).fit(1)
    assert log.log[-1] == 'cleanup_fit'  # ran after the two that failed
    assert e.value.__notes__ == ['cleanup_fit of FailingCleanup also failed: RuntimeError: second']
    log = EventLog('after_loss', KeyboardInterrupt)  # an exception already passing through stays the one raised
    with pytest.raises(KeyboardInterrupt) as e:
        make_learner([FailingCleanup('first'), log]).fit(1)
    assert log.log[-1] == 'cleanup_fit'
    assert e.value.__notes__ == ['cleanup_fit of FailingCleanup also failed: RuntimeError: first']


class CtrlCInCleanup(Callback):
    order = -1  # before the EventLog
    def cleanup_fit(self, learn): raise KeyboardInterrupt


def test_a_ctrl_c_in_one_cleanup_handler_still_runs_the_others():
    log = EventLog()
    with pytest.raises(KeyboardInterrupt):
        make_learner([CtrlCInCleanup(), log]).fit(1)
    assert log.log[-1] == 'cleanup_fit'


class CtrlCInCleanupBatch(Callback):
    def cleanup_batch(self, learn): raise KeyboardInterrupt


def test_a_ctrl_c_in_a_cleanup_handler_is_not_carried_off_by_a_cancel():
    """The Ctrl-C lands while a `CancelEpochException` passes through `cleanup_batch`: the fit stops there."""
    log = EventLog('after_batch', CancelEpochException)
    with pytest.raises(KeyboardInterrupt) as e:
        make_learner([CtrlCInCleanupBatch(), log]).fit(3)
    assert isinstance(e.value.__context__, CancelEpochException)
    assert log.log.count(('before_epoch', True)) == 1 and log.log[-1] == 'cleanup_fit'


def test_a_plain_learner_without_traincb_says_what_to_add():
    learn = Learner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy)
    with pytest.raises(AttributeError, match="no attribute 'loss': nothing set it.*add TrainCB"):
        learn.fit(1)


def test_fit_lr_is_where_a_new_schedule_starts():
    """A scheduler built in a later fit starts from `fit(lr=...)`, not from the first fit's lr."""
    from functools import partial

    from miniai import BatchSchedCB, CosineAnnealing, RecorderCB, rec_lr
    learn = make_learner()
    sched = lambda: BatchSchedCB(partial(CosineAnnealing, T_max=len(learn.dls.train)))
    learn.fit(1, lr=0.1, cbs=[sched()])
    rec = RecorderCB(lr=rec_lr)
    learn.fit(1, lr=0.01, cbs=[sched(), rec])
    assert rec.recs['lr'][0] == pytest.approx(0.01)


def test_devicecb_moves_model_and_batches():
    seen = []
    class Spy(Callback):
        order = DeviceCB.order + 1
        def before_batch(self, learn): seen.append(learn.batch[0].device)
    learn = make_learner([DeviceCB('cpu'), Spy()])
    learn.fit(1)
    assert all(d.type == 'cpu' for d in seen) and next(learn.model.parameters()).device.type == 'cpu'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_devicecb_on_cuda():
    learn = make_learner([DeviceCB('cuda')])
    learn.fit(1)
    assert next(learn.model.parameters()).is_cuda


def test_to_device_and_to_cpu_walk_containers():
    b = {'x': torch.ones(2, dtype=torch.float16), 'y': [torch.zeros(1), 3]}
    assert to_device(b, 'cpu')['y'][1] == 3
    c = to_cpu(b)
    assert c['x'].dtype == torch.float32 and isinstance(c['y'], list)


def test_model_device_is_its_first_parameters_or_buffers():
    from miniai.device import model_device
    assert model_device(nn.Linear(2, 2).to('meta')) == torch.device('meta')
    assert model_device(nn.BatchNorm1d(2, affine=False).to('meta')) == torch.device('meta')  # buffers only
    assert model_device(nn.ReLU()) is None


def test_single_batch_cb_stops_after_one_batch():
    log = EventLog()
    make_learner([log, SingleBatchCB()]).fit(3)
    assert sum(1 for e in log.log if e == ('before_batch', True)) == 1
    assert log.log[-1] == 'cleanup_fit'


def test_batch_transform_cb_respects_train_and_valid_flags():
    seen = []
    class Spy(Callback):
        order = BatchTransformCB.order + 1
        def before_batch(self, learn): seen.append((learn.training, float(learn.batch[0].abs().max())))
    zero = lambda b: (b[0] * 0, b[1])
    make_learner([BatchTransformCB(zero, on_train=True, on_val=False), Spy()]).fit(1)
    assert all((m == 0) == t for t, m in seen)


def test_a_first_fit_lr_keeps_the_splitters_own_group_lrs():
    learn = make_learner(splitter=lambda m: [{'params': [m.weight], 'lr': 1e-4}, {'params': [m.bias]}])
    learn.fit(1, lr=1e-2)
    assert [pg['lr'] for pg in learn.opt.param_groups] == [1e-4, 1e-2]


def test_an_lr_that_no_param_group_would_take_is_refused():
    """Every group has the splitter's own lr: fit(lr)/create_opt(lr) would change nothing, so they say so."""
    learn = make_learner(splitter=lambda m: [{'params': [m.weight], 'lr': 1e-4}, {'params': [m.bias], 'lr': 1e-3}])
    learn.fit(1)
    for call in (lambda: learn.fit(1, lr=1e-2), lambda: learn.create_opt(1e-2)):
        with pytest.raises(ValueError, match='every param group has an lr of its own from the splitter'):
            call()
        assert [pg['lr'] for pg in learn.opt.param_groups] == [1e-4, 1e-3] and learn.lr != 1e-2


def test_a_refused_fit_callback_leaves_no_callback_behind():
    learn = make_learner()
    with pytest.raises(TypeError, match=r'pass an instance, MetricsCB\(\)'):
        learn.fit(1, cbs=[EventLog(), MetricsCB])
    assert learn.cbs == []


def test_callbacks_edited_on_learn_cbs_take_effect_at_the_next_fit():
    learn, a, b = make_learner(), EventLog(), EventLog()
    learn.add_cb(a)
    learn.fit(1)
    learn.cbs.remove(a)
    learn.cbs.append(b)
    learn.fit(1)
    assert len(a.log) == len(b.log) > 0


def test_an_optimizer_left_over_from_a_replaced_model_is_refused():
    learn = make_learner()
    learn.fit(1)
    learn.model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"not the model's.*learn.create_opt\(\)"):
        learn.fit(1)
    learn.create_opt()
    w = learn.model.weight.clone()
    learn.fit(1)
    assert not torch.equal(w, learn.model.weight)


def test_an_optimizer_over_part_of_the_model_or_with_extra_parameters_is_kept():
    learn = make_learner()
    temperature = nn.Parameter(torch.ones(()))
    learn.loss_func = lambda preds, y: F.cross_entropy(preds * temperature, y)
    learn.opt = optim.SGD([*learn.model.parameters(), temperature], lr=0.1)
    learn.fit(1)
    assert temperature.item() != 1.
    learn.opt = optim.SGD([learn.model.bias], lr=0.1)
    w = learn.model.weight.clone()
    learn.fit(1)
    assert torch.equal(w, learn.model.weight)
    learn.model = nn.Linear(3, 2)  # replaced, but only validated: the optimizer is not used
    learn.fit(1, train=False)


def test_create_opt_lr_is_the_lr_fits_start_at():
    learn = make_learner()
    learn.create_opt(lr=0.03)
    learn.fit(1)
    assert learn.lr == learn.opt.param_groups[0]['lr'] == 0.03
    with pytest.raises(ValueError, match='lr must be a finite number'):
        learn.create_opt(lr=-1)


def test_trainlearner_feeds_n_inp_inputs_to_the_model():
    class Add(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)
        def forward(self, a, b): return self.lin(a + b)
    g = torch.Generator().manual_seed(0)
    x1, x2, y = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g), torch.randint(0, 2, (6,), generator=g)
    dl = DataLoader(TensorDataset(x1, x2, y), 2)
    learn = TrainLearner(Add(), SimpleNamespace(train=dl, valid=dl), F.cross_entropy)
    learn.n_inp = 2
    learn.fit(1)
    preds, targets = learn.get_preds()
    assert torch.allclose(preds, learn.model(x1, x2).detach()) and torch.equal(targets, y)


def test_every_fit_starts_at_its_lr_or_learn_lr_and_the_splitters_own_lrs_stay():
    from functools import partial

    from miniai import BatchSchedCB, CosineAnnealing
    learn = make_learner(splitter=lambda m: [{'params': [m.weight], 'lr': 1e-4}, {'params': [m.bias]}])
    learn.fit(1, lr=1e-2)
    learn.fit(1, lr=1e-2)
    assert [pg['lr'] for pg in learn.opt.param_groups] == [1e-4, 1e-2]
    learn.fit(1, cbs=[BatchSchedCB(partial(CosineAnnealing, T_max=len(learn.dls.train), eta_min=1e-6))])
    learn.fit(1, train=False)  # validating only: the lrs stay the run's
    assert [pg['lr'] for pg in learn.opt.param_groups] == [1e-6, 1e-6]
    learn.fit(1)  # a plain fit starts at learn.lr, not where the schedule ended
    assert [pg['lr'] for pg in learn.opt.param_groups] == [1e-4, learn.lr]


def test_an_optimizer_set_by_hand_keeps_its_lrs_unless_fit_gets_one():
    learn = make_learner()
    learn.opt = optim.SGD(learn.model.parameters(), lr=0.5)
    learn.fit(1)
    assert learn.opt.param_groups[0]['lr'] == 0.5
    learn.fit(1, lr=0.2)
    assert learn.opt.param_groups[0]['lr'] == 0.2


@pytest.mark.parametrize('lr', [-0.1, float('nan'), float('inf'), '0.1', True])
def test_a_bad_fit_lr_is_refused_before_anything_changes(lr):
    learn = make_learner()
    learn.fit(1)
    before = learn.opt.state_dict()
    with pytest.raises(ValueError, match='lr must be a finite number'):
        learn.fit(1, lr=lr)
    assert learn.opt.state_dict() == before
    learn.fit(1)


def test_lr_with_resume_is_refused(tmp_path):
    learn = make_learner()
    learn.fit(1)
    learn.save(tmp_path / 'ck.pt')
    with pytest.raises(ValueError, match='drop lr'):
        learn.fit(2, lr=0.5, resume=tmp_path / 'ck.pt')
    assert learn.epoch == 0 and learn.train_iter == 3  # as the first fit left them: nothing ran


def test_bad_learner_and_fit_arguments_get_clear_errors():
    with pytest.raises(TypeError, match=r'pass an instance, CrossEntropyLoss\(\)'):
        TrainLearner(nn.Linear(3, 2), tiny_dls(), nn.CrossEntropyLoss)
    learn = make_learner()
    with pytest.raises(ValueError, match='would run nothing'):
        learn.fit(1, train=False, valid=False)
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self): return iter([(torch.randn(2, 3), torch.tensor([0, 1]))])
    stream = DataLoader(Stream(), batch_size=None)
    with pytest.raises(TypeError, match=r'dls.train \(a DataLoader\) has no length'):
        TrainLearner(nn.Linear(3, 2), SimpleNamespace(train=stream, valid=stream), F.cross_entropy).fit(1)
    with pytest.raises(TypeError, match=r'dls.valid is None; give a valid loader, or fit\(\.\.\., valid=False\)'):
        TrainLearner(nn.Linear(3, 2), SimpleNamespace(train=tiny_dls().train, valid=None), F.cross_entropy).fit(1)
    with pytest.raises(TypeError, match=r"loss_func is a str; pass a function of \(preds, targets\)"):
        TrainLearner(nn.Linear(3, 2), tiny_dls(), 'cross_entropy')
    with pytest.raises(ValueError, match=r'Learner\(lr=None\): .* give a number'):
        TrainLearner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy, lr=None)
    model = nn.Linear(3, 2)
    with pytest.raises(TypeError, match=r'opt_func is an optimizer already built \(AdamW\); pass what builds one.*'
                                        r'learn.opt = opt'):
        TrainLearner(model, tiny_dls(), F.cross_entropy, opt_func=optim.AdamW(model.parameters()))
    TrainLearner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy, lr=torch.tensor(0.1)).fit(1)  # (capturable ones')
    for lr in (float('nan'), float('inf'), -1.):
        with pytest.raises(ValueError, match=r'Learner\(lr=.*\): lr must be a finite number >= 0'):
            TrainLearner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy, lr=lr)


class RemovesItself(Callback):
    def after_epoch(self, learn): learn.remove_cb(self)


def test_a_fit_callback_that_removes_itself_leaves_no_callback_behind():
    learn = make_learner()
    learn.fit(2, cbs=[RemovesItself(), other := EventLog()])
    assert learn.cbs == [] and other.log[-1] == 'cleanup_fit'


def test_callbacks_are_added_once_and_a_single_one_needs_no_list():
    import numpy as np
    log = EventLog()
    learn = TrainLearner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy, cbs=log)
    with pytest.raises(ValueError, match='added twice'):
        learn.fit(1, cbs=[log])
    with pytest.raises(ValueError, match='added twice'):
        learn.add_cb(EventLog()).fit(1, cbs=[e := EventLog(), e])
    with pytest.raises(ValueError, match='not one of'):
        learn.remove_cb(EventLog())
    learn.fit(np.int64(1), cbs=EventLog())
    assert learn.n_epochs == 1 and type(learn.n_epochs) is int


class CourseSGD:
    """The course's hand-written optimizer: `step` and `zero_grad`, no param groups."""
    def __init__(self, params, lr, wd=0.): self.params, self.lr = list(params), lr
    def step(self): pass
    def zero_grad(self): pass


def test_an_optimizer_that_is_not_a_torch_optimizer_is_refused_with_the_fix():
    learn = TrainLearner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy, lr=0.1, opt_func=CourseSGD)
    with pytest.raises(TypeError, match=r'opt_func gave a CourseSGD, not a torch.optim.Optimizer.*subclass of '
                                        r'torch.optim.Optimizer'):
        learn.fit(1)
    learn.opt = CourseSGD(learn.model.parameters(), 0.1)
    with pytest.raises(TypeError, match='learn.opt gave a CourseSGD'):
        learn.fit(1)


def test_the_optimizer_carries_over_unless_opt_func_changed():
    learn = TrainLearner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy, lr=0.1,
                         opt_func=lambda ps, lr: optim.SGD(ps, lr, momentum=0.9))
    learn.fit(1)
    opt = learn.opt
    learn.fit(1)
    assert learn.opt is opt and opt.state  # its momentum buffers too
    learn.opt_func = optim.AdamW
    learn.fit(1)
    assert isinstance(learn.opt, optim.AdamW)
    opt = learn.opt
    learn.fit(1)
    assert learn.opt is opt


class Wrapped:
    """An optimizer wrapper by composition: it has what the Learner uses of an optimizer."""
    def __init__(self, params, lr): self.inner = optim.SGD(params, lr)
    param_groups = property(lambda self: self.inner.param_groups)
    state = property(lambda self: self.inner.state)
    def step(self, closure=None): return self.inner.step(closure)
    def zero_grad(self, set_to_none=True): self.inner.zero_grad(set_to_none)
    def state_dict(self): return self.inner.state_dict()
    def load_state_dict(self, sd): self.inner.load_state_dict(sd)


def test_an_optimizer_wrapper_with_what_the_learner_uses_trains(tmp_path):
    learn = TrainLearner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy, lr=0.1, opt_func=Wrapped)
    w = learn.model.weight.detach().clone()
    learn.fit(1)
    assert not torch.equal(w, learn.model.weight)
    w = learn.model.weight.detach().clone()
    learn.lr_find(num_it=3)  # puts the optimizer back through its read-only param_groups
    assert torch.equal(w, learn.model.weight) and learn.opt.param_groups[0]['lr'] == 0.1
    learn.save(tmp_path / 'ck.pt')
    other = TrainLearner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy, lr=0.1, opt_func=Wrapped)
    other.load(tmp_path / 'ck.pt')  # the same, through the Learner's own restore
    assert torch.equal(other.model.weight, learn.model.weight)


def test_load_and_fit_one_cycle_use_the_optimizer_of_a_changed_opt_func(tmp_path):
    sgd = TrainLearner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy, lr=0.1, opt_func=optim.SGD)
    sgd.fit(1)  # an optimizer without momentum
    sgd.opt_func = optim.AdamW
    sched = sgd.fit_one_cycle(1, 0.1)
    assert isinstance(sgd.opt, optim.AdamW) and 'mom' in sched.scheds  # AdamW's beta1 cycles ('auto')
    sgd.save(tmp_path / 'adamw.pt')
    learn = TrainLearner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy, lr=0.1, opt_func=optim.SGD)
    learn.fit(1)
    learn.opt_func = optim.AdamW
    learn.load(tmp_path / 'adamw.pt')  # into a new AdamW, as the next fit would build
    assert isinstance(learn.opt, optim.AdamW) and learn.opt.state_dict()['state']
