"""`summary`: the course's `learn.summary()`, a table of each layer's input and output shapes, parameters and MFLOPS,
from one batch run through the model, leaving no trace."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from .accel import CompileCB
from .data import DataLoaders
from .device import model_device, to_device
from .distributed import DDPCB
from .guards import is_whole
from .learner import Callback, CancelBatchException, Learner
from .no_trace import no_trace
from .preds import _paused as _paused_in_get_preds

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
    parameter of k+2 dims) costs its size times the output's k spatial sizes (h*w for Conv2d, whose output may
    also be unbatched, [C, H, W]); any other parameter costs its size."""
    n = 0
    for p in m.parameters(recurse=False):
        if is_lazy(p): continue
        k = p.dim() - 2
        ndims = (k + 1, k + 2) if isinstance(m, nn.modules.conv._ConvNd) else (k + 2,)
        spatial = math.prod(out[-k:]) if k > 0 and out is not None and len(out) in ndims else 1
        n += p.numel() * spatial
    return n / 1e6


def _uncalled(m: nn.Module) -> bool:
    """Whether `m` has no `forward` of its own (`nn.ModuleList`, `nn.ModuleDict`): only its items are called."""
    return type(m).forward is nn.Module.forward


def _listed(model: nn.Module, depth: int, prefix: str = '') -> list[tuple[str, nn.Module]]:
    """The modules `depth` levels down, and the leaves above that depth; a model without children lists itself.
    A container that is never called stands for its items, at its own depth (`blocks.0`, `blocks.1`, ...)."""
    children = list(model.named_children())
    if depth == 0 or not children: return [(prefix, model)]
    return [r for n, c in children
            for r in _listed(c, depth if _uncalled(c) else depth - 1, f'{prefix}.{n}' if prefix else n)]


def _fmt(shape: tuple[int, ...] | None) -> str: return '-' if shape is None else str(shape)


@dataclass(frozen=True)
class Summary:
    """What `summary` returns: its `rows`, the model's total `params` (each counted once), and `other_mflops`, the
    cost of layers that ran outside every listed module (e.g. parameters of the model itself). `mflops` is the
    whole forward's. Printed, or the last value of a notebook cell, it is a markdown table with a totals line."""
    rows: list[SummaryRow]
    params: int
    other_mflops: float = 0.

    @property
    def mflops(self) -> float: return sum(r.mflops for r in self.rows) + self.other_mflops

    def __str__(self) -> str:
        lines = ['| Module | Input | Output | Num params | MFLOPS |', '|--|--|--|--|--|']
        lines += [f'| {f"{r.name}: " if r.name else ""}{r.module} | {_fmt(r.inp)} | {_fmt(r.out)} | {r.params} | '
                  f'{r.mflops:.2f} |' for r in self.rows]
        other = f' ({self.other_mflops:.2f} outside the rows)' if self.other_mflops else ''
        return '\n'.join(lines) + f'\n\nTotal params: {self.params}; MFLOPS: {self.mflops:.2f}{other}'

    __repr__ = __str__
    def _repr_markdown_(self) -> str: return str(self)


class _Recorder:
    """`summary`'s hooks on every module of `model`: a row per call of a listed module, and each layer's own cost
    charged to the innermost listed module running (or to `other`), until `finish`."""
    def __init__(self, model: nn.Module, depth: int):
        self.model, self.names = model, {}
        for n, m in _listed(model, depth): self.names.setdefault(m, n)  # a module listed twice has one name
        self.rows: list[SummaryRow] = []
        self.running: list[list] = []  # [module, cost so far] of the listed modules running, innermost last
        self.other, self.params, self.ran = 0., None, False
        self.handles = [h for m in model.modules()  # `always_call`: a call that raises (and is caught) ends too
                        for h in (m.register_forward_pre_hook(self.pre),
                                  m.register_forward_hook(self.post, always_call=True))]

    def pre(self, m: nn.Module, inp: tuple) -> None:
        self.ran = True
        if self.params is None and m in self.names: self.running.append([m, 0.])

    def post(self, m: nn.Module, inp: tuple, outp: object) -> None:
        if self.params is not None: return  # finished: e.g. a test-time augmentation's extra forward
        out = _shape(outp)
        cost = _own_mflops(m, out)
        if self.running and self.running[-1][0] is m:
            cost += self.running.pop()[1]
            self.rows.append(SummaryRow(self.names[m], type(m).__name__, _shape(inp), out, _n_params(m), cost))
        elif self.running: self.running[-1][1] += cost
        else: self.other += cost

    def finish(self) -> None:
        if self.params is None: self.params = _n_params(self.model)  # while lazy layers are initialised

    def remove(self) -> None:
        for h in self.handles: h.remove()


class _ForwardOnceCB(Callback):
    """Ends `summary`'s batch after the Learner's `predict`, before any other `after_predict`."""
    order = -1000

    def __init__(self, rec: _Recorder): self.rec = rec

    def after_predict(self, learn: Learner) -> None:
        if self.rec.ran: self.rec.finish()
        raise CancelBatchException()


def _paused(cb: Callback) -> bool:
    """What does not run in `summary`: what `get_preds` pauses, and callbacks that wrap or compile the model."""
    return _paused_in_get_preds(cb) or isinstance(cb, (DDPCB, CompileCB))


def _forward(learn: Learner, rec: _Recorder, xb: Tensor | Sequence[Tensor] | None) -> None:
    """One forward of the model, leaving no trace: on `xb` as given (moved to the model's device), or on the first
    batch of `learn.dls.train` through the Learner's `predict` and callbacks, as `get_preds` runs them."""
    if xb is None:
        with no_trace(learn, paused=_paused):
            try:
                learn._check_loaders(('train',))
            except TypeError as e:
                e.add_note('summary runs the first training batch; without a training loader, give it a batch of '
                           'inputs: learn.summary(xb).')
                raise
            batch = next(iter(learn.dls.train))
            learn.dls = DataLoaders(learn.dls.train, [batch])
            try:
                learn.fit(1, train=False, cbs=[_ForwardOnceCB(rec)])
            except Exception as e:
                e.add_note(f'summary: the first training batch (items of shapes {[_shape(x) for x in batch]}) '
                           "failed in the model or the Learner's callbacks; to run the model alone on its inputs: "
                           'learn.summary(xb).')
                raise
        if rec.params is None:
            raise RuntimeError("summary: the model did not run on the first batch: the Learner's predict did not "
                               'call it (a plain Learner needs TrainCB(); or use a TrainLearner), or a callback '
                               "cancelled the batch. Pass the model's inputs to run it alone: learn.summary(xb).")
        return
    xs = tuple(xb) if isinstance(xb, (tuple, list)) else (xb,)
    device = model_device(rec.model)
    with no_trace(learn, paused=lambda cb: False), torch.no_grad():
        xs = xs if device is None else to_device(xs, device)
        rec.model.eval()
        try:
            rec.model(*xs)
        except Exception as e:
            e.add_note(f'summary: the model failed on inputs of shapes {[_shape(x) for x in xs]}; xb is the '
                       "model's inputs: a tensor, or a tuple of several inputs (for an (x, y) batch b, pass b[0]).")
            raise
        rec.finish()


def summary(learn_or_model: Learner | nn.Module, xb: Tensor | Sequence[Tensor] | None = None,
            depth: int = 1) -> Summary:
    """Runs one batch through the model, in eval mode and without gradients, and returns a `Summary` of each of
    its children (`depth=1`, as the course's `learn.summary()`; `depth=2`: their children; ...): input and output
    shapes, parameters and the MFLOPS per example, estimated as the course does (a conv kernel's size times the
    output's spatial size, h*w for a Conv2d, plus the other parameters' sizes), layer by layer: a row adds up
    the layers that ran inside it, so the total does not depend on `depth`. A module called twice has two rows;
    a child that is never called itself (an `nn.ModuleList` or `nn.ModuleDict`) is listed as its items, at its
    depth (`blocks.0`, `blocks.1`, ...).

    `xb`: the model's inputs (a tensor, or a tuple of inputs), moved to the model's device. With a Learner and no
    `xb`, the first batch of `learn.dls.train` goes through the Learner's `predict` (every model call in it is
    recorded) with the callbacks that `get_preds` runs (`DeviceCB`, `BatchTransformCB`, `MixedPrecision`, ...;
    not `DDPCB` or `CompileCB`, nor anything after `predict`, such as `FlipTTACB`'s extra forward). Leaves no
    trace: weights, buffers, modes, lazy layers not yet initialised, the loader's position and the RNGs are put
    back, and its hooks are removed, also if the model raises (hooks put on the model by hand do run)."""
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
    if any(isinstance(m, torch.jit.ScriptModule) for m in model.modules()):
        raise TypeError('summary: the model holds TorchScript modules (torch.jit.script or trace), whose layers take '
                        'no hooks; summarise the model before scripting or tracing it.')
    rec = _Recorder(model.module if isinstance(model, nn.DataParallel) else model, depth)
    try:
        _forward(learn, rec, xb)
    finally:
        rec.remove()
    return Summary(rec.rows, rec.params, rec.other)
