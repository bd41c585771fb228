"""The speed options of `miniai.accel`: each runs a tiny fit on the CPU close to plain float32 (GPU checks
run only where CUDA is)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from miniai import (
    Callback,
    CancelBatchException,
    ChannelsLastCB,
    CompileCB,
    DeviceCB,
    GradClipCB,
    MixedPrecision,
    MomentumLearner,
    TrainLearner,
    amp_dtype,
    conv,
    speed_cbs,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def dls(n: int = 32, bs: int = 8):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 12, 12, generator=g), torch.randint(0, 4, (n,), generator=g)
    ds = TensorDataset(x, y)
    return SimpleNamespace(train=DataLoader(ds, bs), valid=DataLoader(ds, bs))


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(conv(1, 8, norm=nn.BatchNorm2d), conv(8, 16, norm=nn.BatchNorm2d),
                         conv(16, 4, act=None), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class Losses(Callback):
    """Keeps every training loss (as a float) and the dtype of the predictions."""
    def before_fit(self, learn): self.losses, self.dtypes = [], set()

    def after_loss(self, learn):
        self.dtypes.add(learn.preds.dtype)
        if learn.training:
            self.losses.append(learn.loss.item())


def fit(*cbs: Callback, device: str = 'cpu', epochs: int = 1) -> tuple[TrainLearner, Losses]:
    rec = Losses()
    learn = TrainLearner(model(), dls(), F.cross_entropy, lr=1e-2, opt_func=optim.Adam,
                         cbs=[DeviceCB(device), rec, *cbs])
    learn.fit(epochs)
    return learn, rec


@pytest.fixture(scope='module')
def plain() -> tuple[TrainLearner, Losses]: return fit()


def close(a: list[float], b: list[float], rtol: float) -> bool:
    return torch.allclose(torch.tensor(a), torch.tensor(b), rtol=rtol, atol=rtol)


def test_amp_dtype():
    assert amp_dtype('cpu') is None
    if torch.cuda.is_available():
        assert amp_dtype('cuda') in (torch.bfloat16, torch.float16)


def test_mixed_precision_default_is_a_noop_on_cpu(plain):
    _, rec = fit(MixedPrecision())
    assert rec.losses == plain[1].losses and rec.dtypes == {torch.float32}


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_mixed_precision_on_cpu_stays_close(plain, dtype):
    learn, rec = fit(MixedPrecision(dtype))
    assert rec.dtypes == {dtype}  # the model ran under autocast
    assert all(map(torch.isfinite, map(torch.tensor, rec.losses)))
    assert close(rec.losses, plain[1].losses, 0.1)
    assert not torch.is_autocast_enabled('cpu')
    assert 'backward' not in vars(learn) and 'step' not in vars(learn)  # the scaler's steps are gone


def test_mixed_precision_leaves_autocast_when_a_batch_is_cancelled():
    class CancelAfterPredict(Callback):
        def after_predict(self, learn): raise CancelBatchException()
    seen = []

    class Spy(Callback):
        order = 100
        def cleanup_batch(self, learn): seen.append(torch.is_autocast_enabled('cpu'))
    fit(MixedPrecision(torch.bfloat16), CancelAfterPredict(), Spy())
    assert seen and not any(seen) and not torch.is_autocast_enabled('cpu')


def test_channels_last_stays_close(plain):
    learn, rec = fit(ChannelsLastCB())
    assert learn.model[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert close(rec.losses, plain[1].losses, 1e-4)


def test_channels_last_converts_a_lazy_model_once_its_first_batch_initialised_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyConv2d(8, 3), nn.LazyBatchNorm2d(), nn.ReLU(), nn.LazyConv2d(4, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    learn = TrainLearner(model, dls(), F.cross_entropy, lr=1e-2, opt_func=optim.Adam, cbs=[ChannelsLastCB()])
    learn.fit(1)
    assert model[3].weight.is_contiguous(memory_format=torch.channels_last)


def test_compile_keeps_the_module_and_its_state_dict_keys(plain):
    learn, rec = fit(CompileCB(backend='eager'))
    assert learn.model._compiled_call_impl is not None
    assert list(learn.model.state_dict()) == list(plain[0].model.state_dict())
    assert close(rec.losses, plain[1].losses, 1e-4)
    torch._dynamo.reset()


def test_speed_cbs():
    assert speed_cbs() == []
    cbs = speed_cbs(mixed_precision=True, channels_last=True, compile='max-autotune')
    assert [type(cb) for cb in cbs] == [MixedPrecision, ChannelsLastCB, CompileCB]
    assert cbs[2].kwargs['mode'] == 'max-autotune' and speed_cbs(compile=True)[0].kwargs['mode'] is None


@cuda
def test_all_options_on_cuda_stay_close():
    _, ref = fit(device='cuda')
    learn, rec = fit(*speed_cbs(mixed_precision=True, channels_last=True, compile=True), device='cuda')
    assert rec.dtypes == {amp_dtype('cuda')}
    assert close(rec.losses, ref.losses, 0.1)
    torch._dynamo.reset()


class FailsToStart(Callback):
    order = -100
    def before_fit(self, learn): raise RuntimeError('the real problem')


def test_mixed_precision_cleanup_does_not_hide_an_earlier_error():
    """A fit that fails before MixedPrecision's `before_fit` (also after an fp16 fit) raises its own error."""
    mp = MixedPrecision(torch.float16)
    learn = TrainLearner(model(), dls(), F.cross_entropy, lr=0.01, cbs=[mp])
    learn.fit(1)
    assert 'backward' not in vars(learn)  # the fp16 fit's scaler steps are gone
    with pytest.raises(RuntimeError, match='the real problem') as e:
        learn.fit(1, cbs=[FailsToStart()])
    assert not getattr(e.value, '__notes__', None)


class GradsAfterClip(Callback):
    """Keeps, at each step, the gradients as the optimizer gets them (unscaled, under an fp16 grad scaler)."""
    order = 50
    def before_fit(self, learn): self.grads = []

    def after_backward(self, learn):
        scaler = getattr(learn, 'grad_scaler', None)
        scale = 1. if scaler is None else scaler.get_scale()
        self.grads.append([p.grad / scale for p in learn.model.parameters()])


@pytest.mark.parametrize('dtype', [None, torch.float16])
def test_grad_clip_steps_with_the_clipped_gradients(dtype):
    # SGD with lr 1: each step moves the weights by exactly the (unscaled) gradients the optimizer was given.
    spy, weights = GradsAfterClip(), []

    class Weights(Callback):
        def before_batch(self, learn): weights.append([p.detach().clone() for p in learn.model.parameters()])
    mp = MixedPrecision(dtype)
    learn = TrainLearner(model(), dls(), F.cross_entropy, lr=1., opt_func=optim.SGD,
                         cbs=[DeviceCB('cpu'), mp, GradClipCB(0.05), spy, Weights()])
    learn.fit(1, valid=False)
    assert mp.scaler is None and 'grad_scaler' not in vars(learn)  # the fp16 fit's scaler is gone
    for g, before, after in zip(spy.grads, weights, weights[1:]):
        assert torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in g])) <= 0.05 * 1.001
        for gi, b, a in zip(g, before, after, strict=True):
            torch.testing.assert_close(b - a, gi, rtol=1e-4, atol=1e-6)


class AccumulateTwo(Callback):
    """Gradient accumulation: the even batches skip their step (and zero_grad), so their gradients add up."""
    order = 2
    def after_backward(self, learn):
        if learn.iter % 2 == 0: raise CancelBatchException()


@pytest.mark.parametrize('clip', [False, True])
def test_fp16_gradient_accumulation_adds_up_as_in_float32(clip):
    def weights(dtype):
        learn = TrainLearner(model(), dls(), F.cross_entropy, lr=0.1, opt_func=optim.SGD,
                             cbs=[DeviceCB('cpu'), MixedPrecision(dtype), AccumulateTwo(),
                                  *([GradClipCB(0.5)] if clip else [])])
        learn.fit(1, valid=False)
        return [p.detach() for p in learn.model.parameters()]
    for a, b in zip(weights(None), weights(torch.float16), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-3)


@pytest.mark.parametrize('max_norm', [0, -1., '1.0', None, True])
def test_grad_clip_refuses_a_bad_max_norm(max_norm):
    with pytest.raises(ValueError, match=f'GradClipCB: max_norm must be a positive number, got {max_norm!r}'):
        GradClipCB(max_norm)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.int8, 'bfloat16', True])
def test_mixed_precision_refuses_other_dtypes(dtype):
    with pytest.raises(ValueError, match='MixedPrecision: dtype must be torch.float16, torch.bfloat16 or None'):
        MixedPrecision(dtype)


def test_channels_last_leaves_a_dict_batch_to_the_learners_check():
    from miniai import BatchError
    class DictDS(torch.utils.data.Dataset):
        def __len__(self): return 8
        def __getitem__(self, i): return {'x': torch.randn(1, 4, 4), 'y': i % 2}
    dl = DataLoader(DictDS(), 4)
    learn = TrainLearner(model(), SimpleNamespace(train=dl, valid=dl), F.cross_entropy, cbs=[ChannelsLastCB()])
    with pytest.raises(BatchError, match='gave a dict'):
        learn.fit(1)


def test_fp16_refuses_a_momentum_learner_and_bf16_takes_it():
    def momentum_learner(dtype):
        return MomentumLearner(model(), dls(), F.cross_entropy, lr=1e-2, cbs=[DeviceCB('cpu'), MixedPrecision(dtype)])
    learn = momentum_learner(torch.float16)
    before = [p.clone() for p in learn.model.parameters()]
    with pytest.raises(TypeError, match='MomentumLearner keeps its gradients across steps.*bfloat16'):
        learn.fit(1)
    assert all(torch.equal(p, q) for p, q in zip(before, learn.model.parameters()))  # refused before any step
    learn = momentum_learner(torch.bfloat16)
    learn.fit(1)
    assert learn.train_iter == 4
