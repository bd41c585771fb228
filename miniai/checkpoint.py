"""Checkpoints: atomic writes, safe reads, `CheckpointCB` (every N epochs and/or the best), and `InterruptCB`
(Ctrl-C stops the fit at the end of a batch, so the checkpoint saved then resumes exactly).

`learn.save(path)`, `learn.load(path)` and `learn.fit(n, resume=path)` are in `miniai.learner`; the files hold
only tensors, numbers, strings and plain containers, and are read with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .distributed import get_world_size, is_main_process
from .learner import Callback, Learner
from .metrics import check_monitor, improves, monitored_value

__all__ = ['CheckpointError', 'atomic_save', 'load_checkpoint', 'check_model_state', 'CheckpointCB',
           'InterruptCB', 'FitInterrupted']


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model it is loaded into."""


def _file(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / 'checkpoint.pt' if path.is_dir() else path


_ALLOWED = 'tensors, numbers, strings, lists and dicts'


def _refused(e: Exception) -> str | None:
    """What `torch.load(..., weights_only=True)` refused to unpickle, from its error `e`; None for other errors."""
    m = re.search(r'WeightsUnpickler error: (?:Unsupported global: GLOBAL (\S+)|(.*))', str(e))
    return m and (m[1] or m[2])


def _check_states_load(states: dict[str, Any]) -> None:
    """Raise a `TypeError` naming the first callback whose state (in `states`, keyed as in a checkpoint) would
    not load back with `torch.load(..., weights_only=True)`."""
    for k, sd in states.items():
        buf = io.BytesIO()
        torch.save(sd, buf)
        buf.seek(0)
        try:
            torch.load(buf, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as e:
            raise TypeError(f'Checkpoint: the state_dict of callback {k} holds a {_refused(e)}, which checkpoints '
                            f'(read with weights_only=True) cannot hold: make it return only {_ALLOWED} (e.g. '
                            'float(x) for a numpy number).') from e


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save(obj)` to a temporary file beside `path` (an existing folder: its `checkpoint.pt`), fsync
    it, then rename it over `path`: a crash mid-write leaves the previous file intact (and no temporary file).
    The callback states of a miniai checkpoint (`Learner.state_dict()`) are first checked to load back."""
    if isinstance(obj, dict) and obj.get('format') == 'miniai.checkpoint':
        _check_states_load(obj['cbs'])
    path = _file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{uuid.uuid4().hex}.tmp')
    try:
        with open(tmp, 'xb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if hasattr(os, 'O_DIRECTORY'):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `Learner.save` (a folder means its `checkpoint.pt`), onto the CPU."""
    path = _file(path)
    if not path.is_file():
        raise FileNotFoundError(f'No checkpoint at {path}: give the file written by learn.save or '
                                'CheckpointCB, or the folder of a `miniai fit` run.')
    try:
        ck = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        if what := _refused(e):
            raise CheckpointError(f'{path} holds a {what}, which torch.load(..., weights_only=True) does not allow '
                                  f"(the file is not corrupt): a callback's state_dict must return only {_ALLOWED} "
                                  '(e.g. float(x) for a numpy number).') from e
        raise CheckpointError(f'{path} cannot be read as a checkpoint ({type(e).__name__}: {e}); it may be '
                              'truncated or corrupt, or not a torch file.') from e
    if not isinstance(ck, dict) or ck.get('format') != 'miniai.checkpoint':
        raise CheckpointError(f'{path} is not a miniai checkpoint (written by learn.save). A bare model '
                              'state_dict loads with model.load_state_dict(torch.load(path)).')
    return ck


def _names(keys: list[str], n: int = 10) -> str:
    return ', '.join(keys[:n]) + (f' (and {len(keys) - n} more)' if len(keys) > n else '')


def check_model_state(model: nn.Module, sd: dict[str, torch.Tensor], path: Any = 'the checkpoint') -> None:
    """Raise a `CheckpointError` naming the missing, unexpected and mismatched-shape keys if `sd` does not fit
    `model` exactly."""
    own = model.state_dict()
    missing, unexpected = [k for k in own if k not in sd], [k for k in sd if k not in own]
    shapes = [f'{k} (checkpoint {list(sd[k].shape)}, model {list(v.shape)})' for k, v in own.items()
              if k in sd and sd[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return
    found = (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', shapes))
    problems = [f'{what}: {_names(ks)}' for what, ks in found if ks]
    raise CheckpointError(f'{path} was saved from a different model: {"; ".join(problems)}. Build the model '
                          'exactly as in the run that saved it (same architecture and sizes).')


def check_monitor_state(cb: Callback, sd: dict[str, Any]) -> None:
    """Raise if state `sd` of `cb` (a `CheckpointCB` or `EarlyStoppingCB`) was saved for another monitor or
    mode, so its best would be another value's; states saved before they were kept pass."""
    name, saved = type(cb).__name__, (sd.get('monitor', cb.monitor), sd.get('mode', cb.mode))
    if saved != (cb.monitor, cb.mode):
        raise ValueError(f"{name}: the checkpoint's {name} watched monitor={saved[0]!r}, mode={saved[1]!r}; this one "
                         f'monitor={cb.monitor!r}, mode={cb.mode!r}. Its best is not comparable: build it with the '
                         'monitor and mode of the run that saved the checkpoint.')


class CheckpointCB(Callback):
    """Saves a resumable checkpoint (`learn.save`) every `every` epochs and after the last one (the one after which
    `learn.should_stop` ends the fit, if set) and, with
    `monitor`, whenever that `MetricsCB` value is the best so far (the lowest for `mode='min'`, else highest).

    `monitor` names a column as `miniai fit`'s metrics.json does: 'valid_loss', 'train_loss', a metric's name
    (its validation value, e.g. 'accuracy') or 'train_<name>'. `path` is the checkpoint file, with the best
    beside it as `<stem>_best.pt`; or a folder (an existing one, or a name without a suffix), holding
    `checkpoint.pt` and `best.pt`. `every=0` keeps only the best. Only the main process of a distributed run
    writes. Runs after `MetricsCB` and `ProgressCB`, so their state for the epoch is in the checkpoint; does
    not run during `lr_find`. Its state holds the best with its monitor and mode; a resume with others is
    refused.
    """
    order = 10
    skip_in_lr_find = True

    def __init__(self, path: str | os.PathLike = 'checkpoint.pt', every: int = 1, monitor: str | None = None,
                 mode: str = 'min'):
        if mode not in ('min', 'max'):
            raise ValueError(f"CheckpointCB: mode must be 'min' or 'max', got {mode!r}")
        if not isinstance(every, int) or every < 0:
            raise ValueError(f'CheckpointCB: every is a number of epochs, 1 or more (0: only the best, with a '
                             f'monitor); got {every!r}')
        if not every and monitor is None:
            raise ValueError('CheckpointCB: nothing to save; give every >= 1 (epochs) and/or a monitor')
        p = Path(path)
        folder = p.is_dir() or not p.suffix
        self.path = p / 'checkpoint.pt' if folder else p
        self.best_path = p / 'best.pt' if folder else p.with_name(f'{p.stem}_best{p.suffix}')
        self.every, self.monitor, self.mode = every, monitor, mode
        self.best: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {'best': self.best, 'monitor': self.monitor, 'mode': self.mode}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        check_monitor_state(self, sd)
        self.best = sd['best']

    def before_fit(self, learn: Learner) -> None:
        if self.monitor is not None:
            check_monitor(learn, self.monitor, 'CheckpointCB')

    def after_epoch(self, learn: Learner) -> None:
        if learn.phase != learn.phases[-1] or not is_main_process():
            return  # save once the epoch's last phase is done
        if self.monitor is not None:
            v = monitored_value(learn, self.monitor)
            if v is not None and improves(v, self.best, self.mode):
                self.best = v
                learn.save(self.best_path)
        n = learn.epoch + 1
        if self.every and (n % self.every == 0 or n == learn.n_epochs or learn.should_stop):
            learn.save(self.path)


class FitInterrupted(KeyboardInterrupt):
    """The `KeyboardInterrupt` that `InterruptCB` raises between batches: the Learner's state is whole, so a
    checkpoint saved now (`learn.save`) resumes exactly. A plain `KeyboardInterrupt` may come mid-batch (after
    the step, before the counters), when a checkpoint would not resume exactly."""


class InterruptCB(Callback):
    """Ctrl-C (SIGINT) during a fit raises `FitInterrupted` at the end of the current batch (or, after the last
    batch, at the end of the fit), so that a checkpoint saved then resumes exactly; a second Ctrl-C raises a
    plain `KeyboardInterrupt` at once. Only in the main thread (where Python handles signals) of a
    single-process run (the processes of a distributed run could stop at different batches, and hang); the
    previous handler is put back when the fit ends."""
    order = 100  # after every other `after_batch`: the batch is complete when it stops

    def __init__(self):
        self.requested, self._old = False, None

    def before_fit(self, learn: Learner) -> None:
        self.requested = False
        if threading.current_thread() is threading.main_thread() and get_world_size() == 1:
            self._old = signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print('\nCtrl-C: stopping at the end of this batch (press it again to stop at once)', file=sys.stderr)

    def after_batch(self, learn: Learner) -> None:
        if self.requested:
            raise FitInterrupted

    after_fit = after_batch  # a Ctrl-C after the last batch (e.g. while the last checkpoint was written)

    def cleanup_fit(self, learn: Learner) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
