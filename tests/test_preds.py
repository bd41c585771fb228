"""`learn.get_preds`: the model's outputs and the targets over a loader, through the Learner's batch and
prediction callbacks, leaving no trace."""

from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset
from torcheval.metrics import MulticlassAccuracy

from miniai import (
    BatchError,
    BatchSchedCB,
    BatchTransformCB,
    Callback,
    CheckpointCB,
    DeviceCB,
    DeviceLoader,
    MetricsCB,
    MixedPrecision,
    OneCycle,
    ProgressCB,
    RecorderCB,
    TrainCB,
    TrainLearner,
    get_preds,
    no_trace,
    rec_lr,
)
from miniai.learner import Learner
from miniai.recipes import FlipTTACB


def data(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


def learner(*cbs, bs: int = 8) -> TrainLearner:
    x, y = data()
    g = torch.Generator().manual_seed(1)
    dls = SimpleNamespace(train=DataLoader(TensorDataset(x, y), bs, shuffle=True, generator=g),
                          valid=DataLoader(TensorDataset(*data(20, seed=2)), bs))
    sched = partial(OneCycle, max_lr=0.1, total_steps=len(dls.train))
    return TrainLearner(model(), dls, F.cross_entropy, lr=0.1, opt_func=optim.AdamW,
                        cbs=[DeviceCB('cpu'), MetricsCB(acc=MulticlassAccuracy()), BatchSchedCB(sched),
                             RecorderCB(lr=rec_lr), *cbs])


def test_preds_are_the_eval_mode_outputs_and_targets_of_the_valid_set():
    learn = learner()
    learn.fit(1)
    preds, targets = learn.get_preds()
    x, y = data(20, seed=2)
    learn.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(preds, learn.model(x))
    assert torch.equal(targets, y)
    probs, _ = learn.get_preds(act=partial(torch.softmax, dim=1))
    torch.testing.assert_close(probs, torch.softmax(preds, 1))


def test_get_preds_leaves_no_trace(tmp_path):
    ref = learner()  # the run without get_preds
    ref.fit(1)
    ref.fit(1)
    learn = learner(CheckpointCB(tmp_path / 'ck.pt'))
    learn.fit(1)
    metrics, recorder = learn.cbs[1], learn.cbs[3]
    history, lrs = list(metrics.history), list(recorder.recs['lr'])
    saved = learn.state_dict()
    (tmp_path / 'ck.pt').unlink()
    learn.model.train()
    learn.get_preds()
    assert learn.model.training  # left in the mode it was in (it ran in eval mode: see the first test)
    assert metrics.history == history and recorder.recs['lr'] == lrs  # nothing recorded
    assert not (tmp_path / 'ck.pt').exists()  # nothing saved
    after = learn.state_dict()
    for k in ('epoch', 'phase', 'iter', 'train_iter', 'n_epochs'):
        assert after[k] == saved[k]
    for k, v in saved['model'].items():
        assert torch.equal(after['model'][k], v)
    learn.fit(1)  # a second fit: the same as without get_preds in between
    for p, q in zip(learn.model.parameters(), ref.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_batches_of_inputs_only_give_no_targets():
    learn = learner()
    x, _ = data(12)
    preds, targets = learn.get_preds(DataLoader(TensorDataset(x), 5))
    assert targets is None and preds.shape == (12, 3)


def test_two_targets_come_back_as_a_tuple_and_mixed_batches_are_refused():
    x, y = data(12)
    learn = learner()
    preds, (y1, y2) = get_preds(learn, DataLoader(TensorDataset(x, y, y * 2), 5))
    assert torch.equal(y1, y) and torch.equal(y2, y * 2)
    mixed = [(x[:6], y[:6]), (x[6:],)]
    with pytest.raises(ValueError, match='some batches have targets and some not'):
        learn.get_preds(mixed)


def test_callbacks_that_shape_batches_and_predictions_apply():
    learn = learner(BatchTransformCB(lambda b: (b[0] * 2, *b[1:])), FlipTTACB())
    preds, _ = learn.get_preds()
    x, _ = data(20, seed=2)
    learn.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(preds, (learn.model(x * 2) + learn.model((x * 2).flip(-1))) / 2)


def test_a_plain_learner_with_two_inputs():
    class Add(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))
        def forward(self, a, b): return self.w * a + b
    a, b = torch.randn(6, 3), torch.randn(6, 3)
    learn = Learner(Add(), SimpleNamespace(train=None, valid=None), cbs=[TrainCB(n_inp=2)])
    preds, targets = learn.get_preds(DataLoader(TensorDataset(a, b, a), 4))
    torch.testing.assert_close(preds, a + b)
    assert torch.equal(targets, a)


def test_a_model_returning_a_tuple_is_named():
    class Pair(nn.Linear):
        def forward(self, x): return x, x
    learn = TrainLearner(Pair(3, 3), SimpleNamespace(train=None, valid=None), F.mse_loss)
    with pytest.raises(TypeError, match='the model returned a tuple'):
        learn.get_preds([(torch.randn(2, 3),)])


def test_progress_bars_do_not_run_and_keep_their_losses():
    progress = ProgressCB()
    learn = learner(progress)
    learn.fit(1)
    losses = list(progress.losses)
    learn.get_preds()
    assert progress.losses == losses


@pytest.mark.parametrize('call', ['get_preds', 'lr_find', 'fit'])
def test_refused_inside_a_fit(call):
    class CallsDuringFit(Callback):
        def after_epoch(self, learn): getattr(learn, call)()
    cb = CallsDuringFit()
    learn = learner(cb)
    with pytest.raises(RuntimeError, match=f'{call}: this Learner is in the middle of a fit'):
        learn.fit(1)
    learn.remove_cb(cb).fit(1)  # the Learner is usable again


def test_inputs_only_batches_are_named_in_the_error():
    learn = learner()
    with pytest.raises(BatchError, match=r'\(x, y\) tuples.*a bare tensor.*For get_preds, \(x,\) tuples will do'):
        learn.get_preds(DataLoader(torch.randn(4, 1, 6, 6), 2))


def test_a_shuffled_loader_is_put_back_so_calls_agree():
    x, y = data()
    for dl in (DataLoader(TensorDataset(x, y), 8, shuffle=True, generator=torch.Generator().manual_seed(3)),
               DeviceLoader(torch.randint(0, 256, (40, 6, 6), dtype=torch.uint8), y, bs=8, shuffle=True, device='cpu',
                            seed=3)):
        learn = learner()
        first, second = (learn.get_preds(dl)[1] for _ in range(2))
        assert torch.equal(first, second) and not torch.equal(first, y)  # the loader's order, the same each time


def test_a_model_without_parameters_can_be_validated():
    x, y = data(12)
    learn = TrainLearner(nn.Flatten(), SimpleNamespace(train=None, valid=DataLoader(TensorDataset(x, y), 5)),
                         F.cross_entropy)
    preds, targets = learn.get_preds()
    assert torch.equal(preds, x.flatten(1)) and torch.equal(targets, y) and learn.opt is None


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_predictions_come_back_as_float32(dtype):
    learn = learner(MixedPrecision(dtype))
    preds, _ = learn.get_preds(act=partial(torch.softmax, dim=1))
    assert preds.dtype == torch.float32


class _Resizes(nn.Module):
    """Reassigns its non-persistent buffer with another shape in every forward, and bumps its persistent one."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(36, 3)
        self.register_buffer('cache', torch.arange(3.), persistent=False)
        self.register_buffer('count', torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache = torch.zeros(len(x))
        self.count += 1
        return self.lin(x.flatten(1))


def test_a_buffer_reassigned_with_another_shape_is_put_back():
    x, y = data(12)
    m = _Resizes()
    learn = TrainLearner(m, SimpleNamespace(train=None, valid=DataLoader(TensorDataset(x, y), 5)), F.cross_entropy)
    cache, count = m.cache, m.count
    learn.get_preds()
    assert m.cache is cache and torch.equal(cache, torch.arange(3.))  # the same tensor, shape and values
    assert m.count is count and count.item() == 0


def test_no_trace_restores_all_it_can_then_raises_the_first_failure():
    learn = learner()
    rng = torch.get_rng_state()
    with pytest.raises(AttributeError), no_trace(learn, paused=lambda cb: False):
        learn.model._buffers = None  # putting the buffers back fails
        torch.rand(3)
    assert torch.equal(torch.get_rng_state(), rng)  # the steps after the failed ones still ran


def test_no_trace_puts_back_the_dtype_and_layers_and_keeps_the_blocks_own_error():
    learn = learner()
    learn.model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    w, norm = learn.model[0].weight, learn.model[1]
    with pytest.raises(ZeroDivisionError), no_trace(learn, paused=lambda cb: False):
        learn.model.double()
        learn.model[1] = nn.Linear(3, 5)
        raise ZeroDivisionError
    assert learn.model[1] is norm
    assert learn.model[0].weight is w and {t.dtype for t in learn.model.state_dict().values()} == {
        torch.float32, torch.int64}
    learn.model(torch.randn(5, 4))  # parameters and buffers agree again
    with pytest.raises(ZeroDivisionError) as e, no_trace(learn, paused=lambda cb: False):
        learn.model._buffers = None  # putting the buffers back fails
        raise ZeroDivisionError
    assert any('restoring also failed' in n for n in e.value.__notes__)


def test_items_after_the_inputs_that_are_not_tensors_are_named():
    x, y = data(12)

    class Named(torch.utils.data.Dataset):  # (x, y, name): fit ignores the name
        def __len__(self): return 12
        def __getitem__(self, i): return x[i], y[i], f'item{i}'
    learn = learner()
    with pytest.raises(TypeError, match=r'item 2 of the batches \(counting from 0\) is a (tuple|list), not a tensor'
                                        r'.*batches hold only tensors'):
        learn.get_preds(DataLoader(Named(), 4))


def test_a_bad_dl_is_named_as_dl():
    learn = learner()
    x, y = data(12)
    with pytest.raises(ValueError, match='get_preds: dl has no batches'):
        learn.get_preds(DataLoader(TensorDataset(x[:0], y[:0]), 4))
    with pytest.raises(TypeError, match=r'get_preds: dl \(a generator\) has no length'):
        learn.get_preds(b for b in DataLoader(TensorDataset(x, y), 4))
    learn.dls = SimpleNamespace(train=learn.dls.train)
    with pytest.raises(TypeError, match=r'has no .valid'):
        learn.get_preds()


@pytest.mark.filterwarnings('ignore:`torch.jit.trace:FutureWarning')  # deprecated, but still used
@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')  # BatchNorm's size check, traced as a constant
def test_no_trace_puts_back_a_traced_model_that_the_block_cast_and_whose_batchnorm_ran():
    class CastCB(Callback):  # as DeviceCB moving a model held elsewhere: the block replaces its tensors
        order = -10
        def before_fit(self, learn): learn.model.to(torch.float64)
        def before_batch(self, learn): learn.batch = (learn.batch[0].double(), *learn.batch[1:])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(64, 10))
    traced = torch.jit.trace(model, torch.randn(2, 1, 8, 8))  # traced in train mode: its BatchNorm updates its stats
    ds = TensorDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))
    dls = SimpleNamespace(train=DataLoader(ds, 4), valid=DataLoader(ds, 4))
    learn = TrainLearner(traced, dls, F.cross_entropy, cbs=[CastCB()])
    before = {k: v.clone() for k, v in traced.state_dict().items()}
    learn.get_preds()
    learn.lr_find(num_it=3, show_plot=False)
    after = traced.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    traced(torch.randn(2, 1, 8, 8))  # still runs on float32 inputs
