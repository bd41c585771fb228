"""`lsuv_init`: each layer's output ends at mean 0 and std 1; modes, BatchNorm stats, RNGs and hooks put back."""

import re
import warnings
from functools import partial

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from miniai import lsuv
from miniai.hooks import Hooks
from miniai.lsuv import lsuv_init
from miniai.models import GeneralRelu

pytestmark = pytest.mark.usefixtures('one_thread')
TOL = 1e-3


def cnn(act=nn.ReLU, bn=False):
    torch.manual_seed(0)
    def block(ni, nf):
        return [nn.Conv2d(ni, nf, 3, stride=2, padding=1, bias=not bn), *([nn.BatchNorm2d(nf)] if bn else []), act()]
    return nn.Sequential(*block(1, 4), *block(4, 8), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def xb(n=16):
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 3 + 1


def output_stats(model, mods, x):
    """Mean and std of each of `mods`' outputs on `x`, in training mode (as `lsuv_init` measures them)."""
    stats = []
    modes, bufs = [m.training for m in model.modules()], [b.clone() for b in model.buffers()]
    with Hooks(mods, lambda h, m, i, o: stats.append((o.mean().item(), o.std().item()))), torch.no_grad():
        model.train()(x)
    for m, t in zip(model.modules(), modes): m.training = t
    for b, saved in zip(model.buffers(), bufs): b.copy_(saved)
    return stats


def layers(model, kind=(nn.Conv2d, nn.Linear)): return [m for m in model.modules() if isinstance(m, kind)]


def hooks_left(model): return [n for n, m in model.named_modules() if m._forward_hooks]


def test_each_conv_and_linear_output_ends_at_mean_0_std_1():
    model, x = cnn(), xb()
    assert not all(abs(m) < TOL and abs(s - 1) < TOL for m, s in output_stats(model, layers(model), x))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert lsuv_init(model, x) is model
    for mean, std in output_stats(model, layers(model), x):
        assert abs(mean) < TOL and abs(std - 1) < TOL
    assert hooks_left(model) == []


def test_measured_activations_as_the_course_does():
    model, x = cnn(partial(GeneralRelu, leak=0.1, sub=0.4)), xb()
    acts, convs = layers(model, GeneralRelu), layers(model, nn.Conv2d)
    lsuv_init(model, x, modules=list(zip(acts, convs)))
    for mean, std in output_stats(model, acts, x):
        assert abs(mean) < TOL and abs(std - 1) < TOL


def test_batchnorm_stats_and_modes_are_put_back_and_layers_without_bias_get_std_1():
    model, x = cnn(bn=True), xb()
    model[1].running_var.fill_(2.)
    model.eval()
    model[5].train()  # a mix of modes, put back module by module
    bufs = {k: v.clone() for k, v in model.named_buffers()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    lsuv_init(model, x)
    assert all(torch.equal(v, dict(model.named_buffers())[k]) for k, v in bufs.items())
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)
    stats = output_stats(model, layers(model), x)
    assert all(abs(std - 1) < TOL for _, std in stats)
    assert abs(stats[-1][0]) < TOL  # the Linear, which has a bias, after a BatchNorm run in training mode


def test_dropout_masks_stay_the_same_so_it_converges_and_the_rng_is_put_back():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.Dropout(0.5), nn.Linear(20, 5))
    x, rng = torch.randn(32, 10), torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        lsuv_init(model, x)
    assert torch.equal(torch.get_rng_state(), rng)
    torch.set_rng_state(rng)  # the masks lsuv_init saw
    mean, std = output_stats(model, layers(model), x)[-1]
    assert abs(mean) < TOL and abs(std - 1) < TOL


def test_dead_layer_warns_and_keeps_finite_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].bias.fill_(-10.)  # every ReLU input negative: its output is all 0
    before = [p.clone() for p in model.parameters()]
    with pytest.warns(UserWarning, match=r"'2' \(Linear\) \(measured at '1' \(ReLU\)\) has std 0 \(a dead layer"):
        lsuv_init(model, torch.rand(8, 3), modules=[(model[1], model[2])])
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    # its own output: its bias alone, which the weights do not move
    with pytest.warns(UserWarning, match=r"dividing the weights and shifting the bias of '2' \(Linear\) stopped "
                      r"moving its measured output less than halfway.*does not follow its weights, or too little "
                      r"\(e\.g\. its input is constant"):
        lsuv_init(model, torch.rand(8, 3), modules=[model[2]])
    assert all(torch.equal(p, b) and p.isfinite().all() for p, b in zip(model.parameters(), before))


def test_an_output_that_cannot_reach_mean_0_warns_and_the_layer_keeps_its_weights():
    model, x = cnn(), xb()  # a plain ReLU's output: LSUV drives the conv to a dead layer
    before = [p.clone() for p in model.parameters()]
    with pytest.warns(UserWarning, match=r"'0' \(Conv2d\) \(measured at '1' \(ReLU\)\).*plain ReLU"):
        lsuv_init(model, x, modules=[(model[1], model[0])])
    assert all(torch.equal(p, b) and p.isfinite().all() for p, b in zip(model.parameters(), before))


def params(model): return [p.clone() for p in model.parameters()]


def same(model, before): return all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_warns_when_not_converged_and_keeps_the_last_weights_only_if_closer():
    model = cnn()
    before = params(model)
    with pytest.warns(UserWarning, match=r"'0' \(Conv2d\) did not converge in 1 iterations.*keeps the last weights, "
                      r"which brought its output more than halfway there: raise max_iters"):
        lsuv_init(model, xb(), modules=[model[0]], max_iters=1)
    assert not same(model, before)

    class Cube(nn.Module):  # std ~ scale**3: each weight /= std overshoots, further each time
        def forward(self, x): return x ** 3
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8, bias=False), Cube())
    before = params(model)
    with pytest.warns(UserWarning, match=r"'0' \(Linear\) \(measured at '1' \(Cube\)\) did not converge in 2 "
                      r"iterations, and its output got less than halfway there.*keeps the weights it had; "
                      r".*measure the layer itself"):
        lsuv_init(model, torch.randn(32, 4) * 3, modules=[(model[1], model[0])], max_iters=2)
    assert same(model, before)


def test_a_batchnorm_between_the_pair_warns_and_keeps_the_weights():
    model, x = cnn(partial(GeneralRelu, leak=0.1, sub=0.4), bn=True), xb()  # the course's call on a BatchNorm model
    acts, convs = layers(model, GeneralRelu), layers(model, nn.Conv2d)
    before = params(model)
    with pytest.warns(UserWarning) as ws:
        lsuv_init(model, x, modules=zip(acts, convs))
    assert len(ws) == 2
    for w, name in zip(ws, ('0', '3')):
        assert re.search(rf"'{name}' \(Conv2d\) \(measured at .*stopped moving its measured output less than "
                         r"halfway.*does not control the output measured, or too little of it \(e\.g\. a BatchNorm "
                         r"between them.*Measure the layer itself",
                         str(w.message))
    assert same(model, before)
    with warnings.catch_warnings():  # the fix given: measure the layers themselves
        warnings.simplefilter('error')
        lsuv_init(model, x, modules=convs)


def test_a_misaligned_pair_warns_and_keeps_the_weights():
    model, x = cnn(partial(GeneralRelu, leak=0.1, sub=0.4)), xb()
    acts, convs = layers(model, GeneralRelu), layers(model, nn.Conv2d)
    before = params(model)
    with pytest.warns(UserWarning, match=r"'2' \(Conv2d\) \(measured at '1' \(GeneralRelu\)\).*that output "
                      r"comes before the layer"):
        lsuv_init(model, x, modules=[(acts[0], convs[1])])  # zip(acts, convs[1:]): each act is before its conv
    assert same(model, before)


def test_a_layer_controlling_part_of_the_output_keeps_the_last_weights_if_they_brought_it_closer():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.out = nn.Linear(32, 32), nn.Identity()
        def forward(self, x): return self.out(x + self.lin(x))
    torch.manual_seed(0)
    model, x = Res(), torch.randn(512, 32) * 1.2  # the input alone, added to the output, has std 1.2
    nn.init.normal_(model.lin.weight, std=1.)
    with pytest.warns(UserWarning, match=r"'lin' \(Linear\) \(measured at 'out' \(Identity\)\) stopped moving its "
                      r"measured output short of mean 0, std 1 \(output mean .*, std [5-9]\.\d+ -> mean .*, std "
                      r"1\.2.*\): the layer controls only part of that output \(e\.g\. a residual connection.*keeps "
                      r"the last weights.*measure the layer itself"):
        lsuv_init(model, x, modules=[(model.out, model.lin)])
    [(mean, std)] = output_stats(model, [model.out], x)
    assert abs(mean) < TOL and 1.2 < std < 1.25


def test_a_layer_that_stops_moving_its_output_less_than_halfway_there_gets_back_its_weights():
    torch.manual_seed(0)
    model, x = nn.Linear(16, 16), torch.randn(256, 16)
    with torch.no_grad():
        model.bias.copy_(torch.randn(16) * 3)  # a spread of ~2.5 across the outputs, which no weight scaling removes
    before = params(model)
    with pytest.warns(UserWarning, match=r"stopped moving its measured output less than halfway to mean 0, std 1 "
                      r"\(output mean .*, std 2\.\d+ -> .*its bias values differ across its outputs by more than"):
        lsuv_init(model, x)
    assert same(model, before)


def test_layers_are_initialised_in_forward_order_whatever_order_they_are_listed_in():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()  # the head registered before the body, so model.modules() lists it first
            self.head, self.body = nn.Linear(8, 4), nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8))
        def forward(self, x): return self.head(self.body(x))
    for listed in (None, 'reversed'):
        torch.manual_seed(0)
        model, x = Net(), torch.randn(64, 6) * 3 + 1
        fwd = [model.body[0], model.body[2], model.head]
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            lsuv_init(model, x, modules=fwd[::-1] if listed else None)
        for mean, std in output_stats(model, fwd, x):
            assert abs(mean) < TOL and abs(std - 1) < TOL


def test_a_parametrized_layer_is_scaled_and_gets_back_the_state_it_had():
    torch.manual_seed(0)  # weight_norm: model[0].weight is recomputed on each access, from the parameters stored
    model, x = nn.Sequential(weight_norm(nn.Linear(10, 20)), nn.BatchNorm1d(20), GeneralRelu(0.1, 0.4)), \
        torch.randn(64, 10) * 5
    before = params(model)
    with pytest.warns(UserWarning, match='a BatchNorm between them'):
        lsuv_init(model, x, modules=[(model[2], model[0])])
    assert same(model, before)
    lsuv_init(model, x, modules=[model[0]])
    [(mean, std)] = output_stats(model, [model[0]], x)
    assert abs(mean) < TOL and abs(std - 1) < TOL


def test_half_precision_converges_at_the_tol_its_rounding_allows():
    for dtype in (torch.bfloat16, torch.float16):  # bfloat16 cannot reach the default tol 1e-3
        model, x = cnn().to(dtype), xb(64).to(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            lsuv_init(model, x)
        tol = 2 * torch.finfo(dtype).eps
        for mean, std in output_stats(model, layers(model), x):
            assert abs(mean) < tol and abs(std - 1) < tol


def test_hooks_modes_and_buffers_put_back_when_a_module_does_not_run():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.bn, self.unused = nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 4)
        def forward(self, x): return self.bn(self.body(x))
    model = Net().eval()
    bufs = [b.clone() for b in model.buffers()]
    with pytest.raises(ValueError, match=r"'unused' \(Linear\) did not run in model\(xb\)"):
        lsuv_init(model, torch.randn(8, 3))
    assert hooks_left(model) == []
    assert not any(m.training for m in model.modules())
    assert all(torch.equal(b, s) for b, s in zip(model.buffers(), bufs))


@pytest.mark.parametrize('wrap', [lambda m: m, weight_norm])
def test_an_error_part_way_leaves_every_weight_as_it_was(wrap):
    class Net(nn.Module):
        def __init__(self, fail_at):
            super().__init__()
            self.body, self.head, self.unused, self.calls, self.fail_at = wrap(nn.Linear(3, 4)), \
                wrap(nn.Linear(4, 2)), nn.Linear(2, 2), 0, fail_at
        def forward(self, x):
            self.calls += 1
            if self.calls == self.fail_at: raise RuntimeError('out of memory')
            return self.head(self.body(x))
    torch.manual_seed(0)
    model = Net(fail_at=None)
    before = params(model)
    with pytest.raises(ValueError, match=r"'unused' \(Linear\) did not run"):
        lsuv_init(model, torch.randn(8, 3))
    assert model.calls == 1 and same(model, before)  # found by the first forward, before any change
    model = Net(fail_at=6)  # during the second layer's turn
    before = params(model)
    with pytest.raises(RuntimeError, match='out of memory'):
        lsuv_init(model, torch.randn(8, 3), modules=[model.body, model.head])
    assert same(model, before)


def test_a_whole_batch_as_xb_gets_a_note_and_xb_goes_to_the_models_device(monkeypatch):
    model, x = cnn(), xb()
    with pytest.raises(TypeError) as e:
        lsuv_init(model, (x, torch.zeros(len(x), dtype=torch.long)))
    assert any('xb is the model\'s inputs' in n and 'pass b[0]' in n for n in e.value.__notes__)
    moved = []
    monkeypatch.setattr(lsuv, 'to_device', lambda x, device: moved.append(device) or x)
    lsuv_init(model, x)
    assert moved == [next(model.parameters()).device]


def test_bad_input_is_refused_with_the_fix():
    model, x = cnn(), xb()
    with pytest.raises(TypeError, match=r"'1' \(ReLU\) has no weight to scale"):
        lsuv_init(model, x, modules=[model[1]])
    with pytest.raises(ValueError, match='not a module of the model'):
        lsuv_init(model, x, modules=[nn.Linear(2, 2)])
    with pytest.raises(TypeError, match=r'\(measured, adjusted\) pairs'):
        lsuv_init(model, x, modules=[(model[0], model[1], model[2])])
    with pytest.raises(ValueError, match='modules is empty'):
        lsuv_init(model, x, modules=[])
    with pytest.raises(ValueError, match='no Conv or Linear layer'):
        lsuv_init(nn.Sequential(nn.ReLU()), x)
    with pytest.raises(ValueError, match='tol is'):
        lsuv_init(model, x, tol=0)
    with pytest.raises(ValueError, match='max_iters is'):
        lsuv_init(model, x, max_iters=0)
    with pytest.raises(TypeError, match='not an nn.Module'):
        lsuv_init(lambda x: x, x)
    with pytest.raises(ValueError, match=r'lazy layers not yet initialised; run a batch through it first'):
        lsuv_init(nn.Sequential(nn.LazyLinear(2)), torch.randn(4, 3))


def test_a_measured_module_that_runs_several_times_is_warned_about():
    torch.manual_seed(0)
    act, a, b = nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 8)
    model = nn.Sequential(a, act, b, act)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter('always')
        lsuv_init(model, torch.randn(64, 8), modules=[a, b])  # the layers themselves: no warning
        assert rec == []
        lsuv_init(model, torch.randn(64, 8), modules=[(act, a), (act, b)])
    runs = [str(w.message) for w in rec if 'runs 2 times' in str(w.message)]
    assert runs == ["lsuv_init: '1' (ReLU) runs 2 times in model(xb), and its last call is the one measured, for "
                    'every layer paired with it: give each layer its own module to measure (e.g. one activation per '
                    'layer), or measure the layers themselves.']
    with warnings.catch_warnings(record=True) as rec:  # a layer reused, measured at its own output
        warnings.simplefilter('always')
        lsuv_init(nn.Sequential(a, a), torch.randn(64, 8))
    assert any(str(w.message).startswith("lsuv_init: '0' (Linear) runs 2 times in model(xb), and its last call is "
                                         'the one measured; it is reused, so its weights are scaled for that call '
                                         'alone.') for w in rec)
