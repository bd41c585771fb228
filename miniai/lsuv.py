"""LSUV init ("All you need is a good init", Mishkin & Matas, 2015), as in the fast.ai course: scale each layer's
weights and shift its bias until its output has mean 0 and std 1 on a batch."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from numbers import Real

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from .guards import is_whole
from .hooks import Hook
from .learner import get_rng_state, set_rng_state

__all__ = ['lsuv_init']

_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def _stats(hook: Hook, m: nn.Module, inp: tuple, outp: object) -> None:
    """Hook function: the mean and std of the output (its first item if a tuple), of the module's last call."""
    while isinstance(outp, (tuple, list)) and outp: outp = outp[0]
    acts = outp.detach().float()
    hook.stats = (acts.mean().item(), acts.std().item())


def _pairs(model: nn.Module, modules: Iterable[nn.Module | tuple[nn.Module, nn.Module]] | None,
           names: dict[nn.Module, str]) -> list[tuple[nn.Module, nn.Module]]:
    """(measured, adjusted) pairs: a lone module is both; each checked to be in `model`, and the adjusted one to have
    a weight."""
    if modules is None:
        pairs = [(m, m) for m in model.modules() if isinstance(m, _LAYERS)]
        if not pairs:
            raise ValueError('lsuv_init: the model has no Conv or Linear layer to initialise; pass the layers as '
                             'modules=[...].')
        return pairs
    pairs = [tuple(o) if isinstance(o, (tuple, list)) else (o, o) for o in modules]
    if not pairs:
        raise ValueError('lsuv_init: modules is empty, so nothing would be initialised; pass the layers, or leave it '
                         'out for every Conv and Linear layer.')
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(m, nn.Module) for m in pair):
            raise TypeError(f'lsuv_init: modules holds layers, or (measured, adjusted) pairs of layers; got {pair!r}.')
        for m in pair:
            if m not in names:
                raise ValueError(f'lsuv_init: a {type(m).__name__} in modules is not a module of the model; pass '
                                 "its own layers (e.g. model[0] or model.get_submodule('0.0')).")
        if not isinstance(getattr(pair[1], 'weight', None), Tensor):
            raise TypeError(f'lsuv_init: {_name(names, pair[1])} has no weight to scale; the module adjusted is the '
                            'layer making the output (a Conv or Linear): pass (measured, layer) to measure another '
                            'one.')
    return pairs


def _name(names: dict[nn.Module, str], m: nn.Module) -> str:
    return f"'{names[m]}' ({type(m).__name__})" if names[m] else f'the model ({type(m).__name__})'


def _unscalable(mean: float, std: float, weight: Tensor) -> str | None:
    """Why an output of `mean` and `std` cannot be scaled to std 1 by dividing `weight`; None if it can."""
    if std == 0: return 'has std 0 (a dead layer: e.g. a ReLU whose inputs are all negative)'
    if not (math.isfinite(mean) and math.isfinite(std)): return f'is not finite (mean {mean}, std {std})'
    if not bool((weight / std).isfinite().all()): return f'has std {std:.3g}, and dividing the weights by it overflows'
    return None


def lsuv_init(model: nn.Module, xb: Tensor | Sequence[Tensor],
              modules: Iterable[nn.Module | tuple[nn.Module, nn.Module]] | None = None, tol: float = 1e-3,
              max_iters: int = 50) -> nn.Module:
    """LSUV: for each layer in turn, run `model(xb)` (`xb` a tensor, or a tuple of inputs) and set `bias -= mean`,
    `weight /= std` of the layer's output until `|mean| < tol` and `|std - 1| < tol` (at most `max_iters` times);
    returns the model.

    `modules`: the layers, in the order to initialise them (earlier layers first), each measured at its own
    output; a `(measured, adjusted)` pair measures another module's output, e.g. the activation after the layer
    `(act, conv)`, as the course does (with an activation that can reach mean 0, such as `GeneralRelu(sub=...)`:
    a plain ReLU's output cannot). Default: every Conv and Linear layer, each measured at its own output, which
    converges in a few iterations unless the layer is dead. A layer without bias (e.g. a conv before a BatchNorm)
    only has its std set.

    Runs without gradients in training mode, as the course does (BatchNorm normalises with the batch's statistics,
    as in training; in eval mode its fresh running stats would be an identity and the layers after it would be
    scaled for other inputs), then puts back the modules' modes, the BatchNorm running stats (every buffer), the
    RNGs (each forward starts from the same RNG state, so that dropout masks stay the same), and removes its
    hooks, also on error. Warns, naming the layer, when it does not converge, and when its measured output has
    std 0 (a dead layer) or is not finite, or dividing by its std overflows: that layer then keeps the weights and
    bias it had before."""
    if not isinstance(model, nn.Module):
        raise TypeError(f'lsuv_init: model is a {type(model).__name__}, not an nn.Module.')
    if not (isinstance(tol, Real) and tol > 0):
        raise ValueError(f'lsuv_init: tol is the allowed |mean| and |std - 1|, a number > 0; got {tol!r}.')
    if not is_whole(max_iters, 1):
        raise ValueError(f'lsuv_init: max_iters is a whole number >= 1; got {max_iters!r}.')
    if any(is_lazy(t) for t in (*model.parameters(), *model.buffers())):
        raise ValueError('lsuv_init: the model has lazy layers not yet initialised; run a batch through it first '
                         '(model(xb)), then initialise it.')
    names = {m: n for n, m in model.named_modules()}
    pairs = _pairs(model, modules, names)
    xs = tuple(xb) if isinstance(xb, (tuple, list)) else (xb,)
    modes = [(m, m.training) for m in model.modules()]
    bufs = [(b, b.clone()) for b in model.buffers()]
    rng = get_rng_state()
    try:
        model.train()
        with torch.no_grad():
            for measured, adjusted in pairs:
                _lsuv_one(model, xs, measured, adjusted, tol, max_iters, names, rng)
    finally:
        for m, training in modes: m.training = training
        with torch.no_grad():
            for b, saved in bufs: b.copy_(saved)
        set_rng_state(rng)
    return model


def _lsuv_one(model: nn.Module, xs: tuple, measured: nn.Module, adjusted: nn.Module, tol: float, max_iters: int,
              names: dict[nn.Module, str], rng: dict) -> None:
    bias = getattr(adjusted, 'bias', None)
    bias = bias if isinstance(bias, Tensor) else None
    who = _name(names, adjusted)
    if measured is not adjusted: who += f' (measured at {_name(names, measured)})'
    initial = [(t, t.clone()) for t in (adjusted.weight, bias) if t is not None]
    with Hook(measured, _stats) as hook:
        for i in range(max_iters + 1):
            hook.stats = None
            set_rng_state(rng)
            model(*xs)
            if hook.stats is None:
                raise ValueError(f'lsuv_init: {_name(names, measured)} did not run in model(xb), so its output cannot '
                                 'be measured; pass modules that the forward uses.')
            mean, std = hook.stats
            why = _unscalable(mean, std, adjusted.weight)
            if why:
                for t, t0 in initial: t.copy_(t0)
                hint = ('; an output that cannot reach mean 0, such as a plain ReLU\'s, drives the layer there: '
                        'measure the layer itself, or use GeneralRelu(sub=...)') if measured is not adjusted else ''
                warnings.warn(f'lsuv_init: the output of {who} {why} after {i} iterations, so it cannot be scaled to '
                              f'std 1; that layer keeps the weights it had (check the data and the layers before '
                              f'it{hint}).', stacklevel=3)
                return
            if abs(std - 1) < tol and (bias is None or abs(mean) < tol):
                return
            if i == max_iters:
                warnings.warn(f'lsuv_init: {who} did not converge in {max_iters} iterations (output mean {mean:.4g}, '
                              f'std {std:.4g}; tol {tol}); raise max_iters or tol.', stacklevel=3)
                return
            if bias is not None: bias -= mean
            adjusted.weight /= std
