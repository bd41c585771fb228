"""The ResNet34 helpers and ImageFolder loaders, on a tiny image folder made here (no download)."""

import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models import resnet34
from torchvision.transforms import v2

import miniai.transfer as transfer
from miniai.data import DataLoaders
from miniai.learner import TrainLearner
from miniai.transfer import discriminative_groups, freeze, image_folder_dls, resnet34_for, unfreeze

CLASSES = ['daisy', 'rose', 'tulip']


@pytest.fixture
def image_folder(tmp_path):
    """3 classes × 6 PNGs of 32×32: a solid colour per class, with a gradient that varies per image."""
    ramp = np.linspace(0, 1, 32)[None, :, None]
    for c, name in enumerate(CLASSES):
        (tmp_path / name).mkdir()
        for i in range(6):
            colour = np.eye(3)[c] * 200 + ramp * 10 * i
            im = np.broadcast_to(colour, (32, 32, 3)).astype(np.uint8)
            Image.fromarray(im).save(tmp_path / name / f'{i}.png')
    return tmp_path


def _labels(dl) -> list[int]:
    return [int(y) for _, ys in dl for y in ys]


def test_image_folder_dls_split_labels_and_batches(image_folder):
    dls = image_folder_dls(image_folder, bs=4, valid_pct=0.2, size=16, seed=0)
    assert dls.classes == CLASSES
    train, valid = dls.train.dataset, dls.valid.dataset
    assert (len(train), len(valid)) == (14, 4)  # round(18 * 0.2) = 4 for validation
    assert sorted(train.indices + valid.indices) == list(range(18))
    x, y = next(iter(dls.valid))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    # The labels are the folders: each image's strongest channel is its class's colour.
    assert _labels(dls.valid) == [train.dataset.targets[i] for i in valid.indices]
    raw = image_folder_dls(image_folder, bs=4, size=16, seed=0, stats=None)
    for xb, yb in raw.valid:
        assert torch.equal(xb.mean((2, 3)).argmax(1), yb)
    # The split is fixed by the seed.
    assert image_folder_dls(image_folder, seed=0).valid.dataset.indices == valid.indices
    assert image_folder_dls(image_folder, seed=1).valid.dataset.indices != valid.indices


def test_image_folder_dls_normalisation_and_train_only_tfms(image_folder):
    dls = image_folder_dls(image_folder, bs=18, size=8, seed=0, stats='computed')
    x = torch.cat([xb for xb, _ in dls.train])
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)
    plain = image_folder_dls(image_folder, bs=18, size=8, seed=0)
    flipped = image_folder_dls(image_folder, bs=18, size=8, seed=0, tfms=[v2.RandomHorizontalFlip(p=1.)])
    assert torch.equal(next(iter(plain.valid))[0], next(iter(flipped.valid))[0])
    (xp, yp), (xf, yf) = next(iter(plain.train)), next(iter(flipped.train))
    assert torch.equal(yp, yf) and torch.allclose(xf, xp.flip(-1))


def test_resnet34_for_shapes():
    small = resnet34_for(10, in_channels=1, pretrained=False, img_size=28)
    assert isinstance(small.maxpool, nn.Identity) and small.conv1.in_channels == 1
    with torch.no_grad():
        assert small(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    rgb = resnet34_for(5, in_channels=3, pretrained=False, img_size=64)
    assert isinstance(rgb.maxpool, nn.MaxPool2d)
    with torch.no_grad():
        assert rgb(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    assert isinstance(rgb.fc[-1], nn.Linear) and rgb.fc[-1].out_features == 5


def test_pretrained_conv1_summed_over_rgb(monkeypatch):
    sd = resnet34().state_dict()
    monkeypatch.setattr(transfer, '_resnet34_imagenet_state', lambda: sd)
    model = resnet34_for(10, in_channels=1)
    assert torch.allclose(model.conv1.weight, sd['conv1.weight'].sum(1, keepdim=True))
    assert torch.equal(model.layer4[0].conv1.weight, sd['layer4.0.conv1.weight'])


def test_offline_prints_one_line_and_goes_on(monkeypatch, capsys):
    def offline(): raise OSError('no network')
    monkeypatch.setattr(transfer, '_resnet34_imagenet_state', offline)
    model = resnet34_for(3, in_channels=3, img_size=32)
    out = capsys.readouterr()
    lines = (out.out + out.err).splitlines()
    assert lines == ['miniai: ImageNet weights for resnet34 unavailable (offline?); '
                     'continuing from random weights']
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_weights_load_from_the_torch_hub_cache(tmp_path, monkeypatch):
    """Offline, weights already in the torch hub cache are used: no download is tried."""
    def no_network(*args, **kwargs): raise AssertionError('tried to download')
    sd = resnet34().state_dict()
    cache = tmp_path / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    from torchvision.models import ResNet34_Weights
    torch.save(sd, cache / ResNet34_Weights.IMAGENET1K_V1.url.rsplit('/', 1)[-1])
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_network)
    model = resnet34_for(10, in_channels=3)
    assert torch.equal(model.layer4[0].conv1.weight, sd['layer4.0.conv1.weight'])


def test_hub_chatter_is_hidden_when_the_download_fails(tmp_path, monkeypatch, capsys):
    """The real path through torch hub, with an empty cache and the download failing: torch's own
    'Downloading: ...' line must not show, only ours."""
    def no_network(url, dst, *args, **kwargs): raise OSError('no network')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_network)
    resnet34_for(3, in_channels=1)
    out = capsys.readouterr()
    assert (out.out + out.err).splitlines() == ['miniai: ImageNet weights for resnet34 unavailable (offline?); '
                                                'continuing from random weights']


def _n_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _n(*ms: nn.Module) -> int:
    return sum(p.numel() for m in ms for p in m.parameters())


def test_freeze_and_unfreeze_counts():
    model = resnet34_for(4, pretrained=False, img_size=28)
    n_bn = sum(_n(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    freeze(model)
    assert _n_trainable(model) == _n(model.fc) + n_bn  # head and BatchNorm only
    bn_outside_l4 = n_bn - sum(_n(m) for m in model.layer4.modules() if isinstance(m, nn.BatchNorm2d))
    unfreeze(model, 1)
    assert _n_trainable(model) == _n(model.fc, model.layer4) + bn_outside_l4
    unfreeze(model, 2)
    assert _n_trainable(model) > _n(model.fc, model.layer3, model.layer4)
    unfreeze(model)
    assert _n_trainable(model) == _n(model)


def test_discriminative_groups_and_one_tiny_batch():
    torch.manual_seed(0)
    model = unfreeze(resnet34_for(3, in_channels=3, pretrained=False), 1)
    groups = transfer.resnet_groups(model)
    assert sum(len(g) for g in groups) == len(list(model.parameters()))
    pgs = discriminative_groups(model, lr=1e-2, div=100)
    assert [pg['lr'] for pg in pgs] == pytest.approx([1e-4, 1e-3, 1e-2])
    xb, yb = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    dls = DataLoaders([(xb, yb)], [(xb, yb)])
    learn = TrainLearner(model, dls, F.cross_entropy, opt_func=torch.optim.SGD,
                         splitter=partial(discriminative_groups, lr=1e-2))
    frozen, thawed = model.layer1[0].conv1.weight.clone(), model.layer4[0].conv1.weight.clone()
    learn.fit(1)
    assert [pg['lr'] for pg in learn.opt.param_groups] == pytest.approx([1e-3, 1e-2 / math.sqrt(10), 1e-2])
    assert torch.equal(model.layer1[0].conv1.weight, frozen)
    assert not torch.equal(model.layer4[0].conv1.weight, thawed)


def test_unfreeze_refuses_a_number_of_blocks_out_of_range():
    model = resnet34_for(4, pretrained=False, img_size=28)
    for n in (-1, 5):
        with pytest.raises(ValueError, match=f'unfreeze: n_blocks is how many of layer1, .* 0 to 4 .*got {n}'):
            unfreeze(model, n)
    for n in (True, 2.0):
        with pytest.raises(ValueError, match=f'n_blocks is how many .* a whole number 0 to 4 .*got {n}'):
            unfreeze(model, n)
    unfreeze(model, np.int64(1))  # e.g. from a NumPy array: a whole number too
    assert model.layer4[0].conv1.weight.requires_grad and not model.layer3[0].conv1.weight.requires_grad
    assert resnet34_for(np.int64(3), in_channels=np.int64(1), pretrained=False).fc[1].out_features == 3


def test_discriminative_groups_refuses_a_div_that_is_not_positive():
    model = resnet34_for(4, pretrained=False, img_size=28)
    for div in (0, -10., math.nan):
        with pytest.raises(ValueError, match=f'discriminative_groups: div .* a number > 0 .*got {div}'):
            discriminative_groups(model, lr=1e-2, div=div)


def test_resnet34_for_refuses_no_classes_or_channels():
    for kw in ({'n_classes': 0}, {'n_classes': 3, 'in_channels': 0}, {'n_classes': 2.5}):
        nm, v = list(kw.items())[-1]
        with pytest.raises(ValueError, match=f'resnet34_for: {nm} must be a whole number >= 1; got {v}'):
            resnet34_for(pretrained=False, **kw)


@pytest.mark.parametrize('in_channels', [1, 2])
def test_a_random_conv1_is_initialised_as_torchvision_does(in_channels):
    torch.manual_seed(0)
    w = resnet34_for(3, in_channels=in_channels, pretrained=False).conv1.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (64 * 7 * 7)), rel=0.05)  # Kaiming normal, fan_out


def test_image_folder_dls_refuses_a_valid_pct_outside_0_to_1(image_folder):
    for pct in (1., -0.2, 1.5):
        with pytest.raises(ValueError, match=f'valid_pct is the share .* from 0 \\(none\\) to below 1 .*got {pct}'):
            image_folder_dls(image_folder, bs=4, valid_pct=pct, size=8)
    with pytest.raises(ValueError, match=r'valid_pct=0.01 of \d+ images is no image to validate on'):
        image_folder_dls(image_folder, bs=4, valid_pct=0.01, size=8)
    dls = image_folder_dls(image_folder, bs=4, valid_pct=0, size=8)  # train on all: fit(valid=False)
    assert len(dls.valid.dataset) == 0 and len(dls.train.dataset) > 0


@pytest.mark.parametrize('stats', ['imagenet', ((0.5,) * 3,), 0.5])
def test_image_folder_dls_refuses_stats_it_does_not_know(image_folder, stats):
    with pytest.raises(ValueError, match=r"image_folder_dls: stats is \(mean, std\) \(e.g. IMAGENET_STATS, the "
                                         r"default\), 'computed' \(from the training split\) or None"):
        image_folder_dls(image_folder, bs=4, size=8, stats=stats)


def test_image_folder_dls_validation_passes_do_not_shift_the_training_epochs(image_folder):
    def epochs(validate: bool) -> list:
        torch.manual_seed(0)
        dls = image_folder_dls(image_folder, bs=4, size=8, seed=0, tfms=[v2.RandomHorizontalFlip()])
        e1 = torch.cat([x for x, _ in dls.train])
        state = torch.get_rng_state()
        if validate: [None for _ in dls.valid]
        assert torch.equal(torch.get_rng_state(), state)  # a validation pass draws nothing from torch's RNG
        return [e1, torch.cat([x for x, _ in dls.train])]
    (a1, a2), (b1, b2) = epochs(False), epochs(True)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)


def test_image_folder_dls_refuses_no_training_image_and_takes_one_tfm_and_no_seed(image_folder):
    with pytest.raises(ValueError, match=r'valid_pct=0.99 of 18 images leaves no image to train on; give a smaller '
                                         r'valid_pct'):
        image_folder_dls(image_folder, bs=4, valid_pct=0.99, size=8)
    one = image_folder_dls(image_folder, bs=18, size=8, seed=0, tfms=v2.RandomHorizontalFlip(p=1.))
    listed = image_folder_dls(image_folder, bs=18, size=8, seed=0, tfms=[v2.RandomHorizontalFlip(p=1.)])
    assert torch.equal(next(iter(one.train))[0], next(iter(listed.train))[0])
    torch.manual_seed(0)
    a = image_folder_dls(image_folder, bs=4, size=8, seed=None).valid.dataset.indices
    torch.manual_seed(0)
    assert image_folder_dls(image_folder, bs=4, size=8, seed=None).valid.dataset.indices == a  # drawn from torch's RNG
    assert len(a) == 4
