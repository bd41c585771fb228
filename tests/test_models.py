"""The seed's model pieces and seeding."""

from functools import partial

import pytest
import torch
from torch import nn

from miniai.models import GeneralRelu, conv, get_model, init_weights, set_seed


def test_get_model_shapes_and_bias():
    model = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), norm=nn.BatchNorm2d)
    model.apply(partial(init_weights, leaky=0.1))
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 10]
    assert [c.bias is not None for c in convs] == [False] * 4 + [True]  # no bias before BatchNorm
    assert all(c.bias is not None for c in get_model().modules() if isinstance(c, nn.Conv2d))


def test_conv_layers():
    layers = conv(1, 8, act=None, norm=None)
    assert len(layers) == 1 and layers[0].stride == (2, 2) and layers[0].padding == (1, 1)


def test_general_relu():
    x = torch.tensor([-1., 0., 2., 10.])
    assert torch.allclose(GeneralRelu(leak=0.1, sub=0.4, maxv=5.)(x), torch.tensor([-0.5, -0.4, 1.6, 5.]))
    assert torch.equal(GeneralRelu()(x), torch.relu(x))


def test_init_weights_is_kaiming():
    set_seed(0)
    lin = nn.Linear(1000, 1000)
    init_weights(lin, leaky=0.)
    assert abs(lin.weight.std().item() - (2 / 1000) ** 0.5) < 2e-3


def test_set_seed_repeats_random_streams():
    set_seed(1)
    a = torch.randn(3), torch.randint(0, 10, (3,))
    set_seed(1)
    b = torch.randn(3), torch.randint(0, 10, (3,))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_set_seed_deterministic_flag():
    set_seed(0, deterministic=True)
    try: assert torch.are_deterministic_algorithms_enabled()
    finally: set_seed(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_set_seed_leaves_torch_determinism_alone_by_default():
    try:
        for on in (True, False):
            torch.use_deterministic_algorithms(on)
            set_seed(0)
            assert torch.are_deterministic_algorithms_enabled() is on
    finally:
        torch.use_deterministic_algorithms(False)


def test_get_model_ends_at_10_logits_when_its_convs_reach_1x1():
    assert get_model(nfs=(1, 8, 16))(torch.randn(2, 1, 8, 8)).shape == (2, 10)  # 3 stride-2 convs: 8x8 -> 1x1
    assert get_model(nfs=(1, 8, 16, 32, 64, 128))(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_conv_leaves_out_the_bias_before_a_partial_batchnorm():
    assert conv(1, 8, norm=partial(nn.BatchNorm2d, momentum=0.2))[0].bias is None
    assert conv(1, 8, norm=partial(partial(nn.BatchNorm2d), eps=1e-3))[0].bias is None
    assert conv(1, 8, norm=partial(nn.GroupNorm, 2))[0].bias is not None


def test_conv_refuses_a_layer_where_it_wants_a_class():
    for kw, nm in (({'act': nn.ReLU()}, 'act'), ({'norm': nn.BatchNorm2d(8)}, 'norm')):
        with pytest.raises(TypeError, match=f'conv: {nm} makes a new layer for each conv.*not a layer; got the module '
                                            f'{type(next(iter(kw.values()))).__name__}'):
            conv(1, 8, **kw)
    with pytest.raises(TypeError, match=r'conv: act is a class or factory making a layer \(e.g. nn.ReLU\), or None '
                                        r'\(or False\) for no act layer; got True'):
        conv(1, 8, act=True)  # older course code's flag
    assert len(conv(1, 8, act=False, norm=False)) == 1  # as `if act:` in the course: no such layer


def test_get_model_takes_nfs_none_as_the_course_does():
    torch.manual_seed(0)
    a = get_model(nfs=None)
    torch.manual_seed(0)
    b = get_model()
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    assert a[0][0].in_channels == 1 and a[3][0].out_channels == 64
