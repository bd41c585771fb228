"""The `Learner`: a training loop whose every step is an event that callbacks can hook into.

Events, in the order a fit runs them::

    before_fit
      before_epoch                      (once for training, once for validation, per epoch)
        before_batch
          after_predict, after_loss     (and, when training: after_backward, after_step)
        after_batch       cleanup_batch
      after_epoch         cleanup_epoch
    after_fit             cleanup_fit

Cancelling, exactly as in the fast.ai course and fastai: raising `CancelBatchException` skips the rest of
the batch (its `after_batch` too) and goes on with the next batch; `CancelEpochException` skips the rest
of the epoch (its `after_epoch` too) and goes on with the next one; `CancelFitException` ends the fit
(skipping `after_fit`). The matching `cleanup_*` event always runs, also when any other exception
(a `KeyboardInterrupt`, a bug in a callback, a `NonFiniteLossError`) passes through, which is then re-raised.
`learn.loss_counts` says whether the current batch's loss counts in averages: it does once computed in
validation, and once backpropagated in training (also when a callback then cancels the batch, as gradient
accumulation does); recording callbacks read it in `after_batch` and, for a cancelled batch, `cleanup_batch`.
Every cleanup handler runs even if an earlier one fails: their errors become notes on the exception passing
through, or, when there is none, the first of them is raised once all have run.

NaN guard: each training loss is checked after `after_loss` and before `backward` (`nan_guard=True`, the
default): a NaN or infinite loss raises `NonFiniteLossError`, leaving the weights, optimizer state and
BatchNorm running statistics as they were before that batch.

Checkpoints (`save`, `load`, `fit(n, resume=path)`, `CheckpointCB`) hold the model, its pending gradients
(gradient accumulation, `MomentumLearner`), the optimizer (one saved before the run had an optimizer restores a
fresh one), the counters, the state of every callback that has `state_dict`/`load_state_dict` (keyed by class
name and index among the callbacks of that class, e.g. `RecorderCB_0`), the global random number generators and the
loaders' own state (their `state_dict`, or a DataLoader's own generator). `fit(n, resume=path)` keeps `n` as
the run's TOTAL number of epochs. It checks the checkpoint against the model, optimizer and phases, runs
`before_fit` as usual (callbacks build their schedulers, reset their records, `DDPCB` shards the loaders),
checks the loaders (their number of batches, and how they keep their data order), THEN restores the
callback states, weights, optimizer and counters (a refused resume puts back what `before_fit` changed), and
starts at the saved position: a checkpoint saved
between epochs resumes with the next epoch; one saved mid-epoch (e.g. after `InterruptCB` stopped a fit at a
batch boundary) replays that epoch's data order past the batches already done. A `learn.save` during a
batch is written when the batch ends, so it holds the whole batch. On CPU the resumed run is bit for bit the
uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import os
import random
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from functools import partial, wraps
from itertools import islice, repeat
from numbers import Real
from operator import attrgetter, index
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn, optim
from torch.nn.modules.lazy import LazyModuleMixin

from .guards import NonFiniteLossError, backward_loss, call_loss, call_model, check_batch

if TYPE_CHECKING:
    from .summary import Summary

__all__ = ['CancelFitException', 'CancelEpochException', 'CancelBatchException', 'Callback', 'run_cbs',
           'with_cbs', 'Learner', 'TrainLearner', 'MomentumLearner', 'get_rng_state', 'set_rng_state',
           'check_callback', 'loader_generators', 'copy_state']


class CancelFitException(Exception):
    """Raise in a callback to end the fit (skips `after_fit`; `cleanup_fit` still runs)."""


class CancelEpochException(Exception):
    """Raise in a callback to skip the rest of this epoch (and its `after_epoch`)."""


class CancelBatchException(Exception):
    """Raise in a callback to skip the rest of this batch (and its `after_batch`)."""


_cancels = {'fit': CancelFitException, 'epoch': CancelEpochException, 'batch': CancelBatchException}
# Where the run stands, as `save` writes it: a validation-only fit puts it back as it was.
_POSITION = ('epoch', 'iter', 'phase', 'phases', 'n_epochs', 'n_iter', 'train_iter', 'resume_iter',
             'should_stop', '_at', '_n_done', '_phase_done')


class Callback:
    """Base class: define methods named after events (`before_fit(self, learn)`, ...); lower `order` runs
    first. A callback with `state_dict()`/`load_state_dict(sd)` has that state saved in checkpoints."""
    order = 0


def run_cbs(cbs: Iterable[Callback], method_nm: str, learn: Learner | None = None) -> None:
    """Call `method_nm(learn)` on each callback that has it, in `order`."""
    for cb in sorted(cbs, key=attrgetter('order')):
        method = getattr(cb, method_nm, None)
        if method is not None:
            method(learn)


class with_cbs:
    """Decorator: wrap a Learner method in the `before_`/`after_`/`cleanup_` events of one level."""
    def __init__(self, nm: str):
        self.nm = nm

    def __call__(self, f: Callable) -> Callable:
        nm, cancel = self.nm, _cancels[self.nm]

        @wraps(f)
        def _f(o, *args, **kwargs):
            try:
                o.callback(f'before_{nm}')
                f(o, *args, **kwargs)
                o.callback(f'after_{nm}')
            except cancel:
                pass
            except BaseException as e:
                o.cleanup(f'cleanup_{nm}', e)
                raise
            o.cleanup(f'cleanup_{nm}')
        return _f


def run_all(steps: Iterable[tuple[str, Callable[[], object]]], error: BaseException | None,
            note: Callable[[str, BaseException], str]) -> None:
    """Run every `(name, step)`, also after one raises (a Ctrl-C too). Their errors become notes (`note(name, e)`)
    on `error`, the exception passing through, if there is one; else the first is raised with the others as
    notes. A Ctrl-C (a `KeyboardInterrupt`, or another non-`Exception`) is raised in any case: over a cancel
    passing through, the fit would go on."""
    failed = []
    for name, step in steps:
        try:
            step()
        except BaseException as e:
            failed.append((name, e))
    if not failed:
        return
    stop = next((e for _, e in failed if not isinstance(e, Exception)), None)
    target = stop or error or failed[0][1]
    for name, e in failed:
        if e is not target:
            target.add_note(note(name, e))
    if target is not error:
        raise target


def check_callback(cb: Any) -> None:
    """Raise a `TypeError` with the fix unless `cb` is a callback instance (something with an `order`)."""
    if isinstance(cb, type) or not isinstance(getattr(cb, 'order', None), (int, float)):
        fix = f'an instance, {cb.__name__}()' if isinstance(cb, type) else 'a Callback (with an `order`)'
        raise TypeError(f'Learner callbacks: {cb!r} is not a callback; pass {fix}.')


def as_cbs(cbs: Callback | Iterable[Callback] | None) -> list[Callback]:
    """`cbs` as a list: a single callback becomes a list of one."""
    return [cbs] if hasattr(cbs, 'order') else list(cbs or ())


def check_n_epochs(n_epochs: Any) -> int:
    """`n_epochs` as an int (NumPy integers too); a `ValueError` unless it is a positive whole number."""
    try:
        n = index(n_epochs)
    except TypeError:
        n = 0
    if n < 1 or isinstance(n_epochs, bool):
        raise ValueError(f"fit(n_epochs={n_epochs!r}): n_epochs must be a positive whole number of epochs.")
    return n


def as_float(v: Any) -> Any:
    """`v` as a Python float if it is a real number (a NumPy one too, which checkpoints cannot hold), else as it is
    (e.g. a tensor lr)."""
    return float(v) if isinstance(v, Real) and not isinstance(v, bool) else v


def check_lr(lr: Any, resume: Any = None, who: str = 'fit') -> float | None:
    """`lr` as a float (None stays None); a `ValueError` unless it is a finite number >= 0, and None when resuming.
    `who` (the function given `lr`) is for the message."""
    if lr is None:
        return None
    if resume is not None:
        raise ValueError('fit(..., lr=..., resume=...): a resumed run goes on with the lrs and schedule it saved; '
                         'drop lr. To train on from a checkpoint at another lr: learn.load(path), then fit(n, lr=...).')
    if isinstance(lr, torch.Tensor) and lr.numel() == 1 and lr.is_floating_point():  # (capturable optimizers)
        lr = lr.item()
    if isinstance(lr, bool) or not isinstance(lr, Real) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f'{who}(lr={lr!r}): lr must be a finite number >= 0.')
    return float(lr)


def _refuse_unused_lr(own: list[float | None], who: str) -> None:
    """Raise if every param group has an lr of its own (from the splitter), so an lr given to `who` would be
    ignored."""
    if own and all(o is not None for o in own):
        raise ValueError(f'{who}: every param group has an lr of its own from the splitter ({own}), so this lr would '
                         'change none of them. Leave lr out to train at those lrs, or give the splitter the lrs you '
                         'want (e.g. splitter=partial(discriminative_groups, lr=...)); fit_one_cycle(lr_max=[...]) '
                         'takes one lr per group.')


def check_optimizer(opt: Any, who: str) -> None:
    """Raise a `TypeError` with the fix unless `opt` works as a `torch.optim.Optimizer` (a subclass, or a wrapper
    with its `param_groups`, `state`, `step`, `zero_grad`, `state_dict` and `load_state_dict`; PyTorch's schedulers
    take only a subclass)."""
    groups = getattr(opt, 'param_groups', None)
    ok = isinstance(groups, list) and all(isinstance(g, dict) for g in groups) and hasattr(opt, 'state') and all(
        callable(getattr(opt, m, None)) for m in ('step', 'zero_grad', 'state_dict', 'load_state_dict'))
    if not ok:
        raise TypeError(f'Learner: {who} gave a {type(opt).__name__}, not a torch.optim.Optimizer; schedulers, lr_find '
                        'and checkpoints set and save its param_groups and state. Pass a torch optimizer (e.g. '
                        'optim.SGD), or write yours as a subclass of torch.optim.Optimizer: __init__ calls '
                        'super().__init__(params, dict(lr=lr, ...)) and step() reads each group of self.param_groups.')


def put_param_groups(opt: Any, groups: list[dict]) -> None:
    """Set `opt.param_groups` to `groups`; in place where it is read-only (a wrapper showing its inner
    optimizer's list)."""
    try:
        opt.param_groups = groups
    except AttributeError:
        opt.param_groups[:] = groups


def check_loader(dl: Any, name: str) -> None:
    """Raise unless loader `dl` (called `name` in the message) has a length and at least one batch."""
    try:
        n = len(dl)
    except TypeError:
        raise TypeError(f'{name} (a {type(dl).__name__}) has no length (is its dataset an IterableDataset?): the '
                        'Learner needs the number of batches per epoch, for schedules, progress and resuming; give '
                        'a loader over a dataset with __len__, or a list of batches.') from None
    if n == 0:
        raise ValueError(f'{name} has no batches: its dataset is empty, or holds fewer items than one batch with '
                         'drop_last=True. Check the data (path, split, filters) or lower the batch size.')


def copy_state(x: Any) -> Any:
    """A deep copy of a callback's state; tensors detached (a tensor of the autograd graph cannot be deep-copied)."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if type(x) in (dict, OrderedDict):
        return type(x)((k, copy_state(v)) for k, v in x.items())
    if type(x) in (list, tuple):
        return type(x)(map(copy_state, x))
    return copy.deepcopy(x)


def loader_generators(dl: Any) -> list[torch.Generator]:
    """The generators of its own that a DataLoader shuffles with (`DataLoader(..., generator=g)`, or its sampler's or
    batch sampler's sampler's)."""
    sampler, batch_sampler = getattr(dl, 'sampler', None), getattr(dl, 'batch_sampler', None)
    gs = (getattr(dl, 'generator', None), getattr(sampler, 'generator', None),
          getattr(getattr(batch_sampler, 'sampler', None), 'generator', None))
    return list({id(g): g for g in gs if isinstance(g, torch.Generator)}.values())


def _order_kind(sd: dict[str, Any] | None) -> str:
    """How a loader with checkpoint state `sd` keeps its data order, in words."""
    if sd is None:
        return 'no state (unshuffled, or shuffled by the global RNG)'
    if list(sd) == ['generators']:
        return f"{len(sd['generators'])} generator(s) of its own"
    return f'a state_dict with {sorted(sd)}'


def get_rng_state() -> dict[str, Any]:
    """The global RNGs' state (torch CPU, CUDA when in use, Python `random`, NumPy) as tensors and numbers."""
    v, state, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            'random': {'version': v, 'state': torch.tensor(state), 'gauss': gauss},
            'numpy': {'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': pos, 'has_gauss': has_gauss,
                      'gauss': cached}}


def set_rng_state(s: dict[str, Any]) -> None:
    """Restore the global RNGs from `get_rng_state()`."""
    torch.set_rng_state(s['torch'])
    if s['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s['cuda'][:torch.cuda.device_count()])
    r, n = s['random'], s['numpy']
    random.setstate((r['version'], tuple(r['state'].tolist()), r['gauss']))
    keys = n['keys'].numpy().astype(np.uint32)
    np.random.set_state(('MT19937', keys, n['pos'], n['has_gauss'], n['gauss']))


class Learner:
    """Runs `fit` over `dls` (with `.train` and `.valid` loaders), handing each step to callbacks.

    The loop state is public for callbacks: `epoch`, `iter`, `batch`, `preds`, `loss`, `training`, `phase`
    ('train' or 'valid'), `phases` (those this fit runs), `n_epochs`, `opt`, `train_iter` (training batches
    done in this fit), `pct_train` (fraction done) and `resume_iter` (batches of this epoch done before a
    mid-epoch resume; else 0). `splitter(model)`, if given, returns the param groups handed to `opt_func`
    (discriminative lrs). `nan_guard=False` turns off the check of each training loss (`NonFiniteLossError`).
    A callback sets `should_stop = True` to end the fit once the current epoch is done (e.g. `EarlyStoppingCB`);
    each fit starts with it False. Checkpoints keep it: resuming a stopped run trains nothing (with a warning),
    while `load` then `fit` trains on.
    `n_inp`: how many items of a batch are the model's inputs (the rest are targets).
    """
    n_inp = 1
    def __init__(self, model: nn.Module, dls: Any = (0,), loss_func: Callable = F.mse_loss, lr: float = 0.1,
                 cbs: Iterable[Callback] | None = None, opt_func: Callable = optim.SGD,
                 splitter: Callable | None = None, nan_guard: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f'Learner: model is a {type(model).__name__}, not a torch nn.Module; wrap a function in '
                            'a Module (or use nn.Sequential).')
        self.model, self.dls, self.loss_func, self.lr = model, dls, loss_func, lr
        self.opt_func, self.splitter, self.nan_guard = opt_func, splitter, nan_guard
        self.cbs: list[Callback] = []
        self.opt: optim.Optimizer | None = None
        self._own_lrs: tuple[optim.Optimizer | None, list] = (None, [])  # see `create_opt`
        self._opt_func = opt_func  # the one that built `opt`: a fit after `learn.opt_func` changed builds a new one
        self._handlers: dict[str, list[Callable]] = {}
        self.epoch, self.iter, self.train_iter, self.n_epochs, self.n_iter = 0, 0, 0, 0, 0
        self.phases, self.phase, self.resume_iter = ('train', 'valid'), 'train', 0
        # The current phase's (epoch, phase, random state at its start), its batches done (trained or
        # cancelled) and whether it is done, the checkpoint being resumed (until its first phase starts), and
        # the BatchNorm buffers (and a copy) that the NaN guard puts back.
        self._at: tuple | None = None
        self._n_done, self._phase_done, self._ck, self._fitting = 0, False, None, False
        self._undo: Callable[[], None] | None = None  # puts back what a refused resume's start changed
        self.should_stop, self.loss_counts = False, False
        self._grads_partial = False  # a training batch stopped after its backward: its gradients are in `p.grad`
        self._run_states: dict[str, Any] | None = None  # the run's callback states, kept by a validation-only fit
        self._saves_due: list[str | os.PathLike] | None = None  # `save`s asked for during the batch running
        self._no_trace = False  # in `no_trace` (lr_find, get_preds): `save` writes nothing
        self._norm_bufs: list[torch.Tensor] = []
        self._norm_copy: list[torch.Tensor] = []
        self._lazy_norms: list[nn.Module] = []
        if isinstance(loss_func, type):
            raise TypeError(f'Learner: loss_func is the class {loss_func.__name__}; pass an instance, '
                            f'{loss_func.__name__}(), or a function such as F.cross_entropy.')
        if not callable(loss_func):
            raise TypeError(f'Learner: loss_func is a {type(loss_func).__name__}; pass a function of (preds, targets) '
                            'such as F.cross_entropy, or a loss module such as nn.CrossEntropyLoss().')
        if check_lr(lr, who='Learner') is None:
            raise ValueError('Learner(lr=None): lr is the lr that fits start at; give a number, e.g. lr=1e-3.')
        if isinstance(opt_func, optim.Optimizer) or not callable(opt_func):
            name = type(opt_func).__name__
            what = f'an optimizer already built ({name})' if isinstance(opt_func, optim.Optimizer) else f'a {name}'
            raise TypeError(f'Learner: opt_func is {what}; pass what builds one: the '
                            'class (opt_func=optim.AdamW) or a partial (partial(optim.SGD, momentum=0.9)). To use an '
                            'optimizer you built: learn.opt = opt.')
        for cb in as_cbs(cbs):
            self.add_cb(cb)

    # -- callbacks ---------------------------------------------------------------------------------
    def add_cb(self, cb: Callback) -> Learner:
        """Add a callback (it stays for every later fit)."""
        self._check_new_cbs([cb])
        self.cbs.append(cb)
        self._handlers.clear()
        return self

    def remove_cb(self, cb: Callback) -> Learner:
        """Remove a callback that was added."""
        if not any(c is cb for c in self.cbs):
            raise ValueError(f'Learner.remove_cb: {type(cb).__name__} is not one of this Learner\'s callbacks.')
        self.cbs.remove(cb)
        self._handlers.clear()
        return self

    def _check_new_cbs(self, cbs: list[Callback]) -> None:
        """Raise unless `cbs` are callback instances, each new to this Learner and given once."""
        for i, cb in enumerate(cbs):
            check_callback(cb)
            if any(c is cb for c in [*self.cbs, *cbs[:i]]):
                raise ValueError(f'Learner: this {type(cb).__name__} is added twice, so it would run twice per '
                                 'event; add it once (to run two, make two).')

    def _handlers_of(self, method_nm: str) -> list[Callable]:
        """The callbacks' `method_nm` methods in `order` (cached until the callbacks change)."""
        handlers = self._handlers.get(method_nm)
        if handlers is None:
            cbs = sorted(self.cbs, key=attrgetter('order'))
            handlers = self._handlers[method_nm] = [m for cb in cbs if (m := getattr(cb, method_nm, None))]
        return handlers

    def callback(self, method_nm: str) -> None:
        """Run event `method_nm` on every callback that handles it. A `save` asked for in `after_epoch` is written
        once every callback's `after_epoch` has run (as one during a batch is at the batch's end), so that it holds
        the whole epoch, whatever the saving callback's order."""
        if method_nm == 'after_epoch' and self._saves_due is None:
            self._saves_due = []
            try:
                self._run_handlers(method_nm)
            except BaseException as e:
                self._write_due(e)
                raise
            self._write_due()
        else:
            self._run_handlers(method_nm)

    def _run_handlers(self, method_nm: str) -> None:
        for m in self._handlers_of(method_nm):
            m(self)

    def cleanup(self, method_nm: str, error: BaseException | None = None) -> None:
        """Run a `cleanup_*` event: every handler runs even if one fails. Their errors become notes on `error`
        (the exception ending the fit, epoch or batch) if there is one; else the first is raised after all ran. A
        Ctrl-C in a handler (a `KeyboardInterrupt`, or another non-`Exception`) is raised in any case: over a cancel
        passing through, the fit would go on."""
        run_all([(type(getattr(m, '__self__', m)).__name__, partial(m, self)) for m in self._handlers_of(method_nm)],
                error, lambda name, e: f'{method_nm} of {name} also failed: {type(e).__name__}: {e}')

    def __getattr__(self, name: str):
        # `predict`, `get_loss`, ... of a plain Learner are events, so that e.g. `TrainCB` can supply them.
        if name in ('predict', 'get_loss', 'backward', 'step', 'zero_grad'):
            return lambda: self.callback(name)
        why = (': nothing set it. A plain Learner gets its training steps (predict, get_loss, ...) from '
               'callbacks: add TrainCB(), or use TrainLearner' if name in ('preds', 'loss') else '')
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}{why}")

    # -- the loop ----------------------------------------------------------------------------------
    @property
    def training(self) -> bool:
        return self.model.training

    @property
    def pct_train(self) -> float:
        """Fraction of this fit's training batches done so far (0 → 1), for schedules and plots."""
        return self.train_iter / self.n_iter if self.n_iter else 0.

    def create_opt(self, lr: float | None = None) -> optim.Optimizer:
        """Build the optimizer from `opt_func` over the model's parameters (or the `splitter`'s groups); `lr`, if
        given, becomes `self.lr` (the lr that later fits start at)."""
        lr = check_lr(lr, who='create_opt')
        opt, own = self.new_opt(lr)
        if lr is not None:
            _refuse_unused_lr(own, 'create_opt(lr)')
            self.lr = lr
        self.opt, self._own_lrs, self._opt_func = opt, (opt, own), self.opt_func
        return self.opt

    def new_opt(self, lr: float | None = None) -> tuple[optim.Optimizer, list[float | None]]:
        """A new optimizer as `create_opt` builds it (at `lr`, else `self.lr`), not set on the Learner, and the
        lrs the `splitter` gave its param groups, which every fit keeps (None: the group takes the fit's lr)."""
        groups = list(self.splitter(self.model) if self.splitter else self.model.parameters())
        own = [g.get('lr') if isinstance(g, dict) else None for g in groups]  # before the optimizer fills them in
        opt = self.opt_func(groups, lr=as_float(self.lr if lr is None else lr))
        check_optimizer(opt, 'opt_func')
        n = len(opt.param_groups)
        return opt, own if len(own) == n else [None] * n

    def opt_is_stale(self) -> bool:
        """Whether `learn.opt_func` was changed since it built `learn.opt`, so that the next fit builds a new one."""
        return self.opt is not None and self.opt is self._own_lrs[0] and self.opt_func is not self._opt_func

    def _set_lrs(self, lr: float | None) -> None:
        """Start a fit at `lr` (None: `self.lr`) in every param group but those the splitter gave an lr of their
        own. An optimizer set by hand (not built by `create_opt`) keeps its lrs unless `lr` is given."""
        opt, own = self._own_lrs
        if opt is not self.opt:
            if lr is None:
                return
            own = repeat(None)
        elif lr is not None:
            _refuse_unused_lr(own, 'fit(lr=...)')
        for pg, o in zip(self.opt.param_groups, own):
            pg['lr'] = as_float((self.lr if lr is None else lr) if o is None else o)
            pg.pop('initial_lr', None)  # so that a scheduler built in this fit starts from it

    def _check_opt_params(self) -> None:
        """Raise if the optimizer was built for another model: it holds parameters that are not the model's while
        some of the model's trainable ones are not in it (the model, or a layer, was replaced). An optimizer over
        part of the model, or with parameters of its own (e.g. a learnable loss temperature), is fine."""
        own = {id(p): p for p in self._plain_model().parameters()}
        held = {id(p) for pg in self.opt.param_groups for p in pg['params']}
        if held - own.keys() and any(p.requires_grad for i, p in own.items() if i not in held):
            raise ValueError("fit (or lr_find): the optimizer holds parameters that are not the model's, and the "
                             "model has trainable ones that are not in it: was learn.model, or one of its layers, "
                             'replaced after the optimizer was built? Build one for the model as it is now with '
                             'learn.create_opt() (its state starts afresh), then fit.')

    def fit(self, n_epochs: int = 1, train: bool = True, valid: bool = True,
            cbs: Iterable[Callback] | None = None, lr: float | None = None,
            resume: str | os.PathLike | None = None) -> None:
        """Train for `n_epochs`; `cbs` are added for this fit only (removed even if it raises).

        Every fit starts at `lr`, else `self.lr` (which `create_opt(lr)` sets): the lr an earlier fit's schedule left
        does not carry over (other hyperparameters it scheduled, e.g. momentum, stay as it left them, as in fastai).
        Param groups that the `splitter` gave an lr of their own keep it; an optimizer set
        by hand (`learn.opt = ...`) keeps its lrs unless `lr` is given. The optimizer and its state carry over to
        the next fit, unless `learn.opt_func` was changed: then the fit (or `load`) builds a new one with it (an
        optimizer set by hand is kept).

        `resume`: a checkpoint of this run (a file, or a folder with `checkpoint.pt`) to continue from;
        `n_epochs` is still the run's total, and what the checkpoint had done is skipped.

        `train=False` validates only: the callbacks show that fit's records (e.g. `MetricsCB.history`), while the
        run's position, random state, lrs and optimizer stay, and checkpoints saved until the next training fit
        hold the callback states the run had, so they resume it exactly."""
        self.refuse_in_fit('fit')
        n_epochs = check_n_epochs(n_epochs)
        phases = ('train',) * train + ('valid',) * valid
        if not phases:
            raise ValueError('fit(train=False, valid=False) would run nothing; keep at least one of them True.')
        lr = check_lr(lr, resume)
        ck = None if resume is None else self._read_checkpoint(resume, n_epochs, phases)
        cbs = as_cbs(cbs)
        self._check_new_cbs(cbs)
        self._check_loaders(phases)
        if self.opt is not None:
            check_optimizer(self.opt, 'learn.opt')
        # validating only: the run's position (for `save`) stays the training's, random state included
        position = None if train else ({k: getattr(self, k) for k in _POSITION}, self._random_state())
        self._undo = self._undo_fit_start()  # a fit refused (up to its `before_fit`) changes nothing
        if train:
            self._run_states = None
        elif self._run_states is None:  # checkpoints keep the run's states, not this fit's records
            self._run_states = {k: copy_state(cb.state_dict()) for k, cb in self._stateful_cbs().items()}
        try:
            if train and self.opt_is_stale():  # (validating only, the optimizer stays the run's, or none)
                self.opt = None
            if self.opt is not None and train:
                self._check_opt_params()
            if self.opt is None and train:
                self.create_opt()
            if self.opt is not None and train and (ck is None or ck['opt'] is None):  # (a saved one has its lrs)
                self._set_lrs(lr)
            if ck is not None:
                self._check_opt(ck)
            self._handlers.clear()  # `learn.cbs` may have been edited, or a callback's order changed
            self.cbs.extend(cbs)
            self.phases = phases
            self.n_epochs, self.epochs = n_epochs, range(ck['epoch'] if ck else 0, n_epochs)
            self.n_iter = n_epochs * len(self.dls.train) if train else 0
            self.train_iter, self._ck, self._fitting, self.should_stop = 0, ck, True, False
            self._fit()
        except BaseException as e:
            self._undo_unrestored(e)
            raise
        else:  # a resume cancelled (`CancelFitException`) before its checkpoint was restored is undone, while
            # another fit cancelled in `before_fit` ended as fits do: it was not refused
            self._undo = self._undo if ck is not None else None
            self._undo_unrestored()
        finally:
            self._ck, self._fitting, self._undo = None, False, None
            if position is not None:
                self.__dict__.update(position[0])
                self._set_random_state(position[1])
            self.cbs[:] = [c for c in self.cbs if not any(c is cb for cb in cbs)]  # (one may have removed itself)
            self._handlers.clear()

    def _undo_fit_start(self) -> Callable[[], None]:
        """A function putting back what starting a fit changes (callbacks' attributes and states, the optimizer's
        param groups, the counters), for a fit refused in `before_fit` or a resume refused after it; it runs after
        `cleanup_fit`."""
        attrs = [(d, dict(d)) for cb in self.cbs if (d := getattr(cb, '__dict__', None)) is not None]
        states = []
        for cb in self._stateful_cbs().values():
            try:
                states.append((cb, copy_state(cb.state_dict())))
            except Exception:  # e.g. a state that `before_fit` sets up: the attributes above cover it
                pass
        pgs = self.opt.param_groups if self.opt else []
        groups = [(pg, dict(pg)) for pg in pgs]
        counters = {k: getattr(self, k) for k in ('phases', 'n_epochs', 'n_iter', 'train_iter', 'should_stop', 'opt',
                                                  '_own_lrs', '_opt_func', '_run_states')}
        def undo() -> None:
            for cb, sd in states:  # e.g. metrics reset in place
                cb.load_state_dict(sd)
            for d, old in attrs:  # then the attributes, as they were (a state may be only part of them)
                d.clear()
                d.update(old)
            pgs[:] = [pg for pg, _ in groups]
            for pg, old in groups:
                pg.clear()
                pg.update(old)
            self.__dict__.update(counters)
        return undo

    def _undo_unrestored(self, error: BaseException | None = None) -> None:
        """Put back what the start of a resumed fit changed if its checkpoint was not restored (a failure to do so
        becomes a note on `error`, the exception ending the fit)."""
        undo, self._undo = self._undo, None
        if undo is None:
            return
        try:
            undo()
        except Exception as e:
            if error is None:
                raise
            error.add_note(f'Putting back the state from before this resume also failed: {type(e).__name__}: {e}')

    def refuse_in_fit(self, what: str) -> None:
        """Raise a `RuntimeError` if a fit is running: `what` (a fit, `lr_find`, `get_preds`) cannot run inside
        one, as it would restart the callbacks and counters of the fit that runs."""
        if self._fitting:
            raise RuntimeError(f'{what}: this Learner is in the middle of a fit (was it called from a callback?); '
                               f'call {what} before or after the fit.')

    def summary(self, xb: torch.Tensor | tuple[torch.Tensor, ...] | None = None, depth: int = 1) -> Summary:
        """Each layer's input and output shapes, parameters and MFLOPS on one batch: see `miniai.summary.summary`."""
        from .summary import summary
        return summary(self, xb, depth)

    def _check_loaders(self, phases: tuple[str, ...]) -> None:
        for phase in phases:
            if not hasattr(self.dls, phase):
                raise TypeError(f'Learner: dls (a {type(self.dls).__name__}) has no .{phase}; give DataLoaders(train, '
                                'valid), or any object whose .train and .valid are loaders.')
            if getattr(self.dls, phase) is None:
                flag = 'valid=False' if phase == 'valid' else 'train=False (to validate only)'
                raise TypeError(f'Learner: dls.{phase} is None; give a {phase} loader, or fit(..., {flag}).')
            check_loader(getattr(self.dls, phase), f'dls.{phase}')

    @with_cbs('fit')
    def _fit(self) -> None:
        ck, mid_epoch = self._ck, False
        if ck is None:
            self._undo = None  # `before_fit` went through: the fit is under way
        else:
            self._check_loader_state(ck)  # after `before_fit`, which may shard the loaders (`DDPCB`)
            self._restore(ck)  # after `before_fit`: see the module's docstring
            self._undo = None
            stopped = ck.get('should_stop', False)  # checkpoints from before `should_stop` existed have none
            self.should_stop = self.should_stop or stopped  # a callback may have set it in `before_fit`
            mid_epoch = bool(ck['iter']) or ck['phase'] != self.phases[0]
            if stopped and not mid_epoch and ck['epoch'] < self.n_epochs:
                warnings.warn(f"fit(..., resume=...): the run in this checkpoint was stopped early (should_stop, e.g. "
                              f"by EarlyStoppingCB) after epoch {ck['epoch'] - 1}, so there is nothing to train. To "
                              'train on from it, learn.load(path) then fit(n) without resume.', stacklevel=4)
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and self.nan_guard]
        # a lazy norm layer's buffers get their values in its first forward: snapshotted from the batch after
        self._lazy_norms = [m for m in norms if isinstance(m, LazyModuleMixin)]
        self._norm_bufs = [b for m in norms if m not in self._lazy_norms for b in m.buffers(recurse=False)]
        self._norm_copy = [b.clone() for b in self._norm_bufs]
        for epoch in self.epochs:
            if self.should_stop and not mid_epoch:  # a mid-epoch checkpoint's epoch is finished first
                break
            self.epoch, mid_epoch = epoch, False
            for phase in self.phases:
                if phase == 'train':
                    self.one_epoch(True)
                else:
                    with torch.no_grad():
                        self.one_epoch(False)

    def one_epoch(self, training: bool) -> None:
        self.phase, self.resume_iter, ck = ('train' if training else 'valid'), 0, self._ck
        if ck is not None:  # the first phase of a resumed fit
            if training and ck['phase'] == 'valid':
                return  # this epoch's training was done before the checkpoint
            self._set_random_state(ck['start'])
            self.resume_iter, self._ck = ck['iter'], None
        self._at, self._n_done = (self.epoch, self.phase, self._random_state()), self.resume_iter
        self._phase_done = False
        self.model.train(training)
        self.dl = self.dls.train if training else self.dls.valid
        self._one_epoch(ck and ck['rng_now'])

    @with_cbs('epoch')
    def _one_epoch(self, rng_now: dict | None = None) -> None:
        batches = iter(self.dl)
        if self.resume_iter:  # resuming mid-epoch: replay the data order past the batches done, then the RNGs
            for _ in islice(batches, self.resume_iter):
                pass
            set_rng_state(rng_now)
        for i, batch in enumerate(batches, self.resume_iter):
            self.iter, self.batch, self.loss_counts, self._saves_due = i, batch, False, []
            try:
                self._one_batch()
                self._n_done, self._grads_partial = i + 1, False  # also when cancelled: a resume goes on after it
            except BaseException as e:
                if isinstance(e, CancelEpochException):
                    self._phase_done = True  # a resume goes on with the next phase, as this fit does
                self._write_due(e)
                raise
            self._write_due()
        self._phase_done = True

    @with_cbs('batch')
    def _one_batch(self) -> None:
        guard = self.nan_guard and self.training
        if guard and self._lazy_norms:
            self._snapshot_lazy_norms()
        if guard and self._norm_bufs:
            torch._foreach_copy_(self._norm_copy, self._norm_bufs)
        self.predict()
        self.callback('after_predict')
        self.get_loss()
        self.loss_counts = not self.training
        self.callback('after_loss')
        if self.training:
            if guard:
                self._check_loss()
            self.backward()
            self.loss_counts = self._grads_partial = True
            self.callback('after_backward')
            self.step()
            self.callback('after_step')
            self.zero_grad()
            self.train_iter += 1
        # the batch is trained: a checkpoint saved in `after_batch` is past it
        self._n_done, self._grads_partial = self.iter + 1, False

    def _snapshot_lazy_norms(self) -> None:
        """Add the buffers of the lazy norm layers materialised (in place) by now to the NaN guard's snapshot."""
        ready = [m for m in self._lazy_norms if not isinstance(m, LazyModuleMixin)]
        self._lazy_norms = [m for m in self._lazy_norms if isinstance(m, LazyModuleMixin)]
        bufs = [b for m in ready for b in m.buffers(recurse=False)]
        self._norm_bufs, self._norm_copy = self._norm_bufs + bufs, self._norm_copy + [b.clone() for b in bufs]

    def _check_loss(self) -> None:
        """Raise `NonFiniteLossError` if the loss is NaN or infinite (one read of the loss)."""
        loss = self.loss.detach()
        if math.isfinite(loss.item()) if loss.numel() == 1 else bool(loss.isfinite().all()):
            return
        if self._norm_bufs:
            torch._foreach_copy_(self._norm_bufs, self._norm_copy)  # undo this forward's running stats update
        for m in self._lazy_norms:  # materialised by this batch: back to the new layer's stats
            if not isinstance(m, LazyModuleMixin):
                m.reset_running_stats()
        lrs = sorted({float(pg['lr']) for pg in self.opt.param_groups})
        x = self.batch[0] if isinstance(self.batch, (tuple, list)) else self.batch
        bad_x = isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(x.isfinite().all())
        why = ("This batch's inputs contain NaN or inf: check the data (and its normalisation)." if bad_x else
               'Try a lower learning rate (e.g. a tenth, or learn.lr_find()), gradient clipping, or check '
               'the data for NaN/inf and the loss for log(0) or division by zero.')
        if all(bool(p.isfinite().all()) for p in self.model.parameters()):
            why = f'so this batch changed no weights. {why}'
        else:
            why = ('but the weights were already NaN or inf: an earlier step made them so, most often with an lr too '
                   'high (the loss grows batch after batch until the gradients overflow: try a tenth, or '
                   'learn.lr_find()), else with non-finite gradients from a finite loss (e.g. sqrt or a norm of 0 in '
                   'the loss: its gradient there is inf; use sqrt(x + eps)). Load a checkpoint saved before it '
                   '(learn.load) and fit again once the cause is fixed.')
        raise NonFiniteLossError(
            f'The training loss is {loss.flatten()[:4].tolist()} at epoch {self.epoch}, batch {self.iter} '
            f'(training step {self.train_iter}) with lr {lrs[0] if len(lrs) == 1 else lrs}. The fit stopped '
            f'before backward, {why} (Learner(..., nan_guard=False) turns this check off.)')

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> os.PathLike:
        """Write a checkpoint (see the module's docstring) to `path` atomically; returns the path. Called during a
        batch (by a callback), it is written when the batch ends, after every callback's `after_batch` and
        `cleanup_batch`, so that it holds the whole batch, whatever the saving callback's order (the file appears
        then; likewise in `after_epoch`, once every callback's `after_epoch` has run); not if the batch stops
        part-way (an error, or the fit or epoch cancelled before `after_batch`), with a warning. Inside `lr_find`
        and `get_preds`, which leave no trace, nothing is written (with a warning)."""
        from .checkpoint import checkpoint_file
        if self._no_trace:
            warnings.warn(f'learn.save({path}) inside lr_find or get_preds was not written: they leave no trace (the '
                          'file keeps its last checkpoint).', stacklevel=2)
        elif self._saves_due is None:
            self._write([path])
        else:
            self._saves_due.append(path)
        return checkpoint_file(path)

    def _write_due(self, error: BaseException | None = None) -> None:
        """Write the saves asked for during the batch, if it finished (trained, or cancelled): one that stopped
        part-way (`error` raised before its `after_batch`) would not resume exactly. A failed write while `error`
        ends the batch becomes a note on it."""
        paths, self._saves_due = self._saves_due, None
        if not paths:
            return
        if self.training and self._n_done != self.iter + 1:  # (a validation phase resumes from its start)
            warnings.warn(f'learn.save({", ".join(map(str, paths))}) during batch {self.iter} was not written: the '
                          'batch stopped part-way, so the checkpoint would not resume exactly. The files keep their '
                          'last checkpoint.', stacklevel=3)
            return
        try:
            self._write(paths)
        except Exception as e:
            if error is None:
                raise
            error.add_note(f'learn.save during batch {self.iter} also failed: {type(e).__name__}: {e}')

    def _write(self, paths: list[str | os.PathLike]) -> None:
        from .checkpoint import atomic_save
        sd = self.state_dict()
        for p in paths:
            atomic_save(sd, p)

    def load(self, path: str | os.PathLike) -> Learner:
        """Restore a checkpoint: model, optimizer (with its hyperparameters, e.g. momentum), counters and position
        (`save` then writes the same one), callback states and random state. To continue the run it came from, use
        `fit(n_epochs, resume=path)`."""
        ck = self._read_checkpoint(path)
        if ck['opt'] is not None and (self.opt is None or self.opt_is_stale()):
            self.create_opt()
        self._check_opt(ck)
        self._restore(ck)
        self.n_epochs, self.should_stop = ck['n_epochs'], ck.get('should_stop', False)
        self._set_random_state(ck['start'])
        if ck['rng_now'] is not None:
            set_rng_state(ck['rng_now'])
        return self

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds, as plain containers, numbers, strings and tensors."""
        epoch, phase, n_done, start = self._resume_point()
        now, run = self._random_state(), self._run_states or {}  # (after a validation-only fit: the run's states)
        return {'format': 'miniai.checkpoint', 'version': 1, 'model': self._plain_model().state_dict(),
                'opt': self.opt and self.opt.state_dict(), 'opt_type': type(self.opt).__name__,
                'epoch': epoch, 'phase': phase, 'iter': n_done, 'train_iter': self.train_iter,
                'n_epochs': self.n_epochs, 'should_stop': self.should_stop,
                'grads': self._whole_batch_grads(),
                'start': start or now, 'rng_now': now['rng'] if n_done else None, 'n_batches': self._n_batches(),
                'cbs': {k: run[k] if k in run else cb.state_dict() for k, cb in self._stateful_cbs().items()}}

    def _whole_batch_grads(self) -> list[torch.Tensor | None]:
        """The gradients pending (accumulation, `MomentumLearner`), for a checkpoint; none when a training batch
        stopped part-way after its backward, as its own are in them and a resume replays it."""
        params = list(self._plain_model().parameters())
        if self._grads_partial:
            return [None] * len(params)
        return [p.grad for p in params]

    def _plain_model(self) -> nn.Module:
        """The model, unwrapped from `DistributedDataParallel` (during a `DDPCB` fit) and from `torch.compile(model)`
        (whose weights are the module's with an `_orig_mod.` prefix)."""
        m = self.model
        m = m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m
        return getattr(m, '_orig_mod', m)

    def _resume_point(self) -> tuple[int, str, int, dict | None]:
        """(epoch, phase, training batches of it done, random state at the phase's start or None for now)."""
        if self._at is None:
            return 0, self.phases[0], 0, None
        epoch, phase, start = self._at
        if not self._phase_done:
            return epoch, phase, (self._n_done if phase == 'train' else 0), start
        i = self.phases.index(phase) + 1
        if i < len(self.phases):
            return epoch, self.phases[i], 0, None
        return epoch + 1, self.phases[0], 0, None

    def _n_batches(self) -> dict[str, int]:
        """Each loader's number of batches per epoch."""
        return {k: len(dl) for k in ('train', 'valid') if hasattr(dl := getattr(self.dls, k, None), '__len__')}

    def _loader_state(self, k: str) -> dict[str, Any] | None:
        """Loader `k`'s state for a checkpoint: its `state_dict()`, else its own generators' states, else None."""
        dl = getattr(self.dls, k, None)
        if callable(getattr(dl, 'state_dict', None)):
            return dl.state_dict()
        gens = loader_generators(dl)
        return {'generators': [g.get_state() for g in gens]} if gens else None

    def _check_loader_state(self, ck: dict[str, Any]) -> None:
        """Raise a `CheckpointError` if checkpoint `ck`'s loaders differ from this Learner's in their number of
        batches or in how they keep their data order: the resumed run would not see the same data."""
        from .checkpoint import CheckpointError
        uneven = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1  # validation shares
        for k, n in ck.get('n_batches', {}).items():  # checkpoints from before `n_batches` have none
            if k == 'valid' and uneven:
                continue  # its shares may differ by a batch between processes, and the main process saved its own
            if (own := self._n_batches().get(k)) is not None and own != n:
                joined = (" A DeviceLoader now joins a lone last training image to the batch before, so a run saved "
                          "by an older miniai with one image left over cannot be resumed: learn.load(path), then "
                          "fit, trains on from it." if k == 'train' and own == n - 1 and hasattr(getattr(self.dls, k),
                                                                                                  'world_size') else '')
                raise CheckpointError(f'The checkpoint was saved by a run whose dls.{k} had {n} batches per epoch; '
                                      f'this one has {own}. Resume with the same data and batch size.{joined}')
        for k in ('train', 'valid'):
            if getattr(self.dls, k, None) is None:
                continue
            saved, own = _order_kind(ck['start']['dls'].get(k)), _order_kind(self._loader_state(k))
            if saved != own and not (k == 'valid' and k not in ck['start']['dls']):  # (validation: no order to
                # replay; an older miniai gave some validation loaders no generator of their own)
                raise CheckpointError(f'dls.{k} keeps its data order in {own}, but the loader of the run that saved '
                                      f'the checkpoint kept {saved}. Resume with the loaders of that run (same kind, '
                                      'shuffling and generator), under a miniai that keeps them as it did.')

    def _random_state(self) -> dict[str, Any]:
        """The global RNGs and each loader's state: its `state_dict()`, else its own generators' states."""
        dls = {k: sd for k in ('train', 'valid') if (sd := self._loader_state(k)) is not None}
        return {'rng': get_rng_state(), 'dls': dls}

    def _set_random_state(self, s: dict[str, Any]) -> None:
        """Restore the global RNGs and the loaders' states (a loader unlike the saved one is left as it is, with a
        warning: `load` into a Learner with other data; a resume refuses it first)."""
        set_rng_state(s['rng'])
        for k, sd in s['dls'].items():
            dl = getattr(self.dls, k, None)
            if _order_kind(sd) != _order_kind(self._loader_state(k)):
                warnings.warn(f"Checkpoint: dls.{k}'s data order was not restored: it keeps it in "
                              f'{_order_kind(self._loader_state(k))}, the saved loader in {_order_kind(sd)}.',
                              stacklevel=3)
            elif callable(getattr(dl, 'load_state_dict', None)):
                dl.load_state_dict(sd)
            else:
                for g, state in zip(loader_generators(dl), sd['generators'], strict=True):
                    g.set_state(state)

    def _stateful_cbs(self) -> dict[str, Callback]:
        """The callbacks with `state_dict`, keyed by class name and index among those of that class."""
        seen, res = Counter(), {}
        for cb in self.cbs:
            if callable(getattr(cb, 'state_dict', None)):
                name = type(cb).__name__
                res[f'{name}_{seen[name]}'] = cb
                seen[name] += 1
        return res

    def _read_checkpoint(self, path: str | os.PathLike, n_epochs: int | None = None,
                         phases: tuple[str, ...] = ()) -> dict[str, Any]:
        """Read a checkpoint and check that it fits the model (the same architecture) and, for a resume,
        the fit (`n_epochs`, `phases`); loads nothing."""
        from .checkpoint import check_model_state, load_checkpoint
        ck = load_checkpoint(path)
        if n_epochs is not None and ck['epoch'] > n_epochs:
            raise ValueError(f"fit({n_epochs}, resume=...): the checkpoint has done {ck['epoch']} epochs; "
                             f"n_epochs is the run's total number of epochs, so pass at least {ck['epoch']}.")
        if n_epochs is not None and ck['epoch'] < n_epochs and ck['phase'] not in phases:
            raise ValueError(f"fit(..., resume=...): the checkpoint stopped in the {ck['phase']} phase of epoch "
                             f"{ck['epoch']}, which this fit (phases {phases}) does not run; resume with the "
                             "train/valid arguments of the fit that saved it.")
        check_model_state(self._plain_model(), ck['model'], path)
        return ck

    def _check_opt(self, ck: dict[str, Any]) -> None:
        """Raise if checkpoint `ck`'s optimizer state does not fit `self.opt` (type and param groups)."""
        if ck['opt'] is None:
            return
        if type(self.opt).__name__ != ck['opt_type']:
            raise ValueError(f"The checkpoint's optimizer is {ck['opt_type']} but this Learner's is "
                             f"{type(self.opt).__name__}: build the Learner with the same opt_func.")
        saved = [len(pg['params']) for pg in ck['opt']['param_groups']]
        own = [len(pg['params']) for pg in self.opt.param_groups]
        if saved != own:
            raise ValueError(f"The checkpoint's optimizer has param groups of {saved} parameters, this Learner's "
                             f"of {own}: build the Learner with the same splitter as the run that saved it.")

    def _restore(self, ck: dict[str, Any]) -> None:
        """Restore the callback states (first: a callback may refuse its state, which puts back those restored
        before it), then the weights, the optimizer and the counters of checkpoint `ck`."""
        cbs, done = self._stateful_cbs(), []
        for k, sd in ck['cbs'].items():
            if k in cbs:
                done.append((cbs[k], copy_state(cbs[k].state_dict())))
                try:
                    cbs[k].load_state_dict(sd)
                except BaseException:
                    for cb, old in reversed(done):
                        cb.load_state_dict(old)
                    raise
        lost, fresh = sorted(ck['cbs'].keys() - cbs.keys()), sorted(cbs.keys() - ck['cbs'].keys())
        if lost or fresh:
            warnings.warn(f'Checkpoint: callback states without a matching callback (ignored): {lost}; '
                          f'callbacks without a saved state (starting fresh): {fresh}.', stacklevel=3)
        self._plain_model().load_state_dict(ck['model'])
        for p, g in zip(self._plain_model().parameters(), ck.get('grads', repeat(None))):
            p.grad = None if g is None else g.to(p.device, p.dtype)
        opt_sd = ck['opt']
        if opt_sd is None and self.opt is not None:  # saved before the run had one: the optimizer starts afresh
            if self._fitting or self.opt is not self._own_lrs[0]:  # (in a resume, as this fit's start set it up)
                self.opt.state.clear()
            else:
                opt_sd = self.new_opt()[0].state_dict()
        if opt_sd is not None:
            pgs = self.opt.param_groups
            self.opt.load_state_dict(opt_sd)
            for old, new in zip(pgs, self.opt.param_groups, strict=True):
                old.update(new)
            put_param_groups(self.opt, pgs)  # keep the param-group dicts, which callbacks (e.g. RecorderCB) hold
        self.train_iter, self.epoch = ck['train_iter'], ck['epoch']
        self._at, self._n_done, self._phase_done = (ck['epoch'], ck['phase'], ck['start']), ck['iter'], False
        self._grads_partial, self._run_states = False, None


class TrainLearner(Learner):
    """A `Learner` whose training steps are methods: override them to change how a batch is trained. The model
    gets the batch's first `n_inp` items, the loss the next one (items after it, e.g. indices, are not used)."""
    def predict(self) -> None:
        check_batch(self.batch, self.n_inp, target=False)
        self.preds = call_model(self.model, *self.batch[:self.n_inp])

    def get_loss(self) -> None:
        check_batch(self.batch, self.n_inp)
        self.loss = call_loss(self.loss_func, self.preds, self.batch[self.n_inp])

    def backward(self) -> None:
        backward_loss(self.loss)

    def step(self) -> None:
        self.opt.step()

    def zero_grad(self) -> None:
        self.opt.zero_grad()


class MomentumLearner(TrainLearner):
    """The course's momentum by hand: instead of zeroing, gradients decay by `mom` and accumulate."""
    def __init__(self, model: nn.Module, dls: Any, loss_func: Callable, lr: float = 0.1,
                 cbs: Iterable[Callback] | None = None, opt_func: Callable = optim.SGD, mom: float = 0.85,
                 splitter: Callable | None = None, nan_guard: bool = True):
        self.mom = mom
        super().__init__(model, dls, loss_func, lr, cbs, opt_func, splitter, nan_guard)

    def zero_grad(self) -> None:
        with torch.no_grad():
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad *= self.mom
