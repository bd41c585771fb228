"""`summary` / `learn.summary()`: shapes, parameters and MFLOPS per layer, depth, no trace, bad input."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parameter import is_lazy
from torch.utils.data import DataLoader, TensorDataset

from miniai.guards import BatchError
from miniai.learner import Callback, TrainLearner
from miniai.summary import Summary, SummaryRow, summary

pytestmark = pytest.mark.usefixtures('one_thread')


def small_cnn():
    """conv 1→4 (3x3, stride 2): 36 + 4 params; linear 64→10: 640 + 10."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10))


def hooks_left(model):
    return [n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]


def test_rows_give_shapes_params_and_mflops_of_each_child():
    s = summary(small_cnn(), torch.randn(2, 1, 8, 8))
    assert s.rows == [
        SummaryRow('0', 'Conv2d', (2, 1, 8, 8), (2, 4, 4, 4), 40, (36 * 4 * 4 + 4) / 1e6),
        SummaryRow('1', 'ReLU', (2, 4, 4, 4), (2, 4, 4, 4), 0, 0.),
        SummaryRow('2', 'Flatten', (2, 4, 4, 4), (2, 64), 0, 0.),
        SummaryRow('3', 'Linear', (2, 64), (2, 10), 650, 650 / 1e6)]
    assert s.params == 690
    assert s.mflops == pytest.approx((36 * 16 + 4 + 650) / 1e6)


def test_mflops_of_a_block_counts_kernels_times_output_size_and_other_params_once():
    block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))  # 216 + 16 params
    s = summary(nn.Sequential(block), torch.randn(2, 3, 5, 7))
    assert s.rows[0].params == 216 + 16
    assert s.rows[0].mflops == pytest.approx((216 * 5 * 7 + 16) / 1e6)


def test_table_is_the_repr_str_and_markdown():
    s = summary(small_cnn(), torch.randn(2, 1, 8, 8))
    lines = str(s).splitlines()
    assert lines[:2] == ['| Module | Input | Output | Num params | MFLOPS |', '|--|--|--|--|--|']
    assert lines[2] == '| 0: Conv2d | (2, 1, 8, 8) | (2, 4, 4, 4) | 40 | 0.00 |'
    assert lines[5] == '| 3: Linear | (2, 64) | (2, 10) | 650 | 0.00 |'
    assert lines[-2:] == ['', 'Total params: 690; MFLOPS: 0.00']
    assert repr(s) == s._repr_markdown_() == str(s)


def test_depth_lists_nested_layers_and_leaves_above_that_depth():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), nn.Flatten())
    xb = torch.randn(1, 1, 5, 5)
    assert [r.name for r in summary(model, xb).rows] == ['0', '1']
    assert [(r.name, r.module) for r in summary(model, xb, depth=2).rows] == [
        ('0.0', 'Conv2d'), ('0.1', 'ReLU'), ('1', 'Flatten')]
    assert [r.name for r in summary(model, xb, depth=5).rows] == ['0.0', '0.1', '1']


def test_a_model_without_children_is_its_own_row_and_tuple_inputs_are_spread():
    class Add(nn.Module):
        def forward(self, a, b): return a + b
    s = summary(nn.Linear(3, 2), torch.randn(4, 3))
    assert [(r.name, r.module, r.params) for r in s.rows] == [('', 'Linear', 8)]
    assert str(s).splitlines()[2].startswith('| Linear |')
    s = summary(Add(), (torch.randn(2, 3), torch.randn(2, 3)))
    assert (s.rows[0].inp, s.rows[0].out) == ((2, 3), (2, 3))


def test_a_module_called_twice_has_two_rows_and_its_params_count_once_in_the_total():
    lin = nn.Linear(2, 2)
    s = summary(nn.Sequential(lin, nn.ReLU(), lin), torch.randn(3, 2))
    assert [(r.name, r.params) for r in s.rows] == [('0', 6), ('1', 0), ('0', 6)]
    assert s.params == 6 and s.mflops == pytest.approx(12 / 1e6)
    s = summary(nn.Sequential(nn.Sequential(lin), lin), torch.randn(3, 2), depth=2)  # listed twice, hooked once
    assert [r.name for r in s.rows] == ['0.0', '0.0']


def test_tuple_outputs_give_the_first_items_shape():
    s = summary(nn.Sequential(nn.LSTM(3, 5, batch_first=True)), torch.randn(2, 4, 3))
    assert s.rows[0].out == (2, 4, 5)


def test_leaves_no_trace():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(3))
    model.train()
    model[1].eval()  # a mix of modes, put back module by module
    model[1].running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items() if not is_lazy(v)}
    modes = [m.training for m in model.modules()]
    xb, rng = torch.randn(4, 1, 6, 6), torch.get_rng_state()
    s = summary(model, xb)
    assert s.rows[-1].params == 64 * 3 + 3 and s.params == 40 + 8 + 195  # the lazy layer counted as it ran
    assert isinstance(model[4], nn.LazyLinear) and model[4].has_uninitialized_params()
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)
    assert hooks_left(model) == ['4']  # only the lazy layer's own initialisation pre-hook
    assert list(model[4]._forward_pre_hooks.values())[0].__name__ == '_infer_parameters'


def test_runs_in_eval_mode_so_batchnorm_takes_a_single_example():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).train()
    assert summary(model, torch.randn(1, 3)).rows[1].out == (1, 4)
    assert model.training


def test_hooks_and_modes_are_put_back_when_the_model_raises():
    model = small_cnn().train()
    with pytest.raises(RuntimeError) as e:
        summary(model, torch.randn(2, 1, 10, 10))  # 100 features for a Linear(64, 10)
    assert any('summary: the model failed on inputs of shapes [(2, 1, 10, 10)]' in n for n in e.value.__notes__)
    assert hooks_left(model) == []
    assert all(m.training for m in model.modules())


def tiny_learner(n=12, bs=4):
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))
    dls = SimpleNamespace(train=DataLoader(ds, bs, shuffle=True), valid=DataLoader(ds, bs))
    return TrainLearner(small_cnn(), dls, F.cross_entropy)


def test_learner_summary_runs_the_inputs_of_the_first_training_batch_leaving_the_loader_and_rngs():
    learn = tiny_learner()
    rng = torch.get_rng_state()
    s = learn.summary()
    assert isinstance(s, Summary)
    assert s.rows[0].inp == (4, 1, 8, 8) and s.rows[-1].out == (4, 10)
    assert torch.equal(torch.get_rng_state(), rng)  # the shuffled loader drew from it
    assert hooks_left(learn.model) == []
    assert [r.name for r in learn.summary(torch.randn(1, 1, 8, 8), depth=2).rows] == ['0', '1', '2', '3']
    assert learn.summary(torch.randn(1, 1, 8, 8)).rows[0].inp == (1, 1, 8, 8)


def test_bad_input_is_refused_with_the_fix():
    model = small_cnn()
    with pytest.raises(TypeError, match=r'pass one, summary\(model, xb\)'):
        summary(model)
    with pytest.raises(TypeError, match='expected a Learner or an nn.Module, got list'):
        summary([model], torch.randn(1, 1, 8, 8))
    for depth in (0, 1.5, True):
        with pytest.raises(ValueError, match='depth is how many levels'):
            summary(model, torch.randn(1, 1, 8, 8), depth=depth)
    learn = tiny_learner()
    learn.dls.train = DataLoader(TensorDataset(torch.randn(0, 1, 8, 8), torch.zeros(0)), 4)
    with pytest.raises(ValueError, match='dls.train has no batches'):
        summary(learn)
    learn.dls.train = [{'x': torch.randn(4, 1, 8, 8)}]
    with pytest.raises(BatchError, match='Batches must be'):
        summary(learn)


def test_refused_inside_a_fit():
    class Summarise(Callback):
        def before_fit(self, learn): learn.summary()
    learn = tiny_learner()
    with pytest.raises(RuntimeError, match='summary: this Learner is in the middle of a fit'):
        learn.fit(1, cbs=[Summarise()])


def test_mflops_add_up_layer_by_layer_whatever_the_depth():
    """A stride-2 block's first conv runs at twice its output's size: priced per layer, the total is the same at
    every depth (at depth 1, pricing the block's kernels at its output size understated the ResNet by a third)."""
    from miniai.recipes import resnet
    torch.manual_seed(0)
    model, xb = resnet(nfs=(4, 8, 16)), torch.randn(2, 1, 28, 28)
    totals = [summary(model, xb, depth=d).mflops for d in (1, 2, 3, 4)]
    macs = []  # the conv and linear layers' own estimate: kernel size x output positions, + biases and others
    hooks = [m.register_forward_hook(lambda m, i, o: macs.append(
        sum(p.numel() * (o.shape[-2] * o.shape[-1] if p.dim() == 4 else 1) for p in m.parameters(recurse=False))))
        for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    model.eval()(xb)
    for h in hooks: h.remove()
    assert totals == pytest.approx([sum(macs) / 1e6] * 4)


def test_learner_summary_runs_the_batch_through_the_callbacks_that_shape_it():
    from miniai.callbacks import BatchTransformCB
    from miniai.recipes import FlipTTACB
    learn = tiny_learner()
    learn.model = nn.Sequential(nn.Linear(64, 5), nn.ReLU(), nn.Linear(5, 10))
    learn.cbs.append(BatchTransformCB(lambda b: (b[0].flatten(1), b[1])))
    learn.cbs.append(FlipTTACB())  # its second forward adds no rows
    s = learn.summary()
    assert [(r.name, r.inp, r.out) for r in s.rows] == [('0', (4, 64), (4, 5)), ('1', (4, 5), (4, 5)),
                                                        ('2', (4, 5), (4, 10))]
    learn.cbs.pop(-2)
    with pytest.raises(RuntimeError) as e:
        learn.summary()
    assert "failed in the model or the Learner's callbacks" in str(e.value.__notes__)


def test_a_whole_batch_passed_as_xb_gets_a_note_and_data_parallel_is_unwrapped():
    model = small_cnn()
    with pytest.raises(TypeError) as e:
        summary(model, (torch.randn(2, 1, 8, 8), torch.zeros(2)))
    assert 'for an (x, y) batch b, pass b[0]' in str(e.value.__notes__)
    s = summary(nn.DataParallel(model), torch.randn(2, 1, 8, 8))
    assert [r.module for r in s.rows] == ['Conv2d', 'ReLU', 'Flatten', 'Linear']


class TwoHeads(nn.Module):
    """Returns a tuple, and is called part by part by `PartsLearner`."""
    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(64, 8), nn.Linear(8, 10)
    def forward(self, x): return self.head(self.body(x.flatten(1))), x


class PartsLearner(TrainLearner):
    def predict(self): self.preds = self.model.head(self.model.body(self.batch[0].flatten(1)))


def test_learner_summary_takes_any_output_and_batch_items_and_records_every_call_in_predict():
    learn = tiny_learner()
    learn.model = TwoHeads()
    learn.dls.train = [(x, y, ['name'] * len(x)) for x, y in learn.dls.train]  # an item that is not a tensor
    assert [(r.name, r.out) for r in learn.summary().rows] == [('body', (4, 8)), ('head', (4, 10))]
    parts = PartsLearner(TwoHeads(), learn.dls, F.cross_entropy)
    s = parts.summary()
    assert [r.name for r in s.rows] == ['body', 'head'] and s.params == 64 * 8 + 8 + 8 * 10 + 10


def test_learner_summary_does_not_run_ddp_or_compile_callbacks():
    from miniai.accel import CompileCB
    from miniai.distributed import DDPCB
    learn = tiny_learner()
    learn.cbs += [DDPCB(), CompileCB(backend='eager')]  # DDPCB outside a process group would fail its before_fit
    assert len(learn.summary().rows) == 4
    assert '_compiled_call_impl' not in vars(learn.model) or learn.model._compiled_call_impl is None


def test_costs_go_to_the_innermost_listed_module_running_and_the_rest_is_outside_the_rows():
    class Root(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(100))  # the model's own: outside every row
            self.a = nn.Sequential(nn.Linear(10, 10), nn.ReLU())
            self.b = nn.Sequential(self.a[0])  # the same layer in both
        def forward(self, x): return self.b(self.a(x * self.scale[:10]))
    model, xb = Root(), torch.randn(2, 10)
    s1, s2 = summary(model, xb), summary(model, xb, depth=2)
    assert s1.other_mflops == s2.other_mflops == pytest.approx(100 / 1e6)
    assert s1.mflops == s2.mflops == pytest.approx((100 + 2 * 110) / 1e6)
    assert [(r.name, r.mflops) for r in s1.rows] == [('a', 110 / 1e6), ('b', 110 / 1e6)]
    assert '(0.00 outside the rows)' in str(s1)


def test_a_layer_that_raises_inside_a_forward_that_catches_it_keeps_the_totals_right():
    class Flaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)
        def forward(self, x):
            self.lin(x)
            raise ValueError('flaky')

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.flaky, self.slow = Flaky(), nn.Linear(8, 8)
        def forward(self, x):
            try:
                return self.flaky(x)
            except ValueError:
                return self.slow(x)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale, self.body = nn.Parameter(torch.ones(1000)), Body()
        def forward(self, x): return self.body(x) * self.scale[:1]

    model, xb = Model(), torch.randn(2, 8)
    for depth in (1, 2, 3):
        s = summary(model, xb, depth=depth)
        assert (s.mflops, s.other_mflops) == (pytest.approx((1000 + 2 * 72) / 1e6), pytest.approx(1000 / 1e6))


@pytest.mark.filterwarnings('ignore:`torch.jit.trace:FutureWarning')  # deprecated, but still used
def test_a_learner_whose_predict_does_not_run_the_model_and_torchscript_models_are_refused():
    from miniai.learner import Learner
    learn = tiny_learner()
    with pytest.raises(RuntimeError, match=r"predict did not call it \(a plain Learner needs TrainCB\(\)"):
        Learner(learn.model, learn.dls, F.cross_entropy).summary()
    traced = torch.jit.trace(small_cnn().eval(), torch.randn(2, 1, 8, 8))
    with pytest.raises(TypeError, match='holds TorchScript modules'):
        summary(traced, torch.randn(2, 1, 8, 8))
    learn.model = traced  # get_preds (and so no_trace) works on it
    preds, _ = learn.get_preds()
    assert preds.shape == (12, 10)


def test_a_never_called_container_is_listed_as_its_items_and_the_totals_stay_the_same():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3, padding=1)
            self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()) for _ in range(2)])
            self.heads = nn.ModuleDict({'a': nn.Linear(4, 3), 'b': nn.Linear(4, 2)})
        def forward(self, x):
            x = self.stem(x)
            for b in self.blocks: x = b(x)
            x = x.mean((2, 3))
            return self.heads['a'](x), self.heads['b'](x)
    torch.manual_seed(0)
    model, xb = Net(), torch.randn(2, 1, 6, 6)
    s1, s2 = summary(model, xb), summary(model, xb, depth=2)
    assert [r.name for r in s1.rows] == ['stem', 'blocks.0', 'blocks.1', 'heads.a', 'heads.b']
    assert [r.name for r in s2.rows] == ['stem', 'blocks.0.0', 'blocks.0.1', 'blocks.1.0', 'blocks.1.1', 'heads.a',
                                         'heads.b']
    assert s1.other_mflops == s2.other_mflops == 0 and sum(r.params for r in s1.rows) == s1.params
    assert s1.rows[1] == SummaryRow('blocks.0', 'Sequential', (2, 4, 6, 6), (2, 4, 6, 6), 148,
                                    (144 * 36 + 4) / 1e6)
    assert s1.mflops == s2.mflops == pytest.approx((36 * 36 + 4 + 2 * (144 * 36 + 4) + 15 + 10) / 1e6)
    assert '| blocks.1: Sequential |' in str(s1) and 'outside the rows' not in str(s1)


def test_a_conv_on_an_unbatched_image_counts_its_kernel_times_the_output_size():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    unbatched, batched = summary(conv, torch.randn(3, 8, 8)), summary(conv, torch.randn(1, 3, 8, 8))
    assert unbatched.mflops == batched.mflops == pytest.approx((108 * 8 * 8 + 4) / 1e6)
    assert unbatched.rows[0].out == (4, 8, 8)
    # A 3-dim parameter outside a conv is no kernel: nn.Bilinear's weight [4, 2, 3] costs its size.
    assert summary(nn.Bilinear(2, 3, 4), (torch.randn(5, 2), torch.randn(5, 3))).mflops == \
        pytest.approx((24 + 4) / 1e6)


def test_without_a_training_loader_it_says_to_give_a_batch():
    learn = TrainLearner(nn.Linear(3, 2), SimpleNamespace(train=None, valid=[(torch.randn(4, 3), torch.zeros(4))]),
                         F.cross_entropy)
    with pytest.raises(TypeError, match='dls.train is None') as e:
        learn.summary()
    assert 'give it a batch of inputs: learn.summary(xb)' in e.value.__notes__[0]
    assert learn.summary(torch.randn(4, 3)).rows[0].params == 8
