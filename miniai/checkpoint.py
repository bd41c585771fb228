"""Checkpoints: atomic writes, safe reads, `CheckpointCB` (every N epochs and/or the best), and `InterruptCB`
(Ctrl-C stops the fit at the end of a batch, so the checkpoint saved then resumes exactly).

`learn.save(path)`, `learn.load(path)` and `learn.fit(n, resume=path)` are in `miniai.learner`; the files hold
only tensors, numbers, strings and plain containers, and are read with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import os
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


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save(obj)` to a temporary file beside `path`, fsync it, then rename it over `path`: a crash
    mid-write leaves the previous file intact (and no temporary file)."""
    path = Path(path)
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


class CheckpointCB(Callback):
    """Saves a resumable checkpoint (`learn.save`) every `every` epochs and after the last one (the one after which
    `learn.should_stop` ends the fit, if set) and, with
    `monitor`, whenever that `MetricsCB` value is the best so far (the lowest for `mode='min'`, else highest).

    `monitor` names a column as `miniai fit`'s metrics.json does: 'valid_loss', 'train_loss', a metric's name
    (its validation value, e.g. 'accuracy') or 'train_<name>'. `path` is the checkpoint file, with the best
    beside it as `<stem>_best.pt`; or a folder (an existing one, or a name without a suffix), holding
    `checkpoint.pt` and `best.pt`. `every=0` keeps only the best. Only the main process of a distributed run
    writes. Runs after `MetricsCB` and `ProgressCB`, so their state for the epoch is in the checkpoint; does
    not run during `lr_find`.
    """
    order = 10
    skip_in_lr_find = True

    def __init__(self, path: str | os.PathLike = 'checkpoint.pt', every: int = 1, monitor: str | None = None,
                 mode: str = 'min'):
        if mode not in ('min', 'max'):
            raise ValueError(f"CheckpointCB: mode must be 'min' or 'max', got {mode!r}")
        if not every and monitor is None:
            raise ValueError('CheckpointCB: nothing to save; give every >= 1 (epochs) and/or a monitor')
        p = Path(path)
        folder = p.is_dir() or not p.suffix
        self.path = p / 'checkpoint.pt' if folder else p
        self.best_path = p / 'best.pt' if folder else p.with_name(f'{p.stem}_best{p.suffix}')
        self.every, self.monitor, self.mode = every, monitor, mode
        self.best: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {'best': self.best}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
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
