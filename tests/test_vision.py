"""The vanilla CNN, whole-batch augmentation and channel statistics."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torchvision.transforms.v2.functional import pad

from miniai.callbacks import BatchTransformCB
from miniai.vision import BatchAugment, batch_augment, channel_stats, conv_block, vanilla_cnn


def test_vanilla_cnn_shapes_and_layers():
    model = vanilla_cnn()
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    kinds = {type(m) for m in model.modules()}
    assert {nn.BatchNorm2d, nn.MaxPool2d, nn.Dropout, nn.Linear} <= kinds
    assert sum(p.numel() for p in model.parameters()) < 100_000  # small enough for CPU epochs
    # Dropout sits only in the head, after the convolutions.
    first_drop = next(i for i, m in enumerate(model) if isinstance(m, nn.Dropout))
    assert not any(isinstance(m, nn.Conv2d) for m in model[first_drop:].modules())
    assert vanilla_cnn(5, nfs=(8, 16), in_channels=3, img_size=32)(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_conv_block_double():
    blk = conv_block(1, 4, double=True)
    assert [type(m) for m in blk] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2 + [nn.MaxPool2d]
    assert blk(torch.randn(2, 1, 8, 8)).shape == (2, 4, 4, 4)


def _crops(x: torch.Tensor, p: int) -> list[list[torch.Tensor]]:
    """Every crop of each padded image, and its mirror image."""
    xp, (h, w) = pad(x, [p], padding_mode='reflect'), x.shape[-2:]
    return [[c for i in range(2 * p + 1) for j in range(2 * p + 1) for c in
             (xp[k, :, i:i + h, j:j + w], xp[k, :, i:i + h, j:j + w].flip(-1))] for k in range(len(x))]


def test_batch_augment_is_a_random_crop_or_flip_per_item():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6, 6).expand(32, -1, -1, -1).contiguous()
    out = BatchAugment(pad=2)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    crops = _crops(x, 2)
    assert all(any(torch.equal(o, c) for c in cs) for o, cs in zip(out, crops, strict=True))
    assert len({tuple(o.flatten().tolist()) for o in out}) > 8  # params drawn per item, not per batch


def test_batch_augment_flip_only_and_identity():
    torch.manual_seed(0)
    x = torch.randn(1000, 1, 3, 4)
    out = BatchAugment(pad=0)(x)
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all()) and 400 < int(flipped.sum()) < 600
    assert torch.equal(BatchAugment(pad=0, flip=False)(x), x)


def test_batch_augment_on_batches_and_through_the_callback():
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8)
    xb, yb = batch_augment()((x, y))
    assert xb.shape == x.shape and yb is y
    cb = BatchTransformCB(batch_augment(), on_val=False)
    learn = SimpleNamespace(training=False, batch=(x, y))
    cb.before_batch(learn)
    assert learn.batch[0] is x  # validation batches are left alone
    learn.training = True
    cb.before_batch(learn)
    assert learn.batch[0].shape == x.shape and not torch.equal(learn.batch[0], x)


def test_channel_stats_tensor_and_loader_agree():
    torch.manual_seed(0)
    scale, shift = torch.tensor([1., 2., 3.])[:, None, None], torch.tensor([0., 1., -1.])[:, None, None]
    x = torch.rand(50, 3, 5, 5) * scale + shift
    mean, std = channel_stats(x, chunk=7)
    assert torch.allclose(mean, x.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(std, x.transpose(0, 1).flatten(1).std(1, unbiased=False), atol=1e-5)
    loader = [(x[i:i + 16], torch.zeros(16)) for i in range(0, 50, 16)]
    for a, b in zip(channel_stats(loader), (mean, std), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    m8, s8 = channel_stats((x * 40).clamp(0, 255).to(torch.uint8))  # integer images work too
    assert m8.shape == s8.shape == (3,)


def test_batch_augment_refuses_what_it_cannot_augment():
    aug = BatchAugment()
    with pytest.raises(ValueError, match=r'\[N, C, H, W\], got shape \(1, 28, 28\).*x\[None\]'):
        aug(torch.randn(1, 28, 28))
    with pytest.raises(TypeError, match=r"got a dict; .*as_tuple=True.*b\['image'\] = aug\(b\['image'\]\)"):
        aug({'image': torch.randn(2, 1, 8, 8), 'label': torch.zeros(2)})
    for p in (-1, 1.5):
        with pytest.raises(ValueError, match=f'pad must be a whole number of pixels >= 0, got {p}'):
            BatchAugment(pad=p)
    assert repr(BatchAugment(padding_mode='edge')) == "BatchAugment(pad=4, flip=True, padding_mode='edge')"


def test_channel_stats_is_exact_on_bright_low_contrast_images():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(250, 252, (2000, 1, 16, 16), generator=g).to(torch.uint8)  # std ~0.5 around 250.5
    mean, std = channel_stats(x)
    ref = x.double()
    assert std.item() == pytest.approx(ref.std(unbiased=False).item(), rel=1e-6)
    assert mean.item() == pytest.approx(ref.mean().item(), rel=1e-7)


@pytest.mark.parametrize('data, msg', [
    ([], r'no images \(an empty tensor or loader\)'),
    (torch.zeros(0, 1, 4, 4), 'no images'),
    (torch.rand(10, 28, 28), r'\[N, C, H, W\], got shape \(10, 28, 28\).*x\[:, None\]')])
def test_channel_stats_refuses_what_holds_no_nchw_images(data, msg):
    with pytest.raises(ValueError, match=msg):
        channel_stats(data)
