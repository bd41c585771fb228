"""Transfer learning, the second article's way: an ImageNet ResNet34 with a new head, adapted to any number of
input channels and to small images; freezing all but the last blocks; discriminative learning rates; and
`DataLoaders` for any class-per-folder image dataset (such as the article's five flowers)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .data import DataLoaders, _drawn_seed
from .guards import is_whole

__all__ = ['IMAGENET_STATS', 'resnet34_for', 'freeze', 'unfreeze', 'resnet_groups', 'discriminative_groups',
           'image_folder_dls']

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_BLOCKS = ('layer1', 'layer2', 'layer3', 'layer4')


def _resnet34_imagenet_state() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for resnet34, from the torch hub cache or downloaded (quietly)."""
    from torchvision.models import ResNet34_Weights
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):  # hub says 'Downloading' even offline
        return ResNet34_Weights.IMAGENET1K_V1.get_state_dict(progress=False)


def resnet34_for(n_classes: int, in_channels: int = 1, pretrained: bool = True, img_size: int | None = None,
                 p_drop: float = 0.25) -> nn.Module:
    """torchvision's resnet34 (ImageNet weights if `pretrained` and available) with a new head `fc`
    (Dropout → Linear to `n_classes`) for `in_channels`-channel images.

    With other than 3 channels, the pretrained `conv1` filters are summed over RGB and shared out equally
    (for 1 channel: the sum, so a grey image gives the response of the same image in colour); without the
    weights the new `conv1` is initialised as torchvision initialises its convs. For small
    images (`img_size` < 64, e.g. Fashion-MNIST's 28) the stem keeps its stride but loses its max-pool, so a
    28×28 image ends as a 2×2 map instead of 1×1; with `img_size=None` the ImageNet stem is kept (any size
    works: the pooling before the head is adaptive). If the weights cannot be had, one line says so and the
    model starts from random weights."""
    for nm, v in (('n_classes', n_classes), ('in_channels', in_channels)):
        if not is_whole(v, 1):
            raise ValueError(f'resnet34_for: {nm} must be a whole number >= 1; got {v!r}')
    n_classes, in_channels = int(n_classes), int(in_channels)
    from torchvision.models import resnet34
    model, loaded = resnet34(), False
    if pretrained:
        try:
            model.load_state_dict(_resnet34_imagenet_state())
            loaded = True
        except Exception:
            print('miniai: ImageNet weights for resnet34 unavailable (offline?); '
                  'continuing from random weights', file=sys.stderr)
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if loaded:
            w = old.weight.detach().sum(1, keepdim=True) / in_channels
            model.conv1.weight.data.copy_(w.expand(-1, in_channels, -1, -1))
        else:  # as torchvision inits the other convs
            nn.init.kaiming_normal_(model.conv1.weight, mode='fan_out', nonlinearity='relu')
    if img_size is not None and img_size < 64:
        model.maxpool = nn.Identity()
    model.fc = nn.Sequential(nn.Dropout(p_drop), nn.Linear(model.fc.in_features, n_classes))
    return model


def unfreeze(model: nn.Module, n_blocks: int | None = None) -> nn.Module:
    """Make trainable the last `n_blocks` of `layer1`..`layer4` (None: the whole model) and the head `fc`;
    the rest is frozen, except BatchNorm layers, which always train (fastai's practice)."""
    if n_blocks is not None and not (is_whole(n_blocks) and n_blocks <= len(_BLOCKS)):
        raise ValueError(f'unfreeze: n_blocks is how many of {", ".join(_BLOCKS)} to train, a whole number 0 to '
                         f'{len(_BLOCKS)} (None: the whole model); got {n_blocks!r}')
    blocks = _BLOCKS if n_blocks is None else _BLOCKS[len(_BLOCKS) - n_blocks:]
    model.requires_grad_(n_blocks is None)
    for m in [model.fc, *(getattr(model, b) for b in blocks)]:
        m.requires_grad_(True)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.requires_grad_(True)
    return model


def freeze(model: nn.Module) -> nn.Module:
    """Train only the head `fc` (and the BatchNorm layers): `unfreeze(model, 0)`."""
    return unfreeze(model, 0)


def resnet_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """fastai's three parameter groups of a ResNet: stem + `layer1` + `layer2`, `layer3` + `layer4`, head."""
    parts = [[model.conv1, model.bn1, model.layer1, model.layer2], [model.layer3, model.layer4], [model.fc]]
    return [[p for m in ms for p in m.parameters()] for ms in parts]


def discriminative_groups(model: nn.Module, lr: float, div: float = 10.) -> list[dict]:
    """`resnet_groups` as optimizer param groups, lrs rising geometrically from `lr/div` to `lr` (the head);
    frozen parameters are included, so a later `unfreeze` trains them without a new optimizer. Use as the
    Learner's splitter: `Learner(..., splitter=partial(discriminative_groups, lr=1e-3))`."""
    if not div > 0:
        raise ValueError(f'discriminative_groups: div is how many times lower the first group\'s lr is than the '
                         f'head\'s, a number > 0 (e.g. 10); got {div!r}')
    groups = resnet_groups(model)
    n = len(groups) - 1
    return [{'params': ps, 'lr': lr / div ** ((n - i) / n)} for i, ps in enumerate(groups)]


def image_folder_dls(path: str | os.PathLike, bs: int = 64, valid_pct: float = 0.2, size: int = 224,
                     seed: int | None = 42, num_workers: int = 0, tfms: Sequence | Callable | None = None,
                     stats: tuple | str | None = IMAGENET_STATS) -> DataLoaders:
    """`DataLoaders` of `(x [bs,3,size,size], y)` over a class-per-subfolder image dataset, with a random
    `valid_pct` validation split (0: none) that `seed` fixes (it also fixes the training shuffle; None: drawn from
    torch's RNG). Images are resized to `size`×`size`, made float in [0, 1] and normalised with `stats`: (mean,
    std), the ImageNet stats by default, 'computed' (`channel_stats` of the training split) or None. `tfms` are
    extra training-only torchvision v2 transforms (augmentation; a list, or one), run after the resize. The
    validation loader has a generator of its own, so validation passes do not shift the training epochs' draws.
    `dls.classes` are the folder names."""
    if not 0 <= valid_pct < 1:
        raise ValueError(f'image_folder_dls: valid_pct is the share of the images to validate on, from 0 (none) to '
                         f'below 1 (e.g. 0.2); got {valid_pct!r}')
    if not (stats == 'computed' if isinstance(stats, str) else stats is None or
            isinstance(stats, Sequence) and len(stats) == 2):
        raise ValueError(f"image_folder_dls: stats is (mean, std) (e.g. IMAGENET_STATS, the default), 'computed' "
                         f'(from the training split) or None (no normalisation); got {stats!r}')
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    def folder(extra: Sequence = (), norm: tuple | None = None) -> ImageFolder:
        steps = [v2.ToImage(), v2.Resize((size, size), antialias=True), *extra,
                 v2.ToDtype(torch.float32, scale=True), *([v2.Normalize(*norm)] if norm else [])]
        return ImageFolder(os.fspath(path), v2.Compose(steps))

    n = len(folder())
    n_valid = round(n * valid_pct)
    if valid_pct and not n_valid:
        raise ValueError(f'image_folder_dls: valid_pct={valid_pct} of {n} images is no image to validate on; give a '
                         'larger valid_pct, or 0 to train on all of them (then fit(..., valid=False)).')
    if n_valid == n:
        raise ValueError(f'image_folder_dls: valid_pct={valid_pct} of {n} images leaves no image to train on; give a '
                         'smaller valid_pct (e.g. 0.2).')
    seed = _drawn_seed() if seed is None else seed
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    train_idx, valid_idx = idx[n_valid:], idx[:n_valid]
    if stats == 'computed':
        from .vision import channel_stats
        stats = tuple(s.tolist() for s in channel_stats(DataLoader(Subset(folder(), train_idx), bs)))
    tfms = [tfms] if callable(tfms) else tfms or ()
    train, valid = Subset(folder(tfms, stats), train_idx), Subset(folder(norm=stats), valid_idx)
    dls = DataLoaders(DataLoader(train, bs, shuffle=True, num_workers=num_workers,
                                 generator=torch.Generator().manual_seed(seed)),
                      DataLoader(valid, bs, num_workers=num_workers, generator=torch.Generator().manual_seed(seed)))
    dls.classes = train.dataset.classes
    return dls
