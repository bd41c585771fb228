"""Course-style image plotting. `matplotlib.pyplot` is imported inside the functions, so `import miniai` stays
light and matplotlib picks its own backend (Agg when there is no display)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .guards import is_whole

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ['show_image', 'subplots', 'get_grid', 'show_images']


def _is_chw(shape: Sequence[int]) -> bool:
    """Whether a 3-d image tensor of `shape` is CHW rather than HWC: the reading whose channel count (1, 3 or 4)
    `imshow` can show; if both can, CHW when its first dim is at most its last."""
    c_first, c_last = shape[0] in (1, 3, 4), shape[-1] in (1, 3, 4)
    return c_first and (not c_last or shape[0] <= shape[-1])


def _to_numpy(im: Any) -> np.ndarray:
    """A tensor (HW, CHW or HWC: see `show_image`; any dtype, any device), array or PIL image (HW or HWC) as an
    HW or HWC array for `imshow`."""
    if hasattr(im, 'detach'):
        im = im.detach().cpu()
        if im.is_floating_point():
            im = im.float()  # half/bfloat16 have no numpy equivalent
        if im.ndim == 3 and _is_chw(im.shape):
            im = im.permute(1, 2, 0)
        im = im.numpy()
    else:
        im = np.asarray(im)
    return im[..., 0] if im.ndim == 3 and im.shape[-1] == 1 else im


def show_image(im: Any, ax: Axes | None = None, figsize: tuple[float, float] | None = None,
               title: str | None = None, noframe: bool = True, **kwargs) -> Axes:
    """Show a tensor (float or uint8, any device), array or PIL image on `ax` (a new figure's if None); `kwargs`
    go to `ax.imshow` (e.g. `cmap`). A 3-d tensor is read as CHW or HWC, whichever has 1, 3 or 4 channels (if
    both do, CHW when its first dim is at most its last: 3x8x8 is CHW, 4x6x3 HWC); arrays and PIL images are HW
    or HWC."""
    if ax is None:
        import matplotlib.pyplot as plt
        _, ax = plt.subplots(figsize=figsize)
    ax.imshow(_to_numpy(im), **kwargs)
    if title is not None:
        ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if noframe:
        ax.axis('off')
    return ax


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, imsize: float = 3,
             suptitle: str | None = None, **kwargs) -> tuple[Figure, np.ndarray]:
    """A figure and an array of its axes, each `imsize` inches square unless `figsize` is given; `kwargs` go to
    `plt.subplots`. As in the course, the array is squeezed: 1-d for one row or column (one axis: shape (1,)),
    `nrows` x `ncols` otherwise or with `squeeze=False`."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(nrows, ncols, figsize=figsize or (ncols * imsize, nrows * imsize), **kwargs)
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig, np.atleast_1d(ax)


def get_grid(n: int, nrows: int | None = None, ncols: int | None = None, title: str | None = None,
             weight: str = 'bold', size: int = 14, **kwargs) -> tuple[Figure, np.ndarray]:
    """A figure with a grid of at least `n` axes (about square unless `nrows`/`ncols` are given), the unused
    ones turned off, and the array of its axes as `subplots` gives it; `kwargs` go to `subplots`."""
    for k, v in (('nrows', nrows), ('ncols', ncols)):
        if v is not None and not is_whole(v, 1):
            raise ValueError(f'get_grid: {k} must be a whole number >= 1 (or None to fit n), got {v!r}.')
    if nrows is None and ncols is None:
        nrows = max(1, math.isqrt(n))
    if ncols is None:
        ncols = max(1, math.ceil(n / nrows))
    elif nrows is None:
        nrows = max(1, math.ceil(n / ncols))
    if nrows * ncols < n:
        raise ValueError(f'get_grid: a {nrows}x{ncols} grid cannot hold {n} images; give more rows or columns, or '
                         'leave one of them None to fit n.')
    fig, axs = subplots(nrows, ncols, **kwargs)
    for ax in axs.flat[n:]:
        ax.set_axis_off()
    if title is not None:
        fig.suptitle(title, weight=weight, size=size)
    return fig, axs


def show_images(ims: Sequence[Any], nrows: int | None = None, ncols: int | None = None,
                titles: Sequence[Any] | None = None, **kwargs) -> None:
    """Show `ims` (a list or a batch of images, see `show_image`) in a grid, with optional `titles`;
    `kwargs` go to `get_grid` (`plt.savefig` saves it)."""
    _, axs = get_grid(len(ims), nrows, ncols, **kwargs)
    for i, (im, ax) in enumerate(zip(ims, axs.flat, strict=False)):
        show_image(im, ax=ax, title=titles[i] if titles is not None and i < len(titles) else None)
