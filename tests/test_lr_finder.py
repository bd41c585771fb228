"""The LR finder: its lr sequence and smoothed loss, early stopping, suggestions and plot, and that `lr_find`
leaves no trace (weights, buffers, optimizer, RNGs, callbacks, modes, device), also when it raises."""

import copy
import math
import random
from functools import partial
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset
from torcheval.metrics import MulticlassAccuracy

from miniai.callbacks import DeviceCB
from miniai.checkpoint import CheckpointCB
from miniai.data import DeviceLoader
from miniai.learner import Callback, CancelFitException, TrainLearner
from miniai.lr_finder import LRFinderCB, LRFindResult, lr_find, suggest_lrs
from miniai.metrics import MetricsCB
from miniai.no_trace import no_trace
from miniai.sched import BatchSchedCB, RecorderCB, rec_lr

matplotlib.use('Agg')
SGD = partial(optim.SGD, momentum=0.9)
OPTS = {'sgd': SGD, 'adamw': partial(optim.AdamW, betas=(0.9, 0.99), weight_decay=0.1)}


pytestmark = pytest.mark.usefixtures('one_thread')


def tiny_dls(n=64, bs=8, generator=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    ds = TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())
    train = DataLoader(ds, bs, shuffle=True, generator=generator)
    return SimpleNamespace(train=train, valid=DataLoader(ds, bs))


def make_learner(opt_func=SGD, cbs=(), own_generator=False, dls=None, n_in=4):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(16, 3))
    dls = dls or tiny_dls(generator=torch.Generator().manual_seed(1) if own_generator else None)
    return TrainLearner(model, dls, F.cross_entropy, lr=0.05, cbs=list(cbs), opt_func=opt_func)


def weights(learn): return {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
def hypers(opt): return [{k: v for k, v in pg.items() if k != 'params'} for pg in opt.param_groups]


def assert_equal_tensors(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def assert_same_opt(a, b):
    """Optimizer state dicts (as returned by `state_dict()`) equal exactly."""
    assert a['param_groups'] == b['param_groups'] and a['state'].keys() == b['state'].keys()
    for k in a['state']:
        assert_equal_tensors(a['state'][k], b['state'][k])


class Noisy(Callback):
    """Draws from Python's and NumPy's RNGs every batch, as augmentations may."""
    def before_batch(self, learn): self.draw = (random.random(), np.random.rand())


class Counter(Callback):
    def __init__(self, skip=None):
        self.n = 0
        if skip is not None:
            self.skip_in_lr_find = skip
    def after_batch(self, learn): self.n += 1


class FixLR(Callback):
    """Sets its own lr before each batch, late (high `order`): the finder's lr must still be the one used."""
    order = 10
    def before_batch(self, learn): learn.opt.param_groups[0]['lr'] = 0.5


class PoisonLoss(Callback):
    """Makes the loss NaN from step `at` on (before the finder and the Learner's NaN guard see it)."""
    order = 50

    def __init__(self, at): self.at = at

    def after_loss(self, learn):
        if learn.train_iter >= self.at:
            learn.loss = learn.loss * float('nan')


class RawLoss(Callback):
    def before_fit(self, learn): self.losses = []
    def after_loss(self, learn): self.losses.append(learn.loss.item())


@pytest.mark.parametrize('opt', OPTS)
@pytest.mark.parametrize('warm', [False, True], ids=['no_opt', 'warm_opt'])
@pytest.mark.parametrize('own_generator', [False, True], ids=['global_rng', 'own_generator'])
def test_lr_find_then_fit_equals_fit(opt, warm, own_generator):
    def run(find):
        learn = make_learner(OPTS[opt], cbs=[Noisy()], own_generator=own_generator)
        if warm:
            learn.fit(1)
        if find:
            opt_obj = learn.opt
            before = None if opt_obj is None else (hypers(opt_obj), copy.deepcopy(opt_obj.state_dict()))
            w = weights(learn)
            res = learn.lr_find(num_it=20, end_lr=1.)  # 8 batches an epoch: loops over the loader
            assert len(res.lrs) == 20 and learn.opt is opt_obj
            assert_equal_tensors(w, weights(learn))
            if before is not None:
                assert hypers(learn.opt) == before[0]
                assert_same_opt(learn.opt.state_dict(), before[1])
        learn.fit(2)
        return weights(learn)
    assert_equal_tensors(run(True), run(False))


def test_lr_find_restores_rngs_modes_grads_and_callbacks():
    counted, skipped, noisy = Counter(), Counter(skip=True), Noisy()
    learn = make_learner(cbs=[noisy, counted, skipped])
    learn.fit(1)
    learn.model.eval()
    learn.model[2].train()  # a mixed mode: only the BatchNorm trains
    modes = [m.training for m in learn.model.modules()]
    for p in learn.model.parameters():
        p.grad = torch.full_like(p, 0.5)
    cbs, n_counted = list(learn.cbs), counted.n
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    learn.lr_find(num_it=12)
    assert [m.training for m in learn.model.modules()] == modes
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in learn.model.parameters())
    assert learn.cbs == cbs and not any(isinstance(cb, LRFinderCB) for cb in learn.cbs)
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    assert counted.n == n_counted + 12 and skipped.n == n_counted  # `skip_in_lr_find` True pauses it


def test_other_callbacks_are_not_corrupted_and_schedulers_do_not_fight():
    def run(find):
        metrics, rec = MetricsCB(MulticlassAccuracy()), RecorderCB(lr=rec_lr)
        # OneCycleLR raises when stepped past total_steps: the 30 lr_find batches would break it if it ran
        sched = BatchSchedCB(partial(optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=16))
        learn = make_learner(cbs=[metrics, rec, sched])
        learn.fit(2)
        if find:
            hist, recs, cbs = copy.deepcopy(metrics.history), copy.deepcopy(rec.recs), list(learn.cbs)
            res = learn.lr_find(num_it=30, end_lr=1.)
            assert len(res.lrs) == 30 and learn.cbs == cbs
            assert metrics.history == hist and rec.recs == recs
        learn.fit(2)
        return weights(learn), [h['loss'] for h in metrics.history], rec.recs['lr']
    (w1, losses1, lrs1), (w2, losses2, lrs2) = run(True), run(False)
    assert_equal_tensors(w1, w2)
    assert losses1 == losses2 and lrs1 == lrs2


def test_device_loader_epoch_counter_is_restored():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 2, 2), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)

    def run(find):
        dls = SimpleNamespace(train=DeviceLoader(x, y, bs=8, shuffle=True, device='cpu', seed=0),
                              valid=DeviceLoader(x, y, bs=8, device='cpu'))
        learn = make_learner(dls=dls)
        if find:
            learn.lr_find(num_it=20)
        learn.fit(2)
        return weights(learn)
    assert_equal_tensors(run(True), run(False))


def test_lr_sequence_and_smoothed_loss_follow_the_formulas():
    learn, rec, raw = make_learner(), RecorderCB(lr=rec_lr), RawLoss()
    finder = LRFinderCB(start_lr=1e-5, end_lr=1e-1, num_it=20, smooth=0.9, stop_div=False)
    learn.fit(5, cbs=[finder, rec, raw, FixLR()])  # usable on its own; skips validation, stops at num_it
    expected = [1e-5 * (1e-1 / 1e-5) ** (i / 20) for i in range(20)]
    assert finder.lrs == expected and rec.recs['lr'] == expected and learn.train_iter == 20
    avg, smoothed = 0., []
    for i, loss in enumerate(raw.losses):
        avg = 0.9 * avg + 0.1 * loss
        smoothed.append(avg / (1 - 0.9 ** (i + 1)))
    assert len(raw.losses) == 20 and finder.losses == pytest.approx(smoothed, rel=1e-12)


def test_stops_early_on_divergence_unless_told_not_to():
    learn = make_learner()
    res = learn.lr_find(end_lr=1e10, num_it=100)
    assert 2 < len(res.lrs) < 100
    *before, last = res.losses
    assert not math.isfinite(last) or last > 4 * min(before)
    best = math.inf
    for v in before:  # it went on while the loss stayed finite and below 4x its minimum so far
        best = min(best, v)
        assert v <= 4 * best
    full = learn.lr_find(end_lr=1e10, num_it=100, stop_div=False)
    assert len(full.lrs) == 100 and full.lrs[:len(res.lrs)] == res.lrs
    assert not all(math.isfinite(v) and v <= 4 * min(full.losses) for v in full.losses)


def test_a_nan_loss_stops_it_unless_told_not_to():
    learn = make_learner(cbs=[PoisonLoss(at=30)])
    res = learn.lr_find(num_it=60)
    assert len(res.lrs) == 31 and math.isnan(res.losses[-1]) and all(map(math.isfinite, res.losses[:-1]))
    full = learn.lr_find(num_it=60, stop_div=False)  # the Learner's NaN guard is off meanwhile
    assert len(full.lrs) == 60 and all(map(math.isnan, full.losses[30:]))
    assert full.losses[:30] == res.losses[:30] and learn.nan_guard  # the same run up to the NaN
    finder = LRFinderCB(num_it=40, stop_div=False)
    learn.fit(5, cbs=[finder])  # on its own too, it puts the guard back
    assert len(finder.lrs) == 40 and learn.nan_guard


def same(a, b):
    """Nested containers of tensors, arrays and plain values equal exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def test_the_learners_state_and_checkpoint_are_unchanged(tmp_path):
    learn = make_learner(OPTS['adamw'], cbs=[MetricsCB(), RecorderCB(lr=rec_lr), CheckpointCB(tmp_path)])
    learn.fit(1)
    saved = (tmp_path / 'checkpoint.pt').read_bytes()
    attrs, ck, pgs = dict(vars(learn)), copy.deepcopy(learn.state_dict()), list(learn.opt.param_groups)
    learn.lr_find(num_it=20)
    assert all(a is b for a, b in zip(learn.opt.param_groups, pgs, strict=True))  # callbacks may hold them
    assert vars(learn).keys() == attrs.keys()
    assert all(v is attrs[k] for k, v in vars(learn).items() if k != '_handlers')
    assert same(learn.state_dict(), ck)  # what a checkpoint saved now would hold
    assert (tmp_path / 'checkpoint.pt').read_bytes() == saved  # CheckpointCB did not overwrite it


LRS = 10 ** np.linspace(-7, 1, 81)  # a point every 0.1 decade; index 50 is 1e-2, index 30 is 1e-4


def test_suggestions_on_a_synthetic_curve():
    losses = (np.log10(LRS) + 2) ** 2  # minimum at 1e-2
    s = suggest_lrs(LRS, losses)
    assert s['minimum'] == pytest.approx(1e-3) and s['upper'] == s['minimum']
    assert s['lower'] == pytest.approx(1e-3 / 6)
    assert s['steep'] == LRS[0]  # a parabola falls fastest at its left end
    assert s['valley'] == LRS[33]  # the valley runs from index 0 to 50: 2/3 of the way down
    assert suggest_lrs(LRS, [*losses[:-1], np.nan]) == s  # non-finite losses (and what follows) are dropped
    x = np.log10(LRS)
    cliff = 2 - np.tanh(2 * (x + 4)) + np.maximum(x + 1, 0) ** 2  # falls fastest at 1e-4, minimum near 1e-1
    s = suggest_lrs(LRS, cliff)
    assert s['steep'] == pytest.approx(1e-4) and s['minimum'] == pytest.approx(LRS[60] / 10)
    assert LRS[0] < s['valley'] < LRS[60]
    assert suggest_lrs(LRS, cliff, skip_start=40)['steep'] == LRS[40]
    with pytest.raises(ValueError, match='at least 2'):
        suggest_lrs(LRS[:3], [1., np.inf, 1.])


def test_result_and_plot():
    losses = list((np.log10(LRS) + 2) ** 2)
    res = LRFindResult(list(LRS), losses)
    assert res.minimum == pytest.approx(1e-3) and res.lower == pytest.approx(1e-3 / 6)
    assert 'minimum=' in repr(res) and 'lrs' not in repr(res)
    assert res.plot() is None  # a notebook shows the figure once
    fig = matplotlib.pyplot.gcf()
    ax = fig.axes[0]
    assert ax.get_xscale() == 'log'
    labels = ' '.join(t.get_text() for t in ax.get_legend().get_texts())
    assert all(nm in labels for nm in ('minimum', 'steep', 'valley', 'cyclical'))
    matplotlib.pyplot.close(fig)


def test_plot_leaves_out_the_divergence_the_suggestions_leave_out():
    losses = list((np.log10(LRS) + 2) ** 2)
    losses[-1] = 1e4  # the diverged last point: drawn, it would squash the curve
    LRFindResult(list(LRS), losses).plot()
    fig = matplotlib.pyplot.gcf()
    curve = fig.axes[0].lines[0].get_ydata()
    assert len(curve) == len(LRS) - 5 and max(curve) < 100 and fig.axes[0].get_ylim()[1] < 100
    matplotlib.pyplot.close(fig)


def test_result_skips_a_tenth_of_the_finite_points():
    losses = [2. - 0.05 * i for i in range(15)] + [math.nan] * 66  # stop_div=False: a NaN tail
    res = LRFindResult(list(LRS), losses)
    assert res.minimum == suggest_lrs(LRS, losses, skip_start=1, skip_end=1)['minimum'] == LRS[13] / 10


@pytest.mark.parametrize('warm', [False, True], ids=['no_opt', 'warm_opt'])
def test_restores_everything_when_the_fit_raises(warm):
    class Boom(Callback):
        def after_step(self, learn):
            if learn.train_iter == 3:
                raise RuntimeError('boom')

    learn = make_learner(OPTS['adamw'], cbs=[MetricsCB()])
    if warm:
        learn.fit(1)
    opt, sd = learn.opt, None if learn.opt is None else copy.deepcopy(learn.opt.state_dict())
    w, cbs, rng, mode = weights(learn), list(learn.cbs), torch.get_rng_state(), learn.model.training
    boom = Boom()
    learn.add_cb(boom)
    with pytest.raises(RuntimeError, match='boom'):
        learn.lr_find(num_it=20)
    learn.remove_cb(boom)
    assert_equal_tensors(w, weights(learn))
    assert learn.opt is opt and learn.cbs == cbs and learn.model.training == mode
    assert torch.equal(torch.get_rng_state(), rng)
    if warm:
        assert_same_opt(learn.opt.state_dict(), sd)


def test_argument_checks():
    for nm, kw in (('start_lr', {'start_lr': 1., 'end_lr': 1e-3}), ('num_it', {'num_it': 0}),
                   ('smooth', {'smooth': 1.})):
        with pytest.raises(ValueError, match=nm):
            LRFinderCB(**kw)
    with pytest.raises(ValueError, match='num_it .* at least 2'):
        make_learner().lr_find(num_it=1)
    with pytest.raises(ValueError, match='both finite'):
        LRFinderCB(end_lr=math.inf)
    assert len(make_learner().lr_find(num_it=np.int64(5), show_plot=False).lrs) == 5  # a NumPy count, as fit takes
    assert lr_find is TrainLearner.lr_find


class NoisyItems(torch.utils.data.Dataset):
    """Items augmented at random in the loader's worker process."""
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g)
    def __len__(self): return 32
    def __getitem__(self, i): return self.x[i] + 0.1 * torch.randn(4), self.y[i]


def test_lr_find_then_fit_equals_fit_with_persistent_workers():
    """The workers `lr_find` started drew augmentations the fit would have drawn: the fit starts new ones."""
    def weights(find):
        dl = DataLoader(NoisyItems(), 8, num_workers=1, persistent_workers=True)
        torch.manual_seed(0)
        learn = TrainLearner(nn.Linear(4, 2), SimpleNamespace(train=dl, valid=dl), F.cross_entropy, lr=0.1)
        if find:
            learn.lr_find(num_it=3, show_plot=False)
        learn.fit(1, valid=False)
        return learn.model.weight.detach().clone()
    assert torch.equal(weights(False), weights(True))


def test_non_persistent_buffers_are_restored():
    class RunningScale(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer('ema', torch.ones(4), persistent=False)

        def forward(self, x):
            if self.training: self.ema.mul_(0.9).add_(0.1 * x.abs().mean(0))
            return x / self.ema

    learn = make_learner()
    learn.model = nn.Sequential(RunningScale(), learn.model)
    ema = learn.model[0].ema.clone()
    learn.lr_find(num_it=5)
    assert torch.equal(ema, learn.model[0].ema)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_device_and_rng_restored():
    def run(find):
        learn = make_learner(OPTS['adamw'], cbs=[DeviceCB('cuda')])
        learn.fit(1)  # the model and the optimizer state now live on the GPU
        learn.model.cpu()
        if find:
            cuda_rng = torch.cuda.get_rng_state()
            learn.lr_find(num_it=20)
            assert all(p.device.type == 'cpu' for p in learn.model.parameters())
            assert torch.equal(torch.cuda.get_rng_state(), cuda_rng)
        learn.fit(2)  # dropout on the GPU draws from the CUDA RNG
        return {k: v.cpu() for k, v in weights(learn).items()}
    assert_equal_tensors(run(True), run(False))


class FailsToStart(Callback):
    def before_fit(self, learn): raise RuntimeError('the real problem')


def test_lr_find_reports_the_real_error_when_the_fit_cannot_start():
    """LRFinderCB's cleanup does not hide another callback's `before_fit` error behind its own."""
    learn = make_learner(cbs=[FailsToStart()])
    with pytest.raises(RuntimeError, match='the real problem') as e:
        learn.lr_find(num_it=5)
    assert not getattr(e.value, '__notes__', None) and learn.nan_guard is True


def test_lr_find_keeps_the_progress_curve_of_the_last_fit():
    from miniai.progress import ProgressCB
    progress = ProgressCB(every=3)
    learn = make_learner(cbs=[progress])
    learn.fit(1)
    losses = list(progress.losses)
    learn.lr_find(num_it=13)
    assert progress.losses == losses and len(losses) == len(learn.dls.train)


def finder_stops(losses):
    """Feeds `losses` to a `stop_div` finder that does not smooth; True if it ended the fit at the last one."""
    cb, learn = LRFinderCB(smooth=0.), SimpleNamespace(nan_guard=True)
    cb.before_fit(learn)
    cb.lr = 1e-3
    try:
        for v in losses:
            learn.loss = torch.tensor(v, dtype=torch.float64)
            cb.after_loss(learn)
    except CancelFitException:
        return True
    return False


def test_divergence_is_a_rise_of_3x_the_best_loss_size_so_negative_losses_work():
    assert not finder_stops([2., 8.]) and finder_stops([2., 8.01])  # positive: 4x the minimum
    assert not finder_stops([-10., -9., -10., 19.9]) and finder_stops([-10., 20.1])  # negative: up by 3 * 10
    learn = make_learner()
    learn.loss_func = lambda p, y: F.cross_entropy(p, y) - 10.  # a negative loss (e.g. a density's NLL)
    res = learn.lr_find(end_lr=1e-2, num_it=20)
    assert len(res.lrs) == 20


def test_suggest_lrs_checks_its_arguments():
    losses = (np.log10(LRS) + 2) ** 2
    with pytest.raises(ValueError, match='got 81 lrs and 41 losses'):
        suggest_lrs(LRS, losses[::2])
    with pytest.raises(ValueError, match='got 41 lrs and 81 losses'):
        suggest_lrs(LRS[::2], losses)
    for kw in ({'skip_start': -5}, {'skip_end': -1}, {'skip_start': 1.5}, {'skip_end': True}):
        with pytest.raises(ValueError, match=f'{next(iter(kw))} is a number of points to leave out, a whole number'):
            suggest_lrs(LRS, losses, **kw)
    assert suggest_lrs(LRS, losses, skip_start=np.int64(8)) == suggest_lrs(LRS, losses, skip_start=8)
    for bad in (0., -1e-3, math.nan):
        with pytest.raises(ValueError, match=r'lrs must be positive .* lrs\[3\] is'):
            suggest_lrs([*LRS[:3], bad, *LRS[4:]], losses)


def test_lr_find_checks_the_loaders_as_fit_does():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self): return iter([(torch.randn(4), torch.tensor(0))] * 8)
    learn = make_learner(dls=SimpleNamespace(train=DataLoader(Stream(), 4), valid=None))
    with pytest.raises(TypeError, match=r'dls.train \(a DataLoader\) has no length'):
        learn.lr_find(num_it=5)
    learn = make_learner(dls=SimpleNamespace(valid=tiny_dls().valid))
    with pytest.raises(TypeError, match=r'dls \(a SimpleNamespace\) has no .train'):
        learn.lr_find(num_it=5)
    learn = make_learner(dls=SimpleNamespace(train=[], valid=None))
    with pytest.raises(ValueError, match='dls.train has no batches'):
        learn.lr_find(num_it=5)


def lazy_learner(opt_func=SGD, cbs=()):
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyLinear(16), nn.LazyBatchNorm1d(), nn.ReLU(), nn.Linear(16, 3))
    return TrainLearner(model, tiny_dls(generator=torch.Generator().manual_seed(1)), F.cross_entropy, lr=0.05,
                        cbs=list(cbs), opt_func=opt_func)


def is_uninitialised(model):
    lazy = [model[0], model[1]]
    return ([type(m) for m in lazy] == [nn.LazyLinear, nn.LazyBatchNorm1d]
            and all(m.has_uninitialized_params() for m in lazy)
            and all(isinstance(m._initialize_hook, torch.utils.hooks.RemovableHandle) for m in lazy))


@pytest.mark.parametrize('opt', OPTS)
def test_lazy_layers_not_yet_initialised_stay_so_and_fit_then_equals_fit(opt):
    ref = lazy_learner(OPTS[opt])
    ref.fit(2)
    learn = lazy_learner(OPTS[opt], cbs=[Noisy()])
    learn.create_opt()  # an optimizer holding the uninitialised parameters too
    res = learn.lr_find(num_it=20, end_lr=1.)
    assert len(res.lrs) == 20 and is_uninitialised(learn.model)
    learn.get_preds()
    assert is_uninitialised(learn.model)
    learn.cbs.pop()  # Noisy: ref has none
    learn.fit(2)  # initialises the layers from the RNG as ref did
    assert type(learn.model[0]) is nn.Linear
    assert_equal_tensors(weights(ref), weights(learn))


def test_lazy_layers_are_put_back_when_the_block_raises_after_initialising_them():
    learn = lazy_learner()
    with pytest.raises(ZeroDivisionError), no_trace(learn, paused=lambda cb: False):
        learn.model(torch.randn(8, 4))
        assert type(learn.model[0]) is nn.Linear
        raise ZeroDivisionError
    assert is_uninitialised(learn.model)
    learn.model(torch.randn(8, 5))  # another input size: initialised for it
    assert learn.model[0].weight.shape == (16, 5)


def test_lr_find_plots_its_result_unless_told_not_to():
    import matplotlib.pyplot as plt
    plt.close('all')
    res = make_learner().lr_find(num_it=10)
    assert plt.get_fignums() == [1] and plt.gca().get_xscale() == 'log' and res.minimum > 0
    plt.close('all')
    make_learner().lr_find(num_it=10, show_plot=False)
    assert plt.get_fignums() == []
