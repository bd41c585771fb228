"""`summary`: the course's `learn.summary()`, a table of each layer's input and output shapes, parameters and MFLOPS,
from one batch run through the model, leaving no trace."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from .device import to_device
from .guards import is_whole
from .hooks import Hook, Hooks
from .learner import Learner
from .no_trace import no_trace

__all__ = ['SummaryRow', 'Summary', 'summary']


@dataclass(frozen=True)
class SummaryRow:
    """One call of a listed module: its path in the model (`'0.1'`; `''` for the model itself), class name, first
    input's and output's shapes (None: not a tensor), parameters (its submodules' too) and estimated MFLOPS."""
    name: str
    module: str
    inp: tuple[int, ...] | None
    out: tuple[int, ...] | None
    params: int
    mflops: float


def _shape(x: object) -> tuple[int, ...] | None:
    while isinstance(x, (tuple, list)) and x: x = x[0]  # e.g. an LSTM's (output, state): the output
    return tuple(x.shape) if isinstance(x, Tensor) else None


def _n_params(m: nn.Module) -> int:
    """The parameters of `m` and its submodules, each counted once; lazy ones not yet initialised count 0."""
    return sum(p.numel() for p in m.parameters() if not is_lazy(p))


def _own_mflops(m: nn.Module, out: tuple[int, ...] | None) -> float:
    """The course's estimate for `m`'s own parameters (not its submodules'), per example: a conv kernel (a
    parameter of k+2 dims) costs its size times the output's k spatial sizes (h*w for Conv2d); any other parameter
    costs its size."""
    n = 0
    for p in m.parameters(recurse=False):
        if is_lazy(p): continue
        k = p.dim() - 2
        spatial = math.prod(out[-k:]) if k > 0 and out is not None and len(out) == k + 2 else 1
        n += p.numel() * spatial
    return n / 1e6


def _listed(model: nn.Module, depth: int, prefix: str = '') -> list[tuple[str, nn.Module]]:
    """The modules `depth` levels down, and the leaves above that depth; a model without children lists itself."""
    children = list(model.named_children())
    if depth == 0 or not children: return [(prefix, model)]
    return [r for n, c in children for r in _listed(c, depth - 1, f'{prefix}.{n}' if prefix else n)]


def _fmt(shape: tuple[int, ...] | None) -> str: return '-' if shape is None else str(shape)


@dataclass(frozen=True)
class Summary:
    """What `summary` returns: its `rows`, the model's total `params` (each counted once) and the rows' total `mflops`.
    Printed, or the last value of a notebook cell, it is a markdown table with a totals line."""
    rows: list[SummaryRow]
    params: int

    @property
    def mflops(self) -> float: return sum(r.mflops for r in self.rows)

    def __str__(self) -> str:
        lines = ['| Module | Input | Output | Num params | MFLOPS |', '|--|--|--|--|--|']
        lines += [f'| {f"{r.name}: " if r.name else ""}{r.module} | {_fmt(r.inp)} | {_fmt(r.out)} | {r.params} | '
                  f'{r.mflops:.2f} |' for r in self.rows]
        return '\n'.join(lines) + f'\n\nTotal params: {self.params}; MFLOPS: {self.mflops:.2f}'

    __repr__ = __str__
    def _repr_markdown_(self) -> str: return str(self)


def _forward(learn: Learner, model: nn.Module, xb: Tensor | Sequence[Tensor] | None) -> None:
    """One forward of `model`, leaving no trace: on `xb` as given (moved to the model's device), or on the first
    batch of `learn.dls.train` through the Learner's callbacks, as `get_preds` runs them."""
    if xb is None:
        with no_trace(learn, paused=lambda cb: False):  # puts the loader's position back
            learn._check_loaders(('train',))
            batch = next(iter(learn.dls.train))
        try:
            learn.get_preds([batch])
        except Exception as e:
            e.add_note(f'summary: the model failed on the first training batch (items of shapes '
                       f'{[_shape(x) for x in batch]}), run through the Learner\'s callbacks as get_preds does; '
                       'pass the model\'s inputs to run them as they are: learn.summary(xb).')
            raise
        return
    xs = tuple(xb) if isinstance(xb, (tuple, list)) else (xb,)
    device = next((t.device for t in (*model.parameters(), *model.buffers())), None)
    with no_trace(learn, paused=lambda cb: False), torch.no_grad():
        xs = xs if device is None else to_device(xs, device)
        model.eval()
        try:
            model(*xs)
        except Exception as e:
            e.add_note(f'summary: the model failed on inputs of shapes {[_shape(x) for x in xs]}; xb is the '
                       "model's inputs: a tensor, or a tuple of several inputs (for an (x, y) batch b, pass b[0]).")
            raise


def summary(learn_or_model: Learner | nn.Module, xb: Tensor | Sequence[Tensor] | None = None,
            depth: int = 1) -> Summary:
    """Runs one batch through the model, in eval mode and without gradients, and returns a `Summary` of each of
    its children (`depth=1`, as the course's `learn.summary()`; `depth=2`: their children; ...): input and output
    shapes, parameters and the MFLOPS per example, estimated as the course does (a conv kernel's size times the
    output's spatial size, h*w for a Conv2d, plus the other parameters' sizes), layer by layer: a row adds up the
    layers inside it, so the total does not depend on `depth`. A module called twice has two rows.

    `xb`: the model's inputs (a tensor, or a tuple of inputs), moved to the model's device. With a Learner and no
    `xb`, the first batch of `learn.dls.train` goes through the Learner's callbacks as in `get_preds` (`DeviceCB`,
    `BatchTransformCB`, `MixedPrecision`, ...; a callback's own extra forward, as `FlipTTACB`'s, adds no rows).
    Leaves no trace: weights, buffers, modes, lazy layers not yet initialised, the loader's position and the RNGs
    are put back, and its hooks are removed, also if the model raises (hooks put on the model by hand do run)."""
    if isinstance(learn_or_model, Learner):
        learn = learn_or_model
        learn.refuse_in_fit('summary')
    elif isinstance(learn_or_model, nn.Module):
        if xb is None:
            raise TypeError('summary(model): a bare model needs a batch to run; pass one, summary(model, xb), '
                            'or pass a Learner, whose first training batch is used.')
        learn = Learner(learn_or_model)  # only for `no_trace`
    else:
        raise TypeError(f'summary: expected a Learner or an nn.Module, got {type(learn_or_model).__name__}.')
    if not is_whole(depth, 1):
        raise ValueError(f'summary: depth is how many levels of children to list, a whole number >= 1; got {depth!r}.')
    model = learn._plain_model()
    model = model.module if isinstance(model, nn.DataParallel) else model
    names: dict[nn.Module, str] = {}
    for n, m in _listed(model, depth): names.setdefault(m, n)  # a module listed twice is hooked once
    row_of = {sub: m for m in names for sub in m.modules()}  # each layer -> the listed module it adds up into
    rows, pending, done = [], dict.fromkeys(names, 0.), {}

    def record(hook, m: nn.Module, inp: tuple, outp: object) -> None:
        if done: return  # a callback's extra forward (e.g. test-time augmentation)
        out = _shape(outp)
        if m in row_of: pending[row_of[m]] += _own_mflops(m, out)
        if m in names:
            rows.append(SummaryRow(names[m], type(m).__name__, _shape(inp), out, _n_params(m), pending[m]))
            pending[m] = 0.

    def finish(hook, m: nn.Module, inp: tuple, outp: object) -> None:
        done.setdefault('params', _n_params(model))  # while lazy layers are initialised

    with Hooks(list(row_of), record), Hook(model, finish):
        _forward(learn, model, xb)
    return Summary(rows, done['params'])
