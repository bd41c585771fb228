"""Guards for the training loop: errors that name the problem and its fix instead of a deep torch traceback.

`Learner` checks each training loss before `backward` (`NonFiniteLossError`); `TrainLearner` and `TrainCB`
check each batch's format (`check_batch`) and turn a failing model or loss call into an error giving the
shapes, dtypes and devices involved (`call_model`, `call_loss`); `BaseSchedCB` warns when a scheduler was
built for another number of steps than the fit takes (`check_sched_steps`), and `BatchSchedCB` when a fit ended
short of its schedule's end (`check_sched_end`).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from numbers import Integral
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['NonFiniteLossError', 'BatchError', 'DeviceMismatchError', 'check_batch', 'call_model', 'backward_loss',
           'call_loss', 'check_sched_steps', 'check_sched_end']


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the fit stopped before `backward`, so that batch changed no
    weights (the message says if an earlier step, with a finite loss but non-finite gradients, already had)."""


class BatchError(ValueError):
    """A batch that the model or the loss cannot use; the message says what is wrong and how to fix it."""


class DeviceMismatchError(RuntimeError):
    """The model and the batch are on different devices."""


def is_whole(v: Any, least: int = 0) -> bool:
    """Whether `v` is a whole number (a Python or NumPy integer, not a bool) of at least `least`."""
    return isinstance(v, Integral) and not isinstance(v, bool) and v >= least


def _desc(o: Any) -> str:
    if isinstance(o, Tensor):
        return f'{o.dtype} {list(o.shape)} on {o.device}'
    return type(o).__name__


def check_batch(batch: Any, n_inp: int = 1, target: bool = True) -> None:
    """Raise a `BatchError` unless `batch` is a tuple or list of `n_inp` inputs followed by the target(s)
    (`target=False`: the inputs at least, as predicting needs)."""
    if isinstance(batch, (tuple, list)) and len(batch) >= n_inp + target:
        return
    if isinstance(batch, dict):
        got = f'a dict with keys {list(batch)}'
    elif isinstance(batch, Tensor):
        got = f'a bare tensor ({_desc(batch)})'
    elif isinstance(batch, (tuple, list)):
        got = f'a {type(batch).__name__} of {len(batch)}'
    else:
        got = _desc(batch)
    xs = ', '.join(['x'] * n_inp)
    inputs_only = f' For get_preds, ({xs},) tuples will do.' if not target else ''
    raise BatchError(f'Batches must be ({xs}, y) tuples, but the DataLoader gave {got}.{inputs_only} Make the dataset '
                     'return such tuples (e.g. TensorDataset(x, y)), collate dict items into tuples '
                     '(DataLoaders.from_dd(..., as_tuple=True)), or convert each batch with a BatchTransformCB.')


def _devices(xs: tuple) -> set:
    return {o.device for o in xs if isinstance(o, Tensor)}


def call_model(model: nn.Module, *xs: Any) -> Any:
    """`model(*xs)`; if it fails because model and `xs` are on different devices, a `DeviceMismatchError`."""
    try:
        return model(*xs)
    except RuntimeError as e:
        p = next(model.parameters(), None)
        if p is None or not (_devices(xs) - {p.device}):
            raise
        raise DeviceMismatchError(
            f'The model is on {p.device} but the batch is on {", ".join(map(str, _devices(xs)))}: add '
            "DeviceCB() to the Learner's cbs (it puts the model and every batch on one device), or move them "
            'yourself.'
        ) from e


def _label_hints(preds: Any, y: Any) -> list[str]:
    if not (isinstance(preds, Tensor) and isinstance(y, Tensor) and preds.ndim == 2):
        return []
    hints, c = [], preds.shape[1]
    if c == 1:  # one output per item: a binary loss, which wants float targets shaped like the predictions
        bad = y.shape != preds.shape or not y.is_floating_point()
        return [f'with one output per item, targets must be floats of shape {list(preds.shape)}: use '
                f'y.float(){".unsqueeze(1)" if y.shape == preds.shape[:1] else ""}'] if bad else []
    if y.ndim == 2 and y.shape[1] == 1 and c > 1:
        hints.append(f'class-index targets must have shape [{len(y)}], not {list(y.shape)}: use y.squeeze(1)')
    if y.is_floating_point() and y.shape != preds.shape:
        hints.append('class-index targets must be integers: convert them with y.long()')
    if not y.is_floating_point() and y.dtype != torch.int64:
        hints.append(f'class-index targets must be int64, not {y.dtype}: convert them with y.long()')
    if not y.is_floating_point() and y.numel() and not 0 <= int(y.min()) <= int(y.max()) < c:
        hints.append(f'labels range {int(y.min())}..{int(y.max())} but the model has {c} outputs (labels '
                     f"must be 0..{c - 1}): check the labels or the model's last layer")
    return hints


def call_loss(loss_func: Callable, preds: Any, *ys: Any) -> Tensor:
    """`loss_func(preds, *ys)`; if it fails, a `BatchError` with the shapes and dtypes and the likely fix."""
    name = getattr(loss_func, '__name__', type(loss_func).__name__)
    try:
        loss = loss_func(preds, *ys)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        if not _takes(loss_func, preds, *ys):
            raise TypeError(f'loss_func {name} cannot be called as {name}(preds, target): {e}. Fix: give a loss '
                            'function of (preds, targets), e.g. F.cross_entropy.') from e
        hints = (_label_hints(preds, ys[0]) if len(ys) == 1 else []) or [
            f'make the targets the dtype and shape that {name} expects for these predictions']
        if loss_func is F.mse_loss and len(ys) == 1 and isinstance(ys[0], Tensor) and not ys[0].is_floating_point():
            hints.append("mse_loss is the Learner's default loss_func: for class labels pass F.cross_entropy")
        raise BatchError(f'{name}(preds, target) failed for preds {_desc(preds)} and target '
                         f'{", ".join(map(_desc, ys))}: {e}. Fix: {"; ".join(hints)}.') from e
    if not isinstance(loss, Tensor):
        raise BatchError(f'{name} returned a {type(loss).__name__}; the loss must be a tensor to backpropagate '
                         'from: keep it one (no .item() or float()).')
    return loss


def _takes(f: Callable, *args: Any) -> bool:
    """Whether `f`'s signature takes `args` (True when it cannot be read)."""
    try:
        inspect.signature(f).bind(*args)
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins)
        pass
    return True


def backward_loss(loss: Tensor) -> None:
    """`loss.backward()`; a loss of more than one element gets a `BatchError` that says how to reduce it."""
    if loss.numel() != 1:
        raise BatchError(f'The loss is {_desc(loss)}; backward needs a one-element loss: reduce it in the loss '
                         "function (e.g. reduction='mean'), or override the Learner's backward.")
    loss.backward()


def _sched_len(sched: Any) -> tuple[str | None, Any]:
    """The attribute holding `sched`'s length (`total_steps` or `T_max`) and its value; (None, None) for neither."""
    attr = next((a for a in ('total_steps', 'T_max') if getattr(sched, a, None) is not None), None)
    return attr, getattr(sched, attr, None) if attr else None


def check_sched_steps(sched: Any, n_steps: int, who: str, per_batch: bool = False) -> None:
    """Warn if `sched` was built for another number of steps (`total_steps` or `T_max`) than `n_steps` (`per_batch`:
    the fit's training batches, of which gradient accumulation steps the scheduler after only some)."""
    attr, total = _sched_len(sched)
    if total is None or not n_steps or total == n_steps:
        return
    past_end = {'T_max': 'past step T_max the cosine climbs back up towards the initial lr',
                'total_steps': 'stepped past total_steps it raises an error mid-fit'}[attr]
    what = (f'ends early: {past_end}' if total < n_steps
            else 'does not finish: the lr never reaches the end of the schedule')
    fix = (f' (epochs * len(dls.train)); but with gradient accumulation over k batches, which steps the optimizer '
           f'and so the scheduler once every k batches, build it with the optimizer steps the fit takes (about '
           f'{n_steps}/k), and then this warning is expected' if per_batch and total < n_steps else '')
    warnings.warn(f'{who}: {type(sched).__name__} has {attr}={total} but this fit takes {n_steps} '
                  f'{"training batches" if per_batch else "scheduler steps"}, so the schedule {what}. Build it '
                  f'with {attr}={n_steps}{fix}.', stacklevel=4)


def check_sched_end(sched: Any, n_steps: int, who: str) -> None:
    """After a fit that went through all its `n_steps` training batches: warn if `sched`, stepped after each one that
    stepped the optimizer, did not reach the end of its `total_steps` (or `T_max`), unless it is longer than
    `n_steps` (`check_sched_steps` said so before the fit)."""
    attr, total = _sched_len(sched)
    steps = getattr(sched, 'last_epoch', None)
    if total is None or steps is None or not steps < total <= n_steps:
        return
    warnings.warn(f'{who}: {type(sched).__name__} has {attr}={total} but this run stepped it {steps} times, one per '
                  'optimizer step (a batch cancelled before its step, as gradient accumulation does, steps neither), '
                  f'so the schedule stopped {steps / total:.0%} of the way to its end. Build it with {attr}={steps}: '
                  'the optimizer steps the fit takes.', stacklevel=4)
