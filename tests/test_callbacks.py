"""ProgressCB, RecorderCB, the schedule callbacks and the hooks, on tiny data."""

import matplotlib

matplotlib.use('Agg')
import gc  # noqa: E402
import sys  # noqa: E402
from functools import partial  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn, optim  # noqa: E402
from torch.optim import lr_scheduler  # noqa: E402
from torcheval.metrics import MulticlassAccuracy  # noqa: E402

import miniai.progress  # noqa: E402
from miniai import (  # noqa: E402
    ActivationStats,
    BatchSchedCB,
    CancelBatchException,
    EpochSchedCB,
    GeneralRelu,
    GradClipCB,
    Hook,
    Hooks,
    HooksCallback,
    Learner,
    MetricsCB,
    NonFiniteLossError,
    ProgressCB,
    RecorderCB,
    TrainCB,
    TrainLearner,
    append_stats,
    get_min,
    get_model,
    rec_lr,
    rec_mom,
)
from tests.test_learner import tiny_dls  # noqa: E402


def img_dls(n=32, bs=8):
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, TensorDataset
    g = torch.Generator().manual_seed(0)
    def ds(): return TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))
    return SimpleNamespace(train=DataLoader(ds(), bs), valid=DataLoader(ds(), bs))


def learner(cbs, opt_func=optim.SGD, **kw):
    torch.manual_seed(0)
    return TrainLearner(nn.Linear(3, 2), tiny_dls(), F.cross_entropy, lr=0.1, cbs=cbs, opt_func=opt_func, **kw)


def test_progress_without_terminal_prints_plain_rows(capsys):
    prog = ProgressCB(plot=True, every=2)
    learner([MetricsCB(accuracy=MulticlassAccuracy()), prog]).fit(2)
    out = capsys.readouterr().out
    assert '\r' not in out and '\x1b' not in out
    lines = out.strip().split('\n')
    assert lines[0].split() == ['accuracy', 'loss', 'epoch', 'train', 'time'] and len(lines) == 5
    assert len(prog.losses) == 6  # every training batch, read back in groups of `every`


def test_progress_in_terminal_uses_bars_and_table(monkeypatch, capsys):
    monkeypatch.setattr(miniai.progress, '_isatty', lambda: True)
    metrics, prog = MetricsCB(), ProgressCB()
    learn = learner([metrics, prog])
    learn.fit(2)
    out = capsys.readouterr().out
    assert 'loss' in out and 'eval' in out
    assert len(prog.losses) == 6 and prog.mbar is not None


def test_progress_losses_match_the_batches():
    losses = []
    class Spy(miniai.Callback):
        def after_loss(self, learn):
            if learn.training: losses.append(learn.loss.item())
    prog = ProgressCB(every=4)
    learner([prog, Spy()]).fit(2)
    assert prog.losses == pytest.approx(losses)


def test_recorder_records_lr_and_momentum_used_by_each_step():
    sched = partial(lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=6)
    rec = RecorderCB(lr=rec_lr, mom=rec_mom)
    learner([BatchSchedCB(sched), rec], opt_func=optim.AdamW).fit(2)
    opt = optim.AdamW(nn.Linear(1, 1).parameters(), lr=0.1)
    ref = lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=6)
    lrs, moms = [], []
    for _ in range(6):
        lrs.append(opt.param_groups[0]['lr'])
        moms.append(opt.param_groups[0]['betas'][0])
        opt.step()
        ref.step()
    assert rec.recs['lr'] == pytest.approx(lrs) and rec.recs['mom'] == pytest.approx(moms)
    assert rec.plot() is None  # a figure returned would show twice in a notebook (as the cell's result too)
    assert [ax.get_title() for ax in plt.gcf().axes] == ['lr', 'mom']


def test_recorder_reads_sgd_momentum():
    rec = RecorderCB(mom=rec_mom)
    learner([rec], opt_func=partial(optim.SGD, momentum=0.9)).fit(1)
    assert rec.recs['mom'] == [0.9] * 3


def test_epoch_sched_steps_once_per_training_epoch():
    cb = EpochSchedCB(partial(lr_scheduler.StepLR, step_size=1, gamma=0.5))
    learn = learner([cb])
    learn.fit(3)
    assert cb.schedo.last_epoch == 3 and learn.opt.param_groups[0]['lr'] == pytest.approx(0.1 / 8)


def test_batch_sched_steps_once_per_training_batch():
    cb = BatchSchedCB(partial(lr_scheduler.LambdaLR, lr_lambda=lambda i: 1.))
    learner([cb]).fit(2)
    assert cb.schedo.last_epoch == 6


def test_activation_stats_and_hooks_removed():
    torch.manual_seed(0)
    model = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), norm=nn.BatchNorm2d)
    stats = ActivationStats(lambda m: isinstance(m, GeneralRelu))
    learn = TrainLearner(model, img_dls(), F.cross_entropy, lr=0.1, cbs=[stats])
    learn.fit(1)
    assert len(stats) == 4
    assert all(len(h.stats[0]) == 4 for h in stats)  # training batches only
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    for plot, n_axes in ((stats.color_dim, 4), (stats.dead_chart, 4), (stats.plot_stats, 2)):
        assert plot() is None and len(plt.gcf().axes) == n_axes
    plt.close('all')


def test_append_stats_records_the_phases_its_hooks_callback_chooses():
    """As in the course: `HooksCallback` picks training and/or validation batches, `append_stats` keeps them all."""
    torch.manual_seed(0)
    model = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), norm=nn.BatchNorm2d)
    is_act = lambda m: isinstance(m, GeneralRelu)
    valid_only = HooksCallback(append_stats, is_act, on_train=False, on_valid=True)
    TrainLearner(model, img_dls(), F.cross_entropy, lr=0.1, cbs=[valid_only]).fit(1)
    n_valid = len(img_dls().valid)
    assert len(valid_only) == 4 and all(len(h.stats[0]) == n_valid for h in valid_only)
    with Hooks([m for m in model.modules() if is_act(m)], append_stats) as hooks:  # around a whole fit: both
        TrainLearner(model, img_dls(), F.cross_entropy, lr=0.1).fit(1)
    assert len(hooks) == 4 and all(len(h.stats[0]) == len(img_dls().train) + n_valid for h in hooks)


def test_hooks_removed_when_fit_raises():
    class Boom(miniai.Callback):
        def after_batch(self, learn): raise RuntimeError('boom')
    model = get_model()
    learn = TrainLearner(model, img_dls(), F.cross_entropy, cbs=[ActivationStats()])
    with pytest.raises(RuntimeError):
        learn.fit(1, cbs=[Boom()])
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_hook_and_hooks_context_managers():
    lin = nn.Linear(2, 2)
    def f(hook, mod, inp, out): hook.out = out
    with Hook(lin, f) as h:
        lin(torch.ones(1, 2))
        assert h.out.shape == (1, 2)
    assert len(lin._forward_hooks) == 0
    seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with Hooks(seq, f) as hs:
        assert len(hs) == 2 and all(len(m._forward_hooks) == 1 for m in seq)
    assert all(len(m._forward_hooks) == 0 for m in seq)


def test_progress_keeps_the_losses_of_a_fit_that_stopped_early():
    class StopAt(miniai.Callback):
        order = 100
        def after_batch(self, learn):
            if learn.train_iter == 2: raise miniai.CancelFitException()
    progress = ProgressCB(every=10)  # losses are read back every 10 batches: 2 are still on the device
    learner([progress, StopAt()]).fit(3)
    assert len(progress.losses) == 2 and progress.state_dict()['losses'] == progress.losses


def test_rec_mom_is_nan_for_optimizers_without_momentum():
    rec = RecorderCB(mom=rec_mom)
    learner([rec], opt_func=optim.Adagrad).fit(1)
    assert len(rec.recs['mom']) == 3 and all(m != m for m in rec.recs['mom'])


def test_sched_callbacks_want_a_callable():
    with pytest.raises(TypeError, match='BatchSchedCB: sched is a float; give a callable taking the optimizer'):
        BatchSchedCB(0.1)


def test_hooks_callback_hooks_the_given_modules_in_every_fit():
    from miniai import HooksCallback
    model = get_model()
    seen = []
    hooks = HooksCallback(lambda hook, mod, inp, out: seen.append(mod), mods=(m for m in model[:2]))
    learn = TrainLearner(model, img_dls(), F.cross_entropy, cbs=[hooks])
    for _ in range(2):
        seen.clear()
        learn.fit(1)
        assert len(hooks) == 2 and len(seen) == 2 * len(learn.dls.train)
    with pytest.raises(ValueError, match='mods is empty'):
        HooksCallback(print, mods=[])


class GRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.fc = nn.GRU(3, 4, batch_first=True), nn.Linear(4, 2)

    def forward(self, x): return self.fc(self.rnn(x[:, None])[0][:, -1])


def test_activation_stats_take_the_first_tensor_of_a_tuple_output():
    stats = ActivationStats()
    learn = TrainLearner(GRUNet(), tiny_dls(), F.cross_entropy, lr=0.1, cbs=[stats])
    learn.fit(1)
    assert [len(h.stats[0]) for h in stats] == [3, 3, 3]  # the net, its GRU (output, not hidden state), fc


def test_hooks_refuse_a_non_module_up_front(monkeypatch):
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"Hooks: hooks go on modules; got 'fc' \(str\)"):
        Hooks([lin, 'fc'], print)
    assert len(lin._forward_hooks) == 0
    unraisable = []  # errors in __del__
    monkeypatch.setattr(sys, 'unraisablehook', unraisable.append)
    with pytest.raises(TypeError, match='pass the module itself'):
        Hook('fc', print)
    gc.collect()
    assert unraisable == []


class AccumulateTwo(miniai.Callback):
    """Gradient accumulation: the even training batches are cancelled after their backward."""
    order = 2
    def after_backward(self, learn):
        if learn.iter % 2 == 0: raise CancelBatchException()


class CancelValidAfterLoss(miniai.Callback):
    order = 2
    def after_loss(self, learn):
        if not learn.training: raise CancelBatchException()


@pytest.mark.parametrize('order', [-1, 2])  # the cancelling callback runs before or after MetricsCB/ProgressCB
def test_batches_cancelled_after_backward_or_valid_loss_count(order):
    metrics, prog = MetricsCB(accuracy=MulticlassAccuracy()), ProgressCB(every=2)
    torch.manual_seed(0)
    dls = tiny_dls(n_train=8, n_valid=8)
    dls.valid = dls.train  # lr 0: the train row must equal the valid row, over the same data
    accumulate, cancel = AccumulateTwo(), CancelValidAfterLoss()
    accumulate.order = cancel.order = order
    learn = TrainLearner(nn.Linear(3, 2), dls, F.cross_entropy, lr=0., cbs=[metrics, prog, accumulate])
    learn.fit(1, cbs=[cancel])
    train, valid = metrics.history
    assert len(prog.losses) == 4 and sum(prog.losses) / 4 == pytest.approx(train['loss'])
    assert train['loss'] == pytest.approx(valid['loss']) and train['accuracy'] == valid['accuracy']


def test_a_batch_with_a_non_finite_loss_does_not_count():
    metrics, prog = MetricsCB(), ProgressCB()
    class NaNAt2(miniai.Callback):
        def after_loss(self, learn):
            if learn.iter == 2: learn.loss = learn.loss * float('nan')
    learn = learner([metrics, prog, NaNAt2()])
    with pytest.raises(NonFiniteLossError):
        learn.fit(1)
    assert len(prog.losses) == 2 and metrics.compute()['loss'] == pytest.approx(sum(prog.losses) / 2)


def test_progress_places_valid_points_at_their_epoch(monkeypatch):
    monkeypatch.setattr(miniai.progress, '_isatty', lambda: True)
    graphs, prog = [], ProgressCB(plot=True)
    class Spy(miniai.Callback):
        order = ProgressCB.order + 1
        def before_fit(self, learn): prog.mbar.update_graph = graphs.append
    class SkipFirstValid(miniai.Callback):
        def before_batch(self, learn):
            if not learn.training and learn.epoch == 0: raise CancelBatchException()
    learn = learner([MetricsCB(), prog, Spy(), SkipFirstValid()])
    with pytest.warns(UserWarning, match='no batch of the valid phase of epoch 0 counted'):
        learn.fit(2)
    assert graphs[-1][1] == [[6], [learn.metrics.history[-1]['loss']]]  # epoch 1 ends after 2 x 3 batches


def test_metrics_with_tuple_predictions():
    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)
        def forward(self, x): return self.lin(x), self.lin.weight.square().mean()
    def loss(preds, y): return F.cross_entropy(preds[0], y) + preds[1]
    learn = TrainLearner(Aux(), tiny_dls(), loss, cbs=[MetricsCB()])
    learn.fit(1)  # the loss alone needs no tensor predictions
    assert len(learn.metrics.history) == 2
    learn = TrainLearner(Aux(), tiny_dls(), loss, cbs=[MetricsCB(acc=MulticlassAccuracy())])
    with pytest.raises(TypeError, match=r'MetricsCB: the predictions \(learn.preds\) are a tuple, not a tensor'):
        learn.fit(1)


@pytest.mark.parametrize('names', [['train_loss'], ['valid_loss'], ['acc', 'train_acc'], ['train_acc', 'acc']])
def test_metrics_refuse_names_that_clash_with_derived_ones(names):
    with pytest.raises(ValueError, match=f"MetricsCB: '{names[-1] if names[-1].startswith('train') else names[0]}' "
                                         'is also the name MetricsCB gives'):
        MetricsCB(**{k: MulticlassAccuracy() for k in names})


def test_train_cb_gives_the_loss_every_item_after_the_inputs_as_the_course_does():
    from torch.utils.data import DataLoader, TensorDataset
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(6, 3, generator=g), torch.randint(0, 3, (6,), generator=g), torch.rand(6))
    dls = SimpleNamespace(train=DataLoader(ds, 3), valid=DataLoader(ds, 3))  # a 3rd item: a weight per item
    seen = []
    def weighted(p, y, w):
        seen.append(w)
        return (F.cross_entropy(p, y, reduction='none') * w).mean()
    Learner(nn.Linear(3, 3), dls, weighted, cbs=[TrainCB()]).fit(1)
    assert len(seen) == 4 and torch.equal(seen[0], ds.tensors[2][:3])


@pytest.mark.parametrize('every', [0, -5, 2.5, '3', True])
def test_progress_every_must_be_a_whole_number_of_batches(every):
    with pytest.raises(ValueError, match='ProgressCB: every is a number of batches, a whole number >= 1; got '):
        ProgressCB(every=every)


def test_every_way_of_taking_a_hook_out_of_hooks_takes_it_off_its_module():
    seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU())
    def on(): return [len(m._forward_hooks) for m in seq]
    def noop(*args): pass
    hs = Hooks(seq, noop)
    del hs[0:2]
    assert on() == [0, 0, 1, 1] and len(hs) == 2
    del hs[-1]
    assert on() == [0, 0, 1, 0]
    hs = Hooks(seq, noop)
    hs.pop()
    hs.remove(hs[0])
    assert on() == [0, 1, 1, 0] and len(hs) == 2
    hs[0] = hs[0]  # still in the list: stays on
    hs[1:] = []
    assert on() == [0, 1, 0, 0]
    hs.clear()
    assert on() == [0, 0, 0, 0]
    hs = Hooks(seq, noop)
    hs *= 0
    assert on() == [0, 0, 0, 0]
    hs = Hooks(seq, noop)
    hs.remove()  # all off their modules, kept in the list (with their stats)
    assert on() == [0, 0, 0, 0] and len(hs) == 4
    hs = Hooks(seq[:1], noop)
    hs.append(hs[0])
    hs.remove(hs[0])  # one of its two places: still listed, so still on
    assert on() == [1, 0, 0, 0] and len(hs) == 1


def test_a_mod_filter_that_picks_nothing_is_refused():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    stats = ActivationStats(lambda m: isinstance(m, GeneralRelu))
    learn = TrainLearner(model, tiny_dls(), F.cross_entropy, lr=0.1, cbs=[stats])
    with pytest.raises(ValueError, match="ActivationStats: mod_filter picks none of the model's modules"):
        learn.fit(1)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_hooks_refuse_a_torchscript_module_and_leave_no_hook_behind():
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match='Hooks: the module Linear is a TorchScript module .* takes no hooks'):
        Hooks([lin, torch.jit.script(nn.Linear(2, 2))], append_stats)
    assert len(lin._forward_hooks) == 0
    class Refuses(nn.Linear):
        def register_forward_hook(self, *args, **kwargs): raise RuntimeError('no hooks here')
    with pytest.raises(RuntimeError, match='no hooks here'):  # a refusal found only when hooking: rolled back
        Hooks([lin, Refuses(2, 2)], append_stats)
    assert len(lin._forward_hooks) == 0
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), torch.jit.script(nn.ReLU()))
    with pytest.raises(TypeError, match=r"ActivationStats: module '2' of the model is a TorchScript module .* leave "
                                        r'it out with mod_filter, e.g. mod_filter=lambda m: not isinstance'):
        TrainLearner(model, img_dls(), F.cross_entropy, cbs=[ActivationStats()]).fit(1)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    stats = ActivationStats(mod_filter=lambda m: not isinstance(m, torch.jit.ScriptModule))  # the fix it names
    TrainLearner(model, img_dls(), F.cross_entropy, cbs=[stats]).fit(1)
    assert [len(h.stats[0]) for h in stats] == [4, 4, 4]


def test_a_validation_only_fit_keeps_the_activation_stats_of_training():
    stats = ActivationStats(lambda m: isinstance(m, nn.Linear))
    valid_stats = HooksCallback(append_stats, lambda m: isinstance(m, nn.Linear), on_train=False, on_valid=True)
    learn = TrainLearner(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), img_dls(), F.cross_entropy, lr=0.1,
                         cbs=[stats, valid_stats])
    learn.fit(2)
    hooks = stats.hooks
    learn.fit(1, train=False)
    assert stats.hooks is hooks and len(hooks[0].stats[0]) == 8  # (as RecorderCB keeps its records)
    assert len(valid_stats.hooks[0].stats[0]) == len(img_dls().valid)  # it records this fit: afresh
    stats.plot_stats()


def test_get_min_is_the_share_of_all_activations_under_a_quarter():
    idt = nn.Identity()
    with Hook(idt, append_stats) as h:
        idt(torch.cat([torch.zeros(100), torch.full((900,), 50.)]))  # beyond the histogram's range of 10
        idt(torch.full((1000,), 50.))
        idt(torch.tensor([0.1, -0.2, 0.3, 5.]))
    assert get_min(h).tolist() == pytest.approx([0.1, 0., 0.5])


def test_activation_stats_plot_the_modules_that_recorded_and_name_the_others():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.aux, self.body = nn.Linear(784, 10), nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        def forward(self, x): return self.body(x)  # aux is not called
    stats = ActivationStats(lambda m: isinstance(m, nn.Linear))
    with pytest.raises(ValueError, match='ActivationStats: no hooked module has recorded a batch, so there is '
                                         'nothing to plot; fit with training batches first'):
        stats.plot_stats()
    TrainLearner(Net(), img_dls(), F.cross_entropy, lr=0.1, cbs=[stats]).fit(1)
    for plot, n_axes in ((stats.color_dim, 1), (stats.dead_chart, 1), (stats.plot_stats, 2)):
        with pytest.warns(UserWarning, match="ActivationStats: not plotted, having recorded no batch .*: module 'aux' "
                                             'of the model; leave them out with mod_filter'):
            plot()
        assert len(plt.gcf().axes) == n_axes
    assert [t.get_text() for t in plt.gcf().axes[0].get_legend().get_texts()] == ['1']  # body.1, 2nd hooked
    plt.close('all')


def test_a_validation_only_fit_keeps_the_progress_losses():
    prog = ProgressCB()
    learn = learner([MetricsCB(), prog])
    learn.fit(2)
    losses = list(prog.losses)
    learn.fit(1, train=False)
    assert len(losses) == 6 and prog.losses == losses and prog.state_dict()['losses'] == losses


class _Spy(miniai.Callback):
    """Keeps the graphs that `prog` draws."""
    order = ProgressCB.order + 1
    def __init__(self, prog): self.prog, self.graphs = prog, []
    def before_fit(self, learn): self.prog.mbar.update_graph = self.graphs.append


def test_progress_plots_a_validation_only_fit_with_no_training_loader(monkeypatch):
    monkeypatch.setattr(miniai.progress, '_isatty', lambda: True)
    prog = ProgressCB(plot=True)
    spy = _Spy(prog)
    learn = learner([MetricsCB(), prog, spy])
    learn.fit(1)
    learn.dls = SimpleNamespace(train=None, valid=learn.dls.valid)
    learn.fit(1, train=False)
    (train_x, _), (valid_x, valid_y) = spy.graphs[-1]
    assert train_x == [0, 1, 2] and valid_x == [3] and valid_y == [learn.metrics.history[-1]['loss']]


class SkipFirstTrain(miniai.Callback):
    def before_batch(self, learn):
        if learn.training and learn.iter == 0: raise CancelBatchException()


class ShortEpoch(miniai.Callback):
    def after_batch(self, learn):
        if learn.training and learn.iter == 1: raise miniai.CancelEpochException()


@pytest.mark.parametrize('cancel', [SkipFirstTrain, ShortEpoch])  # each: 2 of the 3 training batches an epoch
def test_progress_puts_valid_points_after_the_training_losses_so_far(monkeypatch, tmp_path, cancel):
    monkeypatch.setattr(miniai.progress, '_isatty', lambda: True)
    def run(n, **kw):
        prog = ProgressCB(plot=True)
        spy = _Spy(prog)
        learn = learner([MetricsCB(), prog, spy, cancel()])
        learn.fit(n, **kw)
        return learn, spy.graphs[-1]
    learn, (train, valid) = run(2)
    assert train[0] == [0, 1, 2, 3] and valid[0] == [2, 4]
    learn, _ = run(1)
    learn.save(tmp_path / 'ck.pt')
    _, (train, valid) = run(2, resume=tmp_path / 'ck.pt')  # the first epoch's point comes from the checkpoint
    assert train[0] == [0, 1, 2, 3] and valid[0] == [2, 4]


@pytest.mark.parametrize('n_inp', [0, -1, 1.5, '1', True])
def test_train_cb_refuses_an_n_inp_below_1(n_inp):
    with pytest.raises(ValueError, match=rf"TrainCB: n_inp is how many of the batch's first items the model takes, a "
                                         rf'whole number >= 1; got {n_inp!r}'):
        TrainCB(n_inp=n_inp)


@pytest.mark.parametrize('norm_type', [-1., 0, float('nan'), 'x', True])
def test_grad_clip_refuses_a_norm_type_torch_does_not_take(norm_type):
    with pytest.raises(ValueError, match=r"GradClipCB: norm_type is the p of the p-norm, a positive number or "
                                         rf"float\('inf'\) .*got {norm_type!r}"):
        GradClipCB(1., norm_type=norm_type)
    learner([GradClipCB(1., norm_type=float('inf'))]).fit(1)  # the largest |gradient|
