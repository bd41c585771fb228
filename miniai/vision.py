"""The second article's vision pieces: a vanilla CNN for 28×28 images, whole-batch random crop + flip
augmentation on the batch's device, and per-channel mean/std for normalisation; plus the fast.ai course's
random erasing and random copy (part 2, notebook 14_augment), drawn per item but done for the whole batch,
and `BatchCompose` to chain such batch transforms."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from numbers import Real
from typing import Any

import torch
from torch import Tensor, nn

from .guards import is_whole

__all__ = ['conv_block', 'vanilla_cnn', 'BatchAugment', 'batch_augment', 'RandErase', 'RandCopy', 'BatchCompose',
           'channel_stats']


def conv_block(ni: int, nf: int, double: bool = False) -> nn.Sequential:
    """Conv-BN-ReLU (twice if `double`), then a 2×2 max-pool halving the size."""
    def cbr(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
    return nn.Sequential(*cbr(ni, nf), *(cbr(nf, nf) if double else []), nn.MaxPool2d(2))


def vanilla_cnn(n_classes: int = 10, nfs: Sequence[int] = (8, 16, 32), p_drop: float = 0.25,
                in_channels: int = 1, img_size: int = 28, n_hidden: int = 256,
                double: bool = False) -> nn.Sequential:
    """The article's plain CNN for `img_size`² images: `conv_block`s (BatchNorm, max-pool) through `nfs`, then
    a head Flatten-Dropout-Linear-ReLU-Dropout-Linear (dropout only in the linear layers). Each block halves the
    size, so `img_size` is at least `2**len(nfs)`."""
    for nm, v, eg in (('n_classes', n_classes, 10), ('n_hidden', n_hidden, 256), ('in_channels', in_channels, 1)):
        if not is_whole(v, 1):
            raise ValueError(f'vanilla_cnn: {nm} must be a whole number >= 1 (e.g. {eg}); got {v!r}.')
    if not (len(nfs) and all(is_whole(f, 1) for f in nfs)):
        raise ValueError(f"vanilla_cnn: nfs is each conv block's number of filters, at least one block of whole "
                         f'numbers >= 1 (e.g. (8, 16, 32)); got {nfs!r}.')
    if img_size < 2 ** len(nfs):
        raise ValueError(f'vanilla_cnn: {len(nfs)} conv blocks halve the image {len(nfs)} times, so img_size must '
                         f'be at least 2**{len(nfs)} = {2 ** len(nfs)}; got {img_size!r}: give fewer nfs or larger '
                         'images.')
    chans = (in_channels, *nfs)
    blocks = [conv_block(chans[i], chans[i + 1], double) for i in range(len(nfs))]
    n_flat = nfs[-1] * (img_size // 2 ** len(nfs)) ** 2
    head = [nn.Flatten(), nn.Dropout(p_drop), nn.Linear(n_flat, n_hidden), nn.ReLU(inplace=True),
            nn.Dropout(p_drop), nn.Linear(n_hidden, n_classes)]
    return nn.Sequential(*blocks, *head)


class _ImageBatchTfm:
    """Base of the whole-batch image transforms: a subclass defines `augment(x)` for images `[N, C, H, W]`;
    calling it on `x` or on an `(x, y, ...)` batch (then only `x` changes) is shared here."""
    def augment(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _check_images(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f'{type(self).__name__}: expected a batch of images [N, C, H, W], got shape '
                             f'{tuple(x.shape)}; add the missing dims, e.g. x[None] for one image or x[:, None] '
                             'for [N, H, W].')

    def __call__(self, b: Any) -> Any:
        if isinstance(b, Tensor):
            return self.augment(b)
        if not isinstance(b, (tuple, list)):
            raise TypeError(f'{type(self).__name__}: expected images or an (x, y, ...) batch, got a '
                            f'{type(b).__name__}; for dict batches use tuple batches (e.g. DataLoaders.from_dd(..., '
                            "as_tuple=True)) or augment the images yourself: b['image'] = aug(b['image']).")
        return type(b)((self.augment(b[0]), *b[1:]))


_PADDING_MODES = ('constant', 'edge', 'reflect', 'symmetric')  # torchvision's `pad`


class BatchAugment(_ImageBatchTfm):
    """Random crop with `pad` pixels of padding and random horizontal flip, drawn per item but done for the
    whole batch at once on its device: pad once, then one gather with per-item offsets (a flip is a reversed
    column index). Call it on `x` or on an `(x, y, ...)` batch (then only `x` changes), so it works as
    `BatchTransformCB(BatchAugment(), on_val=False)` or as `DeviceLoader`'s `tfm`. `padding_mode` is that of
    `torchvision.transforms.v2.functional.pad`; 'reflect' (fastai's default) keeps normalised backgrounds."""
    def __init__(self, pad: int = 4, flip: bool = True, padding_mode: str = 'reflect'):
        if not is_whole(pad):
            raise ValueError(f'BatchAugment: pad must be a whole number of pixels >= 0, got {pad!r}.')
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f'BatchAugment: padding_mode must be one of {", ".join(map(repr, _PADDING_MODES))} '
                             f"(torchvision's pad; 'constant' pads with zeros), got {padding_mode!r}.")
        self.pad, self.flip, self.padding_mode = pad, flip, padding_mode

    def augment(self, x: Tensor) -> Tensor:
        """Augment a batch of images `[N, C, H, W]`."""
        from torchvision.transforms.v2.functional import pad
        self._check_images(x)
        n, _, h, w = x.shape
        p, dev = self.pad, x.device
        rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
        if p:
            most = min(h, w) - (self.padding_mode == 'reflect') if self.padding_mode in ('reflect', 'symmetric') else p
            if p > most:
                raise ValueError(f'BatchAugment: padding_mode={self.padding_mode!r} pads {h}x{w} images by at most '
                                 f"{most} pixels, got pad={p}; give a smaller pad, or padding_mode='edge' or "
                                 "'constant'.")
            x = pad(x, [p], padding_mode=self.padding_mode)
        i = torch.randint(0, 2 * p + 1, (n, 1), device=dev) + rows  # [N, H]
        j = torch.randint(0, 2 * p + 1, (n, 1), device=dev)
        if self.flip:
            cols = torch.where(torch.rand(n, 1, device=dev) < 0.5, cols.flip(0), cols)  # [N, W]
        j = j + cols
        items, chans = torch.arange(n, device=dev), torch.arange(x.shape[1], device=dev)
        return x[items[:, None, None, None], chans[:, None, None], i[:, None, :, None], j[:, None, None, :]]

    def __repr__(self) -> str:
        return f'{type(self).__name__}(pad={self.pad}, flip={self.flip}, padding_mode={self.padding_mode!r})'


class _RandRects(_ImageBatchTfm):
    """Shared by `RandErase` and `RandCopy`: argument checks and the per-item random rectangles."""
    def __init__(self, pct: float = 0.2, max_num: int = 4):
        name = type(self).__name__
        if isinstance(pct, bool) or not isinstance(pct, Real) or not 0 < pct <= 1:
            raise ValueError(f'{name}: pct must be a fraction of the image height and width in (0, 1], got '
                             f'{pct!r}; e.g. pct=0.2 for rectangles a fifth of the image\'s height and width.')
        if not is_whole(max_num):
            raise ValueError(f'{name}: max_num must be a whole number of rectangles >= 0, got {max_num!r}; '
                             'e.g. max_num=4 (max_num=0 changes nothing).')
        self.pct, self.max_num = pct, max_num

    def _size(self, h: int, w: int) -> tuple[int, int]:
        return int(self.pct * h), int(self.pct * w)  # as the course: a side under 1/pct pixels gives none

    def _corners(self, n: int, h: int, w: int, dev: torch.device) -> tuple[Tensor, Tensor]:
        """Top-left corners `[N, max_num]` (rows, columns) of rectangles drawn uniformly inside the image."""
        sh, sw = self._size(h, w)
        k = self.max_num
        return torch.randint(0, h - sh + 1, (n, k), device=dev), torch.randint(0, w - sw + 1, (n, k), device=dev)

    def _which(self, r0: Tensor, c0: Tensor, h: int, w: int) -> Tensor:
        """Which rectangle covers each pixel, `[N, H, W]`: 0 for none, else 1 + the last rectangle `k` covering it.
        Each item's number of rectangles is drawn uniformly in 0..max_num (rectangle `k` counts if `k` < it)."""
        n, k = r0.shape
        sh, sw = self._size(h, w)
        dev = r0.device
        num = torch.randint(0, k + 1, (n, 1), device=dev)
        small = torch.uint8 if k < 256 else torch.int16 if k < 32768 else torch.int32  # the mask is [N, K, H, W]
        ks = torch.arange(1, k + 1, device=dev, dtype=small)
        rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
        in_r = torch.where(ks <= num, ks, 0)[..., None] * ((rows >= r0[..., None]) & (rows < (r0 + sh)[..., None]))
        in_c = (cols >= c0[..., None]) & (cols < (c0 + sw)[..., None])  # [N, K, W]
        return (in_r[..., :, None] * in_c[..., None, :]).amax(1)  # [N, K, H, W] -> [N, H, W]

    def __repr__(self) -> str:
        return f'{type(self).__name__}(pct={self.pct}, max_num={self.max_num})'


class RandErase(_RandRects):
    """Random erasing (the fast.ai course's `rand_erase`), drawn per item, done for the whole batch at once on its
    device: each image gets 0..`max_num` rectangles (the number drawn uniformly per image) of `pct` of its height
    and width, at uniform positions inside it, filled with Gaussian noise of that image's own per-channel mean and
    (population) std, clamped to that image's per-channel min and max (the course uses the whole batch's mean, std,
    min and max). So the noise has its image's mean and spread (up to the clamping) whatever else is in the batch,
    and the per-channel batch statistics that BatchNorm sees stay those of the normalised data. A constant image
    is left as it is. Needs floating-point (normalised) images; returns a new tensor. Call it on `x` or an
    `(x, y, ...)` batch, as `BatchAugment`."""
    def augment(self, x: Tensor) -> Tensor:
        """Erase rectangles of a batch of images `[N, C, H, W]`."""
        self._check_images(x)
        if not x.is_floating_point():
            raise TypeError(f'RandErase: expected floating-point (normalised) images, got {x.dtype}; convert them '
                            'first, e.g. (x.float() / 255 - mean) / std.')
        if not self.max_num:
            return x.clone()
        n, _, h, w = x.shape
        r0, c0 = self._corners(n, h, w, x.device)
        erase = (self._which(r0, c0, h, w) > 0)[:, None]  # [N, 1, H, W]
        xf = x.float() if x.element_size() < 4 else x  # statistics of half-precision images in float32
        mean = xf.mean((2, 3), keepdim=True)  # [N, C, 1, 1]; two passes (std_mean is slow on CPUs)
        std = (xf - mean).square_().mean((2, 3), keepdim=True).sqrt_()
        lo, hi = xf.amin((2, 3), keepdim=True), xf.amax((2, 3), keepdim=True)
        noise = torch.randn(x.shape, dtype=xf.dtype, device=x.device).mul_(std).add_(mean).clamp_(lo, hi)
        return torch.where(erase, noise.to(x.dtype), x)


class RandCopy(_RandRects):
    """Random copy (the fast.ai course's `rand_copy`), drawn per item, done for the whole batch at once on its
    device: each image gets 0..`max_num` rectangles (the number drawn uniformly per image) of `pct` of its height
    and width, each a copy of a same-sized patch of the same image from another uniform random position. Patches
    are read from the input image (where two rectangles overlap, the later one wins), all in one gather. Works on
    any dtype; returns a new tensor. Call it on `x` or an `(x, y, ...)` batch, as `BatchAugment`."""
    def augment(self, x: Tensor) -> Tensor:
        """Copy patches within each image of a batch `[N, C, H, W]`."""
        self._check_images(x)
        if not self.max_num:
            return x.clone()
        n, c, h, w = x.shape
        dev = x.device
        r0, c0 = self._corners(n, h, w, dev)  # destinations
        r1, c1 = self._corners(n, h, w, dev)  # sources
        which = self._which(r0, c0, h, w).long().flatten(1)  # [N, H*W]
        zero = torch.zeros(n, 1, dtype=r0.dtype, device=dev)  # the offset of pixels no rectangle covers
        dr = torch.cat((zero, r1 - r0), 1).gather(1, which).view(n, h, w)  # each pixel's source offset
        dc = torch.cat((zero, c1 - c0), 1).gather(1, which).view(n, h, w)
        rows = torch.arange(h, device=dev)[:, None] + dr  # [N, H, W]
        cols = torch.arange(w, device=dev) + dc
        items, chans = torch.arange(n, device=dev), torch.arange(c, device=dev)
        return x[items[:, None, None, None], chans[:, None, None], rows[:, None], cols[:, None]]


class BatchCompose:
    """Apply batch transforms in order, each to what the last returned: e.g.
    `BatchTransformCB(BatchCompose(BatchAugment(), RandErase()), on_val=False)` or as a `DeviceLoader`'s `tfm`.
    With no transforms it returns its input."""
    def __init__(self, *tfms: Callable[[Any], Any]):
        for t in tfms:
            if not callable(t):
                raise TypeError(f'BatchCompose: every transform must be callable, got a {type(t).__name__} '
                                f'({t!r}); pass the transforms themselves, e.g. BatchCompose(BatchAugment(), '
                                'RandErase()).')
        self.tfms = tfms

    def __call__(self, b: Any) -> Any:
        for t in self.tfms:
            b = t(b)
        return b

    def __repr__(self) -> str:
        return f'{type(self).__name__}({", ".join(map(repr, self.tfms))})'


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
