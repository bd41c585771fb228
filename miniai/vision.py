"""The second article's vision pieces: a vanilla CNN for 28×28 images, whole-batch random crop + flip
augmentation on the batch's device, and per-channel mean/std for normalisation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .guards import is_whole

__all__ = ['conv_block', 'vanilla_cnn', 'BatchAugment', 'batch_augment', 'channel_stats']


def conv_block(ni: int, nf: int, double: bool = False) -> nn.Sequential:
    """Conv-BN-ReLU (twice if `double`), then a 2×2 max-pool halving the size."""
    def cbr(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
    return nn.Sequential(*cbr(ni, nf), *(cbr(nf, nf) if double else []), nn.MaxPool2d(2))


def vanilla_cnn(n_classes: int = 10, nfs: Sequence[int] = (8, 16, 32), p_drop: float = 0.25,
                in_channels: int = 1, img_size: int = 28, n_hidden: int = 256,
                double: bool = False) -> nn.Sequential:
    """The article's plain CNN for `img_size`² images: `conv_block`s (BatchNorm, max-pool) through `nfs`, then
    a head Flatten-Dropout-Linear-ReLU-Dropout-Linear (dropout only in the linear layers)."""
    chans = (in_channels, *nfs)
    blocks = [conv_block(chans[i], chans[i + 1], double) for i in range(len(nfs))]
    n_flat = nfs[-1] * (img_size // 2 ** len(nfs)) ** 2
    head = [nn.Flatten(), nn.Dropout(p_drop), nn.Linear(n_flat, n_hidden), nn.ReLU(inplace=True),
            nn.Dropout(p_drop), nn.Linear(n_hidden, n_classes)]
    return nn.Sequential(*blocks, *head)


class BatchAugment:
    """Random crop with `pad` pixels of padding and random horizontal flip, drawn per item but done for the
    whole batch at once on its device: pad once, then one gather with per-item offsets (a flip is a reversed
    column index). Call it on `x` or on an `(x, y, ...)` batch (then only `x` changes), so it works as
    `BatchTransformCB(BatchAugment(), on_val=False)` or as `DeviceLoader`'s `tfm`. `padding_mode` is that of
    `torchvision.transforms.v2.functional.pad`; 'reflect' (fastai's default) keeps normalised backgrounds."""
    def __init__(self, pad: int = 4, flip: bool = True, padding_mode: str = 'reflect'):
        if not is_whole(pad):
            raise ValueError(f'BatchAugment: pad must be a whole number of pixels >= 0, got {pad!r}.')
        self.pad, self.flip, self.padding_mode = pad, flip, padding_mode

    def augment(self, x: Tensor) -> Tensor:
        """Augment a batch of images `[N, C, H, W]`."""
        from torchvision.transforms.v2.functional import pad
        if x.ndim != 4:
            raise ValueError(f'BatchAugment: expected a batch of images [N, C, H, W], got shape {tuple(x.shape)}; '
                             'add the missing dims, e.g. x[None] for one image or x[:, None] for [N, H, W].')
        n, _, h, w = x.shape
        p, dev = self.pad, x.device
        rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
        if p:
            x = pad(x, [p], padding_mode=self.padding_mode)
        i = torch.randint(0, 2 * p + 1, (n, 1), device=dev) + rows  # [N, H]
        j = torch.randint(0, 2 * p + 1, (n, 1), device=dev)
        if self.flip:
            cols = torch.where(torch.rand(n, 1, device=dev) < 0.5, cols.flip(0), cols)  # [N, W]
        j = j + cols
        items, chans = torch.arange(n, device=dev), torch.arange(x.shape[1], device=dev)
        return x[items[:, None, None, None], chans[:, None, None], i[:, None, :, None], j[:, None, None, :]]

    def __call__(self, b: Any) -> Any:
        if isinstance(b, Tensor):
            return self.augment(b)
        if not isinstance(b, (tuple, list)):
            raise TypeError(f'BatchAugment: expected images or an (x, y, ...) batch, got a {type(b).__name__}; '
                            'for dict batches use tuple batches (e.g. DataLoaders.from_dd(..., as_tuple=True)) '
                            "or augment the images yourself: b['image'] = aug(b['image']).")
        return type(b)((self.augment(b[0]), *b[1:]))

    def __repr__(self) -> str:
        return f'{type(self).__name__}(pad={self.pad}, flip={self.flip}, padding_mode={self.padding_mode!r})'


def batch_augment(pad: int = 4, flip: bool = True, padding_mode: str = 'reflect') -> BatchAugment:
    """The article's augmentation (random crop with padding, horizontal flip) as a whole-batch transform."""
    return BatchAugment(pad, flip, padding_mode)


def channel_stats(data: Tensor | Iterable, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Per-channel mean and (population) std of images `[N, C, H, W]` given as a tensor or a loader of
    `(x, ...)` batches, one chunk or batch at a time: sums of the differences from the first image's channel
    means (so that bright, low-contrast images lose no precision), per image in float32, across images in
    float64. Channels-last images `[N, H, W, C]` need `x.permute(0, 3, 1, 2)` first."""
    if isinstance(data, Tensor):
        batches = data.split(chunk)
    else:
        batches = (b if isinstance(b, Tensor) else b[0] for b in data)
    n, s, s2, shift = 0, 0., 0., None
    for x in batches:
        if x.ndim != 4:
            raise ValueError(f'channel_stats: expected images [N, C, H, W], got shape {tuple(x.shape)}; '
                             'for [N, H, W] pass x[:, None].')
        if not len(x):
            continue
        if shift is None:
            shift = x[0].float().mean((1, 2))[:, None, None]
        d = x.float() - shift.to(x.device)
        n += x.numel() // x.shape[1]
        s = s + d.sum((2, 3)).cpu().double().sum(0)  # float64 on the CPU (MPS has none)
        s2 = s2 + d.square().sum((2, 3)).cpu().double().sum(0)
    if not n:
        raise ValueError('channel_stats: no images (an empty tensor or loader).')
    mean = s / n
    return (shift.flatten().cpu().double() + mean).float(), (s2 / n - mean * mean).clamp_min(0).sqrt().float()
