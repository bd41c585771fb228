"""The seed's building blocks: `conv` layers, `GeneralRelu`, Kaiming init, the CNN of the course, seeding."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['conv', 'GeneralRelu', 'init_weights', 'get_model', 'set_seed']


def _is_batchnorm(norm) -> bool:
    """A BatchNorm class, or a `partial` of one (e.g. `partial(nn.BatchNorm2d, momentum=0.2)`)."""
    while isinstance(norm, partial): norm = norm.func
    return isinstance(norm, type) and issubclass(norm, nn.modules.batchnorm._BatchNorm)


def conv(ni: int, nf: int, ks: int = 3, stride: int = 2, act: Callable[[], nn.Module] | None = nn.ReLU,
         norm: Callable[[int], nn.Module] | None = None, bias: bool | None = None) -> nn.Sequential:
    """Conv2d (same padding) → optional `norm(nf)` → optional `act()`; no conv bias before a BatchNorm (a class
    or a `partial` of one)."""
    for nm, f, eg in (('act', act, 'nn.ReLU'), ('norm', norm, 'nn.BatchNorm2d')):
        if isinstance(f, nn.Module):
            raise TypeError(f'conv: {nm} makes a new layer for each conv, so it is a class or factory (e.g. {eg}), '
                            f'not a layer; got the module {f!r}: pass its class.')
        if f not in (None, False) and not callable(f):
            raise TypeError(f'conv: {nm} is a class or factory making a layer (e.g. {eg}), or None (or False) for no '
                            f'{nm} layer; got {f!r}.')
    if bias is None: bias = not _is_batchnorm(norm)
    layers = [nn.Conv2d(ni, nf, kernel_size=ks, stride=stride, padding=ks // 2, bias=bias)]
    if norm: layers.append(norm(nf))
    if act: layers.append(act())
    return nn.Sequential(*layers)


class GeneralRelu(nn.Module):
    """ReLU (leaky if `leak`), shifted down by `sub` and capped at `maxv`: the course's activation."""
    def __init__(self, leak: float | None = None, sub: float | None = None, maxv: float | None = None):
        super().__init__()
        self.leak, self.sub, self.maxv = leak, sub, maxv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(x, self.leak) if self.leak is not None else F.relu(x)
        if self.sub is not None: x = x - self.sub
        if self.maxv is not None: x = x.clamp_max(self.maxv)
        return x

    def extra_repr(self) -> str: return f'leak={self.leak}, sub={self.sub}, maxv={self.maxv}'


def init_weights(m: nn.Module, leaky: float = 0.) -> None:
    """Kaiming-normal init for conv and linear weights (use with `model.apply(partial(init_weights, leaky=...))`)."""
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)): nn.init.kaiming_normal_(m.weight, a=leaky)


def get_model(act: Callable[[], nn.Module] = nn.ReLU, nfs: Sequence[int] | None = None,
              norm: Callable[[int], nn.Module] | None = None) -> nn.Sequential:
    """The course's CNN for 28×28 images: stride-2 `conv`s through `nfs`, then a conv to 10 logits. It takes
    five stride-2 convs (28 → 14 → 7 → 4 → 2 → 1) to end with 1×1 maps, so for 28×28 `nfs` needs at least 5
    sizes: with fewer the model outputs 10 values per position of a larger map (fine for smaller images:
    `len(nfs)` stride-2 convs take a side of up to `2**len(nfs)` to 1). `nfs=None`: (1, 8, 16, 32, 64)."""
    nfs = (1, 8, 16, 32, 64) if nfs is None else nfs
    layers = [conv(nfs[i], nfs[i + 1], act=act, norm=norm) for i in range(len(nfs) - 1)]
    return nn.Sequential(*layers, conv(nfs[-1], 10, act=None, norm=None, bias=True), nn.Flatten())


def set_seed(seed: int, deterministic: bool | None = None) -> None:
    """Seed Python, NumPy and torch (all devices); `deterministic=True` also asks torch for deterministic kernels,
    `False` lets it use nondeterministic ones, and None (the default) leaves torch's setting as it is
    (`torch.use_deterministic_algorithms`).

    On CPU a deterministic fit repeats bit for bit. On CUDA it also sets `CUBLAS_WORKSPACE_CONFIG` and turns
    off cuDNN autotuning; a few CUDA ops have no deterministic version and then raise an error naming the op.
    Limits on CUDA: `CUBLAS_WORKSPACE_CONFIG` only counts if set before cuBLAS first runs (call `set_seed`
    before anything runs on the GPU); runs repeat only on the same GPU model, driver, CUDA and torch versions;
    and deterministic kernels can be slower.
    """
    if deterministic is not None: torch.use_deterministic_algorithms(deterministic)
    if deterministic: os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    torch.backends.cudnn.benchmark = False if deterministic else torch.backends.cudnn.benchmark
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
