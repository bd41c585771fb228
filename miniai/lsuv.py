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

from .device import model_device, to_device
from .guards import is_whole
from .hooks import Hook, Hooks
from .learner import get_rng_state, set_rng_state

__all__ = ['lsuv_init']

_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
_EPS_TOL = 2  # tol is at least this many machine epsilons of the layer's weights and output: finer is not reachable
_MOVED = 0.01  # an adjustment must move the measured stats at least this fraction of their way to mean 0, std 1


def _stats(hook: Hook, m: nn.Module, inp: tuple, outp: object) -> None:
    """Hook function: the mean, std and dtype of the output (its first item if a tuple), of the module's last call."""
    while isinstance(outp, (tuple, list)) and outp: outp = outp[0]
    acts = outp.detach().float()
    hook.stats = (acts.mean().item(), acts.std().item(), outp.dtype)


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


def _state(m: nn.Module) -> dict[str, Tensor]:
    """A copy of the module's state: its parameters as stored, so also those behind a parametrization (e.g.
    `weight_norm`'s), whose `m.weight` is recomputed on each access and cannot be written back into."""
    return {k: v.clone() for k, v in m.state_dict().items()}


def _did_not_run(names: dict[nn.Module, str], m: nn.Module) -> ValueError:
    return ValueError(f'lsuv_init: {_name(names, m)} did not run in model(xb), so its output cannot be measured; pass '
                      'modules that the forward uses.')


def _unscalable(mean: float, std: float, weight: Tensor) -> str | None:
    """Why an output of `mean` and `std` cannot be scaled to std 1 by dividing `weight`; None if it can."""
    if std == 0: return 'has std 0 (a dead layer: e.g. a ReLU whose inputs are all negative)'
    if not (math.isfinite(mean) and math.isfinite(std)): return f'is not finite (mean {mean}, std {std})'
    if not bool((weight / std).isfinite().all()): return f'has std {std:.3g}, and dividing the weights by it overflows'
    return None


def _min_tol(*dtypes: torch.dtype) -> float:
    """The smallest tol reachable with tensors of `dtypes`: `_EPS_TOL` machine epsilons of the coarsest float one."""
    return _EPS_TOL * max((torch.finfo(d).eps for d in dtypes if d.is_floating_point), default=0.)


def _stalled(prev: tuple[float, float], now: tuple[float, float], has_bias: bool) -> bool:
    """Whether `bias -= mean` (if `has_bias`) and `weight /= std` left the measured (mean, std) where they were:
    moved them less than `_MOVED` of their distance to (0, 1), which they cover when the layer controls them."""
    (m0, s0), (m1, s1) = prev, now
    way = abs(s0 - 1) + (abs(m0) if has_bias else 0.)
    moved = abs(s1 - s0) + (abs(m1 - m0) if has_bias else 0.)
    return moved < _MOVED * way


def lsuv_init(model: nn.Module, xb: Tensor | Sequence[Tensor],
              modules: Iterable[nn.Module | tuple[nn.Module, nn.Module]] | None = None, tol: float = 1e-3,
              max_iters: int = 50) -> nn.Module:
    """LSUV: for each layer in turn, run `model(xb)` (`xb` the model's inputs: a tensor, or a tuple of several; moved
    to the model's device) and set `bias -= mean`, `weight /= std` of the layer's output until `|mean| < tol` and
    `|std - 1| < tol` (at most `max_iters` times); returns the model. `tol` is raised to 2 machine epsilons of the
    layer's weight and output dtypes where it is finer (bfloat16: 0.016, float16: 0.002): their rounding lets it
    get no closer.

    `modules`: the layers, each measured at its own output; they are initialised in the order their measured
    outputs first come in `model(xb)`, whatever order they are listed in (earlier layers first, so that each is
    scaled for the inputs it will get); a `(measured, adjusted)` pair measures another module's output, e.g. the
    activation after the layer `(act, conv)`, as the course does (with an activation that can reach mean 0, such
    as `GeneralRelu(sub=...)`: a plain ReLU's output cannot; and with no normalisation between them: a BatchNorm
    cancels the scaling). Default: every Conv and Linear layer, each measured at its own output, which converges
    in a few iterations unless the layer is dead. A layer without bias (e.g. a conv before a BatchNorm) only has
    its std set.

    Runs without gradients in training mode, as the course does (BatchNorm normalises with the batch's statistics,
    as in training; in eval mode its fresh running stats would be an identity and the layers after it would be
    scaled for other inputs), then puts back the modules' modes, the BatchNorm running stats (every buffer), the
    RNGs (each forward starts from the same RNG state, so that dropout masks stay the same), and removes its
    hooks, also on error. Checks first, in one forward, that every measured module runs, and in what order; on an
    error, every layer gets back the state (weights and bias) it had. Warns, naming the layer, which then keeps the
    weights and bias it had before, when its measured output has std 0 (a dead layer) or is not finite, or dividing
    by its std overflows; when an adjustment stops moving the output measured (the layer does not control it, e.g.
    a BatchNorm between them, or controls only part of it, e.g. a residual connection adds its input to it); and
    when it does not converge in `max_iters`. In these last two it keeps the last weights if they brought the output
    more than halfway from where it started to mean 0 and std 1."""
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
    if (device := model_device(model)) is not None: xs = to_device(xs, device)
    modes = [(m, m.training) for m in model.modules()]
    bufs = [(b, b.clone()) for b in model.buffers()]
    saved = {m: _state(m) for _, m in pairs}
    rng = get_rng_state()
    try:
        model.train()
        with torch.no_grad():
            order = _check_runs(model, xs, pairs, names, rng)
            for measured, adjusted in sorted(pairs, key=lambda p: order[p[0]]):
                _lsuv_one(model, xs, measured, adjusted, tol, max_iters, names, rng)
    except BaseException:
        for m, state in saved.items(): m.load_state_dict(state)
        raise
    finally:
        for m, training in modes: m.training = training
        with torch.no_grad():
            for b, saved_b in bufs: b.copy_(saved_b)
        set_rng_state(rng)
    return model


def _check_runs(model: nn.Module, xs: tuple, pairs: list[tuple[nn.Module, nn.Module]], names: dict[nn.Module, str],
                rng: dict) -> dict[nn.Module, int]:
    """One forward, before anything is changed: the model takes `xs`, and each measured module of the `(measured,
    adjusted)` pairs runs in it (warned about if more than once); returns the order in which they first give
    their output."""
    measured = [m for m, _ in pairs]
    ran, calls = {}, dict.fromkeys(measured, 0)

    def record(hook: Hook, m: nn.Module, inp: tuple, outp: object) -> None:
        ran.setdefault(m, len(ran))
        calls[m] += 1
    with Hooks(dict.fromkeys(measured), record):
        set_rng_state(rng)
        try:
            model(*xs)
        except Exception as e:
            e.add_note('lsuv_init: xb is the model\'s inputs, run as model(xb) (a tensor), or model(*xb) (a tuple of '
                       'several inputs); for an (x, y) batch b from a DataLoader, pass b[0].')
            raise
    for m in dict.fromkeys(measured):
        if m not in ran:
            raise _did_not_run(names, m)
        if calls[m] > 1:
            fix = ('; it is reused, so its weights are scaled for that call alone' if (m, m) in pairs else
                   ', for every layer paired with it: give each layer its own module to measure (e.g. one activation '
                   'per layer), or measure the layers themselves')
            warnings.warn(f'lsuv_init: {_name(names, m)} runs {calls[m]} times in model(xb), and its last call is the '
                          f'one measured{fix}.', stacklevel=3)
    return ran


def _lsuv_one(model: nn.Module, xs: tuple, measured: nn.Module, adjusted: nn.Module, tol: float, max_iters: int,
              names: dict[nn.Module, str], rng: dict) -> None:
    has_bias = isinstance(getattr(adjusted, 'bias', None), Tensor)
    other = measured is not adjusted
    who = _name(names, adjusted) + (f' (measured at {_name(names, measured)})' if other else '')
    how = 'dividing the weights' + (' and shifting the bias' if has_bias else '')
    initial = _state(adjusted)

    def warn(msg: str, put_back: bool = True) -> None:
        """Warn; if `put_back`, the layer gets back the state it had."""
        if put_back: adjusted.load_state_dict(initial)
        warnings.warn(f'lsuv_init: {msg}', stacklevel=4)

    def off(mean: float, std: float) -> float:
        """How far the output is from std 1 (and mean 0 if the layer has a bias)."""
        return max(abs(std - 1), abs(mean) if has_bias else 0.)

    prev = None
    with Hook(measured, _stats) as hook:
        for i in range(max_iters + 1):
            hook.stats = None
            set_rng_state(rng)
            model(*xs)
            if hook.stats is None:
                raise _did_not_run(names, measured)
            mean, std, dtype = hook.stats
            if i == 0: tol, start = max(tol, _min_tol(adjusted.weight.dtype, dtype)), (mean, std)
            why = _unscalable(mean, std, adjusted.weight)
            if why:
                hint = ('; an output that cannot reach mean 0, such as a plain ReLU\'s, drives the layer there: '
                        'measure the layer itself, or use GeneralRelu(sub=...)') if other else ''
                return warn(f'the output of {who} {why} after {i} iterations, so it cannot be scaled to std 1; that '
                            f'layer keeps the weights it had (check the data and the layers before it{hint}).')
            if abs(std - 1) < tol and (not has_bias or abs(mean) < tol):
                return
            stalled = prev is not None and _stalled(prev, (mean, std), has_bias)
            if not (stalled or i == max_iters):
                if has_bias: adjusted.bias -= mean
                adjusted.weight /= std
                prev = mean, std
                continue
            stats = f'output mean {start[0]:.4g}, std {start[1]:.4g} -> mean {mean:.4g}, std {std:.4g}; tol {tol:.3g}'
            closer = off(mean, std) < off(*start) / 2
            if stalled and closer:
                cause = 'a residual connection adds its input to it' if other else \
                    'its bias values differ across its outputs by more than std 1'
                fix = ('. To get the layer\'s own output to mean 0 and std 1, measure the layer itself (pass it alone '
                       'in modules)') if other else ''
                return warn(f'{how} of {who} stopped moving its measured output short of mean 0, std 1 ({stats}): '
                            f'the layer controls only part of that output (e.g. {cause}); it keeps the last weights, '
                            f'which brought the output more than halfway there{fix}.', put_back=False)
            if stalled:
                hint = ('the layer does not control the output measured, or too little of it (e.g. a BatchNorm between '
                        'them cancels the scaling, or that output comes before the layer); that layer keeps the '
                        'weights it had. Measure the layer itself: pass it alone in modules (e.g. modules=convs)') \
                    if other else ('its output does not follow its weights, or too little (e.g. its input is constant, '
                                   'after a dead layer; its bias values differ across its outputs by more than std 1; '
                                   'or a spectral_norm undoes the scaling); that layer keeps the weights it had (check '
                                   'the data and the layers before it)')
                return warn(f'{how} of {who} stopped moving its measured output less than halfway to mean 0, std 1 '
                            f'({stats}): {hint}.')
            if closer:
                hint = ', or measure the layer itself (pass it alone in modules)' if other else ''
                return warn(f'{who} did not converge in {max_iters} iterations ({stats}); it keeps the last weights, '
                            f'which brought its output more than halfway there: raise max_iters{hint}.',
                            put_back=False)
            hint = ('the output measured may not reach mean 0 and std 1 through this layer: measure the layer itself '
                    '(pass it alone in modules)') if other else 'check the data and the layers before it'
            return warn(f'{who} did not converge in {max_iters} iterations, and its output got less than halfway '
                        f'there ({stats}); that layer keeps the weights it had; {hint}.')
