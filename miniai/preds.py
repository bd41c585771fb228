"""Predictions: `learn.get_preds()` runs the model over a loader as a fit's validation does, and gathers its
outputs and the targets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import torch
from torch import Tensor

from .data import DataLoaders
from .learner import Callback, CancelBatchException, Learner, check_loader
from .lr_finder import PAUSED_IN_LR_FIND
from .no_trace import no_trace
from .progress import ProgressCB

__all__ = ['GatherPredsCB', 'get_preds']


class SizedLoader(Protocol):
    """What `get_preds` takes as `dl`: batches to iterate over, and their number (a DataLoader, a list of batches)."""
    def __iter__(self) -> Iterator: ...
    def __len__(self) -> int: ...


class GatherPredsCB(Callback):
    """At validation, keeps each batch's `preds` (after every other callback's `after_predict`, e.g. `FlipTTACB`)
    and targets (the items after the `n_inp` inputs, which must be tensors; none for batches of inputs only), then
    skips the rest of the batch: no loss is computed, so batches need no targets. Half-precision predictions
    (under `MixedPrecision`) are kept as float32, as fastai does."""
    order = 100

    def before_fit(self, learn: Learner) -> None:
        self.preds: list[Tensor] = []
        self.targets: list[tuple] = []

    def after_predict(self, learn: Learner) -> None:
        if learn.training:
            return
        if not isinstance(learn.preds, Tensor):
            raise TypeError(f'get_preds: the model returned a {type(learn.preds).__name__}; it gathers tensors '
                            '(override the Learner\'s predict to pick the tensor to keep).')
        preds = learn.preds.detach()
        self.preds.append(preds.float() if preds.dtype in (torch.float16, torch.bfloat16) else preds)
        targets = tuple(learn.batch[learn.n_inp:])
        for i, t in enumerate(targets, learn.n_inp):
            if not isinstance(t, Tensor):
                raise TypeError(f'get_preds: item {i} of the batches (counting from 0) is a {type(t).__name__}, not '
                                'a tensor; it gathers the items after the inputs as tensor targets. Pass get_preds a '
                                'loader whose batches hold only tensors (e.g. (x, y), without names).')
        self.targets.append(targets)
        raise CancelBatchException()

    def result(self) -> tuple[Tensor, Tensor | tuple[Tensor, ...] | None]:
        """The gathered predictions and targets, concatenated on the CPU (see `get_preds`)."""
        if not self.preds:
            raise ValueError('get_preds: the loader gave no batches.')
        preds = torch.cat(self.preds).cpu()
        n_targets = {len(t) for t in self.targets}
        if n_targets == {0}:
            return preds, None
        if len(n_targets) > 1:
            raise ValueError(f'get_preds: some batches have targets and some not ({sorted(n_targets)} items after '
                             'the inputs); give a loader whose batches all have them, or none.')
        ys = tuple(torch.cat(y).cpu() for y in zip(*self.targets))
        return preds, ys[0] if len(ys) == 1 else ys


def _paused(cb: Callback) -> bool:
    """Callbacks that record or schedule (those `lr_find` pauses, and progress bars) do not run in `get_preds`."""
    return isinstance(cb, (*PAUSED_IN_LR_FIND, ProgressCB)) or getattr(cb, 'skip_in_lr_find', False)


def get_preds(learn: Learner, dl: SizedLoader | None = None, act: Callable[[Tensor], Tensor] | None = None
              ) -> tuple[Tensor, Tensor | tuple[Tensor, ...] | None]:
    """The model's outputs over `dl` (default: `learn.dls.valid`) and the batches' targets, on the CPU.

    Runs like a fit's validation, in eval mode without gradients, with the Learner's callbacks that shape the
    batches and predictions (`DeviceCB`, `BatchTransformCB`, `MixedPrecision`, `FlipTTACB`, ...); the ones that
    record or schedule (`MetricsCB`, `RecorderCB`, schedulers, hooks, `CheckpointCB`, `ProgressCB`) do not run,
    and, as `lr_find`, it leaves no trace (forward hooks put on the model by hand, outside a callback, do run).
    Batches are `(x, y)` or inputs only (`(x,)`: targets are then None); with several targets, a tuple of them;
    items after the inputs that are not tensors (e.g. names) are refused.
    `act` maps the outputs, e.g. `partial(torch.softmax, dim=1)` for probabilities from logits. They come in the
    loader's order: a shuffled loader's (and without the items that `drop_last` drops; its position is put back
    after); use an unshuffled loader to line them up with a dataset.
    Under `DDPCB` each process gets the predictions of its share of `dl`.
    """
    learn.refuse_in_fit('get_preds')
    if dl is None:
        learn._check_loaders(('valid',))  # as `fit` does
        dl = learn.dls.valid
    else:
        check_loader(dl, 'get_preds: dl')
    cb = GatherPredsCB()
    with no_trace(learn, paused=_paused, loaders=[dl]):
        learn.dls = DataLoaders(getattr(learn.dls, 'train', None), dl)
        learn.fit(1, train=False, cbs=[cb])
    preds, targets = cb.result()
    return (preds if act is None else act(preds)), targets


Learner.get_preds = get_preds
