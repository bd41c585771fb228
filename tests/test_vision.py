"""The vanilla CNN, whole-batch augmentation and channel statistics."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torchvision.transforms.v2.functional import pad

from miniai.callbacks import BatchTransformCB
from miniai.data import DeviceLoader
from miniai.vision import (
    BatchAugment,
    BatchCompose,
    RandCopy,
    RandErase,
    batch_augment,
    channel_stats,
    conv_block,
    vanilla_cnn,
)

torch.set_num_threads(1)


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


def test_vanilla_cnn_refuses_images_too_small_for_its_blocks():
    with pytest.raises(ValueError, match=r'vanilla_cnn: 3 conv blocks halve the image 3 times, so img_size must be at '
                                         r'least 2\*\*3 = 8; got 6: give fewer nfs'):
        vanilla_cnn(img_size=6)
    with pytest.raises(ValueError, match='at least 2\\*\\*5 = 32; got 28'):
        vanilla_cnn(nfs=(8, 16, 32, 64, 128))
    assert vanilla_cnn(img_size=8)(torch.randn(2, 1, 8, 8)).shape == (2, 10)  # the smallest: 8 -> 1


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


def _box(changed: torch.Tensor) -> tuple[int, int, int, int]:
    """Top, left, height and width of the bounding box of an image's changed pixels `[H, W]`."""
    rs, cs = changed.any(1).nonzero().flatten().tolist(), changed.any(0).nonzero().flatten().tolist()
    return rs[0], cs[0], rs[-1] - rs[0] + 1, cs[-1] - cs[0] + 1


class _OutputDevices(TorchDispatchMode):
    """Records the device of every tensor that any torch op makes while it is on."""
    def __init__(self):
        super().__init__()
        self.devices: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.devices |= {t.device.type for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)}
        return out


def _one_rect_per_item(x: torch.Tensor, out: torch.Tensor, size: tuple[int, int]) -> list[tuple[int, int] | None]:
    """Check that each image changed in exactly one solid rectangle of `size` (the same pixels in every channel)
    or not at all; return each rectangle's top-left corner (None: unchanged)."""
    diff = out != x
    changed = diff.any(1)
    assert bool((diff == changed[:, None]).all())  # every channel changes where one does
    corners = []
    for d in changed:
        if not d.any():
            corners.append(None)
            continue
        r, c, hh, ww = _box(d)
        assert (hh, ww) == size and int(d.sum()) == hh * ww
        corners.append((r, c))
    return corners


@pytest.mark.parametrize('tfm', [RandErase(), RandCopy(), RandErase(0.5, 1), RandCopy(0.5, 2)])
def test_rand_rects_keep_shape_dtype_device_and_leave_the_input_alone(tfm):
    torch.manual_seed(0)
    x = torch.randn(16, 3, 12, 10)
    x0 = x.clone()
    out = tfm(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.equal(x, x0) and not torch.equal(out, x)  # a new tensor; the input is as it was
    for dt in (torch.float16, torch.float64):
        assert tfm(x.to(dt)).dtype == dt
    # On the meta device, which holds no data: a read back to the host would fail, and every tensor made on the
    # way, random draws included, must be on the images' device.
    with _OutputDevices() as made:
        m = tfm(torch.empty(4, 2, 8, 8, device='meta'))
    assert m.device.type == 'meta' and m.shape == (4, 2, 8, 8) and made.devices == {'meta'}


def test_rand_copy_keeps_integer_images():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (8, 1, 10, 10), dtype=torch.uint8)
    out = RandCopy(0.3)(x)
    assert out.dtype == torch.uint8 and not torch.equal(out, x)


@pytest.mark.parametrize('cls', [RandErase, RandCopy])
def test_rand_rects_are_reproducible_under_a_seed(cls):
    x = torch.randn(8, 2, 10, 10)
    torch.manual_seed(0)
    a = cls()(x)
    torch.manual_seed(0)
    b = cls()(x)
    torch.manual_seed(1)
    c = cls()(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rand_erase_changes_one_pct_sized_rectangle_per_item():
    torch.manual_seed(0)
    x = torch.randn(300, 2, 10, 15)
    x[:, :, 0, 0], x[:, :, -1, -1] = -10., 10.  # min and max far out: the clamped noise never equals a pixel
    corners = _one_rect_per_item(x, RandErase(pct=0.3, max_num=1)(x), (3, 4))  # int(0.3*10), int(0.3*15)
    hit = [c for c in corners if c is not None]
    assert 0.35 < len(hit) / len(corners) < 0.65  # 0 or 1 rectangles, drawn per item
    assert {r for r, _ in hit} == set(range(10 - 3 + 1)) and {c for _, c in hit} == set(range(15 - 4 + 1))


def test_rand_erase_noise_has_each_images_own_statistics():
    torch.manual_seed(0)
    scale, shift = torch.rand(32, 2, 1, 1) * 3 + 0.5, torch.randn(32, 2, 1, 1) * 2
    x = torch.randn(32, 2, 32, 32) * scale + shift
    out = RandErase(pct=1, max_num=1)(x)  # an erased image is all noise
    erased = (out != x).flatten(1).all(1)
    assert 8 < int(erased.sum()) < 24
    o, xi = out[erased].flatten(2), x[erased].flatten(2)
    std = xi.std(-1, correction=0)
    assert ((o.mean(-1) - xi.mean(-1)).abs() < 0.15 * std).all()
    assert ((o.std(-1, correction=0) / std - 1).abs() < 0.1).all()
    assert (o.amin(-1) >= xi.amin(-1)).all() and (o.amax(-1) <= xi.amax(-1)).all()  # clamped to the image's range
    const = torch.arange(6.)[:, None, None, None].expand(6, 2, 8, 8)  # a constant image has nothing to erase with
    assert torch.equal(RandErase(0.5)(const), const)


def test_rand_copy_copies_a_same_sized_patch_from_elsewhere_in_the_same_image():
    torch.manual_seed(0)
    x = torch.randn(300, 2, 10, 15)  # all pixels distinct
    out = RandCopy(pct=0.3, max_num=1)(x)
    corners = _one_rect_per_item(x, out, (3, 4))
    hit = [(i, c) for i, c in enumerate(corners) if c is not None]
    assert 0.35 < len(hit) / len(corners) < 0.65
    sources = []
    for i, (r, c) in hit:
        patch = out[i, :, r:r + 3, c:c + 4]
        src = [(a, b) for a in range(8) for b in range(12) if torch.equal(x[i, :, a:a + 3, b:b + 4], patch)]
        assert len(src) == 1 and src[0] != (r, c)
        sources += src
    dests = [c for _, c in hit]
    for corners in (dests, sources):  # destinations and sources both anywhere in the image
        assert {r for r, _ in corners} == set(range(8)) and {c for _, c in corners} == set(range(12))
    for k in (0, 1):  # ... and drawn independently: the same row (column) only by chance
        assert sum(s[k] == d[k] for s, d in zip(sources, dests, strict=True)) < len(hit) / 3
    # With several rectangles, every pixel still comes from the same image, the same place in every channel.
    out = RandCopy(pct=0.3, max_num=4)(x)
    assert (out != x).any()
    for xi, oi in zip(x, out, strict=True):
        pix = xi.flatten(1).T  # [H*W, C]
        assert (oi.flatten(1).T[:, None] == pix).all(-1).any(1).all()


@pytest.mark.parametrize('cls', [RandErase, RandCopy])
def test_no_rectangles_is_the_identity(cls):
    x = torch.randn(8, 2, 10, 10)
    for tfm in (cls(max_num=0), cls(pct=0.05)):  # none, or sides of int(0.05*10) = 0 pixels
        out = tfm(x)
        assert torch.equal(out, x) and out is not x


@pytest.mark.parametrize('tfm', [RandErase(), RandCopy(), BatchCompose(BatchAugment(pad=1), RandErase(), RandCopy())])
def test_rand_rects_on_batches_through_the_callback_and_the_device_loader(tfm):
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8)
    xb, yb = tfm((x, y))
    assert xb.shape == x.shape and yb is y and not torch.equal(xb, x)
    b = tfm([x, y, 'extra'])
    assert type(b) is list and b[1] is y and b[2] == 'extra'
    cb = BatchTransformCB(tfm, on_val=False)
    learn = SimpleNamespace(training=False, batch=(x, y))
    cb.before_batch(learn)
    assert learn.batch[0] is x
    learn.training = True
    cb.before_batch(learn)
    assert learn.batch[1] is y and not torch.equal(learn.batch[0], x)
    dl = DeviceLoader(torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8), torch.arange(10), bs=4, tfm=tfm,
                      device='cpu')
    plain = DeviceLoader(dl.x, dl.y, bs=4, device='cpu')
    for (xa, ya), (xp, yp) in zip(dl, plain, strict=True):
        assert xa.shape == xp.shape and torch.equal(ya, yp) and not torch.equal(xa, xp)


def test_batch_compose_applies_its_transforms_in_order():
    x = torch.randn(8, 1, 10, 10)
    aug, erase = BatchAugment(pad=1), RandErase(0.3)
    torch.manual_seed(0)
    want = erase(aug(x))
    torch.manual_seed(0)
    assert torch.equal(BatchCompose(aug, erase)(x), want)
    assert BatchCompose()(x) is x
    assert repr(BatchCompose(RandCopy(0.25, 2))) == 'BatchCompose(RandCopy(pct=0.25, max_num=2))'
    with pytest.raises(TypeError, match=r'every transform must be callable, got a int \(3\)'):
        BatchCompose(aug, 3)


@pytest.mark.parametrize('cls', [RandErase, RandCopy])
def test_rand_rects_refuse_bad_arguments_and_inputs(cls):
    name = cls.__name__
    for pct in (0, -0.1, 1.5, float('nan'), True, '0.2'):
        with pytest.raises(ValueError, match=rf"{name}: pct must be a fraction .* in \(0, 1\], got {pct!r}; e\.g\."):
            cls(pct=pct)
    for num in (-1, 1.5, True, None):
        with pytest.raises(ValueError, match=rf'{name}: max_num must be a whole number .* got {num!r}; e\.g\.'):
            cls(max_num=num)
    tfm = cls()
    for bad in (torch.randn(2, 28, 28), torch.randn(2, 1, 1, 28, 28)):
        with pytest.raises(ValueError, match=rf'{name}: expected a batch of images \[N, C, H, W\], got shape'):
            tfm(bad)
    with pytest.raises(TypeError, match=rf"{name}: expected images or an \(x, y, \.\.\.\) batch, got a dict"):
        tfm({'image': torch.randn(2, 1, 8, 8)})
    assert repr(cls(0.5, 3)) == f'{name}(pct=0.5, max_num=3)'


def test_rand_erase_refuses_integer_images():
    with pytest.raises(TypeError, match=r'RandErase: expected floating-point \(normalised\) images, got torch\.uint8'):
        RandErase()(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize('kw, msg', [
    (dict(n_hidden=0), r'n_hidden must be a whole number >= 1 \(e.g. 256\); got 0'),
    (dict(n_classes=0), r'n_classes must be a whole number >= 1 \(e.g. 10\); got 0'),
    (dict(in_channels=0), r'in_channels must be a whole number >= 1 \(e.g. 1\); got 0'),
    (dict(nfs=()), r"nfs is each conv block's number of filters, at least one block .* \(e.g. \(8, 16, 32\)\); "
                   r'got \(\)'),
    (dict(nfs=(8, 0, 32)), r"nfs is each conv block's number of filters.*got \(8, 0, 32\)")])
def test_vanilla_cnn_refuses_sizes_that_make_no_useful_model(kw, msg):
    with pytest.raises(ValueError, match=f'vanilla_cnn: {msg}'):
        vanilla_cnn(**kw)


def test_batch_augment_refuses_an_unknown_padding_mode_and_a_pad_too_large_for_the_images():
    with pytest.raises(ValueError, match=r"padding_mode must be one of 'constant', 'edge', 'reflect', 'symmetric' "
                                         r"\(torchvision's pad; 'constant' pads with zeros\), got 'zeros'"):
        BatchAugment(padding_mode='zeros')
    x = torch.randn(2, 1, 4, 6)
    for mode, most in (('reflect', 3), ('symmetric', 4)):
        with pytest.raises(ValueError, match=f"BatchAugment: padding_mode='{mode}' pads 4x6 images by at most {most} "
                                             r"pixels, got pad=5; give a smaller pad, or padding_mode='edge' or "):
            BatchAugment(pad=5, padding_mode=mode)(x)
        assert BatchAugment(pad=most, padding_mode=mode)(x).shape == x.shape  # the largest that fits
    for mode in ('edge', 'constant'):
        assert BatchAugment(pad=5, padding_mode=mode)(x).shape == x.shape
