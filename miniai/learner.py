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
(a `KeyboardInterrupt`, a bug in a callback) passes through, which is then re-raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn, optim

__all__ = ['CancelFitException', 'CancelEpochException', 'CancelBatchException', 'Callback', 'run_cbs',
           'with_cbs', 'Learner', 'TrainLearner', 'MomentumLearner']


class CancelFitException(Exception):
    """Raise in a callback to end the fit (skips `after_fit`; `cleanup_fit` still runs)."""


class CancelEpochException(Exception):
    """Raise in a callback to skip the rest of this epoch (and its `after_epoch`)."""


class CancelBatchException(Exception):
    """Raise in a callback to skip the rest of this batch (and its `after_batch`)."""


_cancels = {'fit': CancelFitException, 'epoch': CancelEpochException, 'batch': CancelBatchException}


class Callback:
    """Base class: define methods named after events (`before_fit(self, learn)`, ...); lower `order` runs first."""
    order = 0


def run_cbs(cbs: Iterable[Callback], method_nm: str, learn: Learner | None = None) -> None:
    """Call `method_nm(learn)` on each callback that has it, in `order`."""
    for cb in sorted(cbs, key=attrgetter('order')):
        method = getattr(cb, method_nm, None)
        if method is not None: method(learn)


class with_cbs:
    """Decorator: wrap a Learner method in the `before_`/`after_`/`cleanup_` events of one level."""
    def __init__(self, nm: str): self.nm = nm

    def __call__(self, f: Callable) -> Callable:
        nm, cancel = self.nm, _cancels[self.nm]

        def _f(o, *args, **kwargs):
            try:
                o.callback(f'before_{nm}')
                f(o, *args, **kwargs)
                o.callback(f'after_{nm}')
            except cancel: pass
            finally: o.callback(f'cleanup_{nm}')
        return _f


class Learner:
    """Runs `fit` over `dls` (with `.train` and `.valid` loaders), handing each step to callbacks.

    The loop state is public for callbacks: `epoch`, `iter`, `batch`, `preds`, `loss`, `training`,
    `n_epochs`, `opt`, `train_iter` (training batches done in this fit) and `pct_train` (fraction done).
    `splitter(model)`, if given, returns the param groups handed to `opt_func` (discriminative lrs).
    """
    def __init__(self, model: nn.Module, dls: Any = (0,), loss_func: Callable = F.mse_loss, lr: float = 0.1,
                 cbs: Iterable[Callback] | None = None, opt_func: Callable = optim.SGD,
                 splitter: Callable | None = None):
        self.model, self.dls, self.loss_func, self.lr = model, dls, loss_func, lr
        self.opt_func, self.splitter = opt_func, splitter
        self.cbs: list[Callback] = []
        self.opt: optim.Optimizer | None = None
        self._handlers: dict[str, list[Callable]] = {}
        self.epoch, self.iter, self.train_iter, self.n_epochs, self.n_iter = 0, 0, 0, 0, 0
        for cb in cbs or (): self.add_cb(cb)

    # -- callbacks ---------------------------------------------------------------------------------
    def add_cb(self, cb: Callback) -> Learner:
        """Add a callback (it stays for every later fit)."""
        self.cbs.append(cb)
        self._handlers.clear()
        return self

    def remove_cb(self, cb: Callback) -> Learner:
        """Remove a callback that was added."""
        self.cbs.remove(cb)
        self._handlers.clear()
        return self

    def callback(self, method_nm: str) -> None:
        """Run event `method_nm` on every callback that handles it (the sorted handlers are cached)."""
        handlers = self._handlers.get(method_nm)
        if handlers is None:
            cbs = sorted(self.cbs, key=attrgetter('order'))
            handlers = self._handlers[method_nm] = [m for cb in cbs if (m := getattr(cb, method_nm, None))]
        for m in handlers: m(self)

    def __getattr__(self, name: str):
        # `predict`, `get_loss`, ... of a plain Learner are events, so that e.g. `TrainCB` can supply them.
        if name in ('predict', 'get_loss', 'backward', 'step', 'zero_grad'): return lambda: self.callback(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- the loop ----------------------------------------------------------------------------------
    @property
    def training(self) -> bool: return self.model.training

    @property
    def pct_train(self) -> float:
        """Fraction of this fit's training batches done so far (0 → 1), for schedules and plots."""
        return self.train_iter / self.n_iter if self.n_iter else 0.

    def create_opt(self, lr: float | None = None) -> optim.Optimizer:
        """Build the optimizer from `opt_func` over the model's parameters (or the `splitter`'s groups)."""
        params = self.splitter(self.model) if self.splitter else self.model.parameters()
        self.opt = self.opt_func(params, lr=self.lr if lr is None else lr)
        return self.opt

    def fit(self, n_epochs: int = 1, train: bool = True, valid: bool = True, cbs: Iterable[Callback] | None = None,
            lr: float | None = None) -> None:
        """Train for `n_epochs`; `cbs` are added for this fit only (removed even if it raises)."""
        if not isinstance(n_epochs, int) or isinstance(n_epochs, bool) or n_epochs < 1:
            raise ValueError(f"fit(n_epochs={n_epochs!r}): n_epochs must be a positive whole number of epochs.")
        cbs = list(cbs or ())
        for cb in cbs: self.add_cb(cb)
        try:
            if self.opt is None: self.create_opt(lr)
            elif lr is not None:
                for pg in self.opt.param_groups: pg['lr'] = lr
            self.n_epochs, self.epochs = n_epochs, range(n_epochs)
            self.n_iter = n_epochs * len(self.dls.train) if train else 0
            self.train_iter = 0
            self._fit(train, valid)
        finally:
            for cb in cbs: self.remove_cb(cb)

    @with_cbs('fit')
    def _fit(self, train: bool, valid: bool) -> None:
        for self.epoch in self.epochs:
            if train: self.one_epoch(True)
            if valid:
                with torch.no_grad(): self.one_epoch(False)

    def one_epoch(self, training: bool) -> None:
        self.model.train(training)
        self.dl = self.dls.train if training else self.dls.valid
        self._one_epoch()

    @with_cbs('epoch')
    def _one_epoch(self) -> None:
        for self.iter, self.batch in enumerate(self.dl): self._one_batch()

    @with_cbs('batch')
    def _one_batch(self) -> None:
        self.predict()
        self.callback('after_predict')
        self.get_loss()
        self.callback('after_loss')
        if self.training:
            self.backward()
            self.callback('after_backward')
            self.step()
            self.callback('after_step')
            self.zero_grad()
            self.train_iter += 1


class TrainLearner(Learner):
    """A `Learner` whose training steps are methods: override them to change how a batch is trained."""
    def predict(self) -> None: self.preds = self.model(self.batch[0])
    def get_loss(self) -> None: self.loss = self.loss_func(self.preds, self.batch[1])
    def backward(self) -> None: self.loss.backward()
    def step(self) -> None: self.opt.step()
    def zero_grad(self) -> None: self.opt.zero_grad()


class MomentumLearner(TrainLearner):
    """The course's momentum by hand: instead of zeroing, gradients decay by `mom` and accumulate."""
    def __init__(self, model: nn.Module, dls: Any, loss_func: Callable, lr: float = 0.1,
                 cbs: Iterable[Callback] | None = None, opt_func: Callable = optim.SGD, mom: float = 0.85,
                 splitter: Callable | None = None):
        self.mom = mom
        super().__init__(model, dls, loss_func, lr, cbs, opt_func, splitter)

    def zero_grad(self) -> None:
        with torch.no_grad():
            for p in self.model.parameters():
                if p.grad is not None: p.grad *= self.mom
