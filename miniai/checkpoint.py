"""Checkpoints: atomic writes, safe reads, `CheckpointCB` (every N epochs and/or the best), and `InterruptCB`
(Ctrl-C stops the fit at the end of a batch, so the checkpoint saved then resumes exactly).

`learn.save(path)`, `learn.load(path)` and `learn.fit(n, resume=path)` are in `miniai.learner`; the files hold
only tensors, numbers, strings and plain containers, and are read with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import sys
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from .distributed import get_world_size, is_main_process
from .learner import Callback, Learner
from .metrics import check_mode, check_monitor, improves, monitored_value

__all__ = ['CheckpointError', 'atomic_save', 'checkpoint_file', 'load_checkpoint', 'check_model_state', 'CheckpointCB',
           'InterruptCB', 'FitInterrupted']


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model it is loaded into."""


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The file a checkpoint `path` names: itself, or a folder's `checkpoint.pt` (an existing folder, or a path
    ending in a slash)."""
    folder = str(path).endswith(('/', os.sep))
    path = Path(path)
    return path / 'checkpoint.pt' if folder or path.is_dir() else path


_ALLOWED = 'tensors, numbers, strings, lists and dicts'
# What `torch.load(..., weights_only=True)` reads back, by exact type (a numpy float is a `float` subclass, and a
# tensor subclass a `Tensor` one, that it refuses); other types are tried (`_loads_back`).
_PLAIN = frozenset({int, float, bool, str, bytes, type(None), torch.dtype, torch.device, torch.Size, torch.Tensor,
                    nn.Parameter})
_KEYS = frozenset({str, int, bool})
_CONTAINERS = frozenset({list, tuple, dict, OrderedDict})


def _refused(e: Exception) -> str | None:
    """The global that `torch.load(..., weights_only=True)` refused to unpickle, from its error `e`; else None."""
    m = re.search(r'WeightsUnpickler error: Unsupported global: GLOBAL (\S+)', str(e))
    return m and m[1]


def _whole_object(path: Path) -> str | None:
    """What the torch file at `path` holds instead of plain state: 'torchscript' (a `torch.jit.save` archive),
    'model' (a pickled `nn.Module`, whose pickle names `_modules`), else None."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if any(n.endswith('/constants.pkl') or '/code/' in n for n in names):
                return 'torchscript'
            return 'model' if any(b'_modules' in z.read(n) for n in names if n.endswith('/data.pkl')) else None
    except (OSError, zipfile.BadZipFile):
        return None


def _loads_back(x: Any) -> bool:
    """Whether `torch.load(..., weights_only=True)` reads `x` back: for types the walk does not know (e.g. the
    `Counter` of `MultiStepLR`'s state, a set, types allowed with `torch.serialization.add_safe_globals`)."""
    buf = io.BytesIO()
    try:
        torch.save(x, buf)
        buf.seek(0)
        torch.load(buf, weights_only=True)
    except Exception:
        return False
    return True


def _first_unplain(x: Any, top: bool = True) -> tuple[list[Any], str] | None:
    """The keys down to the first value in `x` that a checkpoint cannot hold, and what it is ('is a ...' or
    'has a key ...'); None if it can hold all of `x`. Values of types the walk does not know are tried with a round
    trip: of their container at once (below the `top` level), and one by one only if that fails."""
    t = type(x)
    if t in _PLAIN:
        return None
    if t in _CONTAINERS:
        odd = [k for k in x if type(k) not in _KEYS] if isinstance(x, dict) else []
        if odd and not _loads_back(odd):
            bad = next(k for k in odd if not _loads_back(k))
            return [], f'has a key of type {_type_name(bad)} ({bad!r:.40})'
        items, tried = (x.items() if isinstance(x, dict) else enumerate(x)), top
        for k, v in items:
            if type(v) in _PLAIN:
                continue
            if not tried and (type(v) not in _CONTAINERS and not _never_loads(v) or
                              isinstance(v, dict) and any(type(key) not in _KEYS for key in v)):
                tried = True
                if _loads_back(x):  # e.g. a list of sets, or a scheduler state holding a Counter
                    return None
            if (bad := _first_unplain(v, False)) is not None:
                bad[0].insert(0, k)
                return bad
        return None
    return None if not _never_loads(x) and _loads_back(x) else ([], f'is a {_type_name(x)}')


def _never_loads(x: Any) -> bool:
    """Whether `x` is of a type known to fail `torch.load(..., weights_only=True)`, not worth a round trip (NumPy)."""
    return type(x).__module__.partition('.')[0] == 'numpy'


def _type_name(x: Any) -> str:
    t = type(x)
    return t.__qualname__ if t.__module__ == 'builtins' else f'{t.__module__}.{t.__qualname__}'


def _check_plain(ck: dict[str, Any]) -> None:
    """Raise a `TypeError` naming the path in checkpoint `ck` (and the callback or loader whose state holds it)
    of the first value that `torch.load(..., weights_only=True)` would not read back."""
    if lazy := [k for k, v in ck['model'].items() if is_lazy(v)]:
        raise ValueError(f"Checkpoint: the model's lazy layers have no weights yet ({_names(lazy)}): run a batch "
                         'through the model (fit, or model(xb)) before saving it.')
    if (bad := _first_unplain(ck)) is None:
        return
    keys, what = bad
    where = f'{keys[0]}' + ''.join(f'[{k!r}]' for k in keys[1:]) if keys else 'the checkpoint'
    owner = (f'the state_dict of callback {keys[1]}' if keys[:1] == ['cbs'] and len(keys) > 1 else
             f'the state_dict of loader dls.{keys[2]}' if keys[1:2] == ['dls'] and len(keys) > 2 else
             'the state_dict that holds it')
    raise TypeError(f'Checkpoint: {where} {what}, which checkpoints (read with weights_only=True) '
                    f'cannot hold: make {owner} return only {_ALLOWED} (e.g. float(x) for a numpy number).')


_STALE_S = 60.  # a temporary checkpoint file untouched this long was left by a save killed mid-write


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save(obj)` to a temporary file beside `path` (an existing folder: its `checkpoint.pt`), fsync
    it, then rename it over `path`: a crash mid-write leaves the previous file intact. A failed write removes its
    temporary file; one left by a killed process (SIGKILL, the OOM killer) is removed by a save of `path` a
    minute later or more (one being written by another process at the same time is left alone). A miniai
    checkpoint (`Learner.state_dict()`) is first checked to hold only what loads back."""
    if isinstance(obj, dict) and obj.get('format') == 'miniai.checkpoint':
        _check_plain(obj)
    path = checkpoint_file(path)
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
    leftover = re.compile(rf'\.{re.escape(path.name)}\.[0-9a-f]{{32}}\.tmp')  # of earlier saves, killed mid-write
    for f in path.parent.iterdir():  # (not one being written now, e.g. by another process of a distributed run)
        with contextlib.suppress(FileNotFoundError):
            if leftover.fullmatch(f.name) and time.time() - f.stat().st_mtime > _STALE_S:
                f.unlink(missing_ok=True)
    if hasattr(os, 'O_DIRECTORY'):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `Learner.save` (a folder means its `checkpoint.pt`), onto the CPU."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise FileNotFoundError(f'No checkpoint at {path}: give the file written by learn.save or '
                                'CheckpointCB, or the folder of a `miniai fit` run.')
    _check_crcs(path)
    try:
        ck = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        what, whole = _refused(e), _whole_object(path)
        if whole == 'torchscript':
            raise CheckpointError(f'{path} is a TorchScript archive (torch.jit.save), not a checkpoint: load it with '
                                  'torch.jit.load(path).') from e
        if what and whole == 'model':
            raise CheckpointError(f'{path} holds a whole model (written by torch.save(model)), not a checkpoint: save '
                                  'model.state_dict() (it loads with model.load_state_dict(torch.load(path))), or '
                                  'a resumable checkpoint with learn.save(path).') from e
        if what:
            raise CheckpointError(f'{path} holds a {what}, which torch.load(..., weights_only=True) refuses: save '
                                  "state_dict()s, not whole objects (learn.save(path) writes a checkpoint); if a "
                                  f"callback's state_dict returned it, make it return only {_ALLOWED} (e.g. "
                                  'float(x) for a numpy number).') from e
        m = re.search(r'WeightsUnpickler error:\s*(.*)', str(e))
        why = m[1] if m else str(e).partition('\n')[0]
        raise CheckpointError(f'{path} is not a readable torch checkpoint ({type(e).__name__}: {why:.100}): it is '
                              'truncated or corrupt, or was not written by torch.save.') from e
    if not isinstance(ck, dict) or ck.get('format') != 'miniai.checkpoint':
        raise CheckpointError(f'{path} is not a miniai checkpoint (written by learn.save). A bare model '
                              'state_dict loads with model.load_state_dict(torch.load(path)).')
    if 'version' in ck and ck['version'] != _VERSION:
        raise CheckpointError(f"{path} was saved by another miniai version (checkpoint version {ck['version']!r}); "
                              f'this one reads version {_VERSION}: load it with the miniai that saved it.')
    if missing := [k for k in _REQUIRED if k not in ck]:
        raise CheckpointError(f'{path} says it is a miniai checkpoint but lacks {", ".join(missing)}: it was not '
                              'written by learn.save (or was edited). Save one with learn.save(path).')
    return ck


_VERSION = 1  # of the checkpoints `Learner.state_dict()` writes
# What every checkpoint holds; 'grads', 'should_stop' and 'n_batches' came later, and may be missing.
_REQUIRED = ('version', 'model', 'opt', 'opt_type', 'epoch', 'phase', 'iter', 'train_iter', 'n_epochs', 'start',
             'rng_now', 'cbs')


def _check_crcs(path: Path) -> None:
    """Raise a `CheckpointError` if the zip archive at `path` (torch's format) fails its CRC checks, which
    `torch.load` skips (a flipped bit would load as a wrong weight); other files are left to `torch.load`."""
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile):
        return  # not a zip (empty, truncated, text, torch's legacy format): torch.load says what it is
    except Exception as e:  # (zipfile raises many kinds on damaged records)
        z, why = None, f'its zip records are damaged ({type(e).__name__}: {e})'
    if z is not None:
        with z:
            try:
                bad = z.testzip()
                why = bad and f'its {bad} fails the zip CRC check'
            except Exception as e:
                why = f'its zip records are damaged ({type(e).__name__}: {e})'
    if why:
        raise CheckpointError(f'{path} is corrupt: {why} (damaged on disk or in a copy), so its contents cannot be '
                              'trusted. Load another copy: the best checkpoint (best.pt or <stem>_best.pt), an '
                              'earlier run or a backup.')


def _names(keys: list[str], n: int = 10) -> str:
    return ', '.join(keys[:n]) + (f' (and {len(keys) - n} more)' if len(keys) > n else '')


_LAZY_KNOWN = (nn.LazyLinear, nn.LazyConv1d, nn.LazyConv2d, nn.LazyConv3d, nn.LazyConvTranspose1d,
               nn.LazyConvTranspose2d, nn.LazyConvTranspose3d)


def _lazy_shape(m: nn.Module, name: str, n: int) -> list[int | str]:
    """The shape of parameter `name` of lazy layer `m` (not yet initialised) for `n` dims, as far as `m` knows it:
    its output size and kernel ('?' for the sizes its first input gives), for torch's lazy linear and conv layers;
    other lazy layers (norms, a user's) are taken to know none."""
    if not isinstance(m, _LAZY_KNOWN) or name not in ('weight', 'bias'):
        return ['?'] * n
    out = m.out_features if isinstance(m, nn.LazyLinear) else m.out_channels
    if name == 'bias':
        return [out]
    ks = list(getattr(m, 'kernel_size', ()))
    if getattr(m, 'transposed', False):  # ConvTranspose: [in, out / groups, *kernel]
        return ['?', out // m.groups, *ks]
    return [out, '?', *ks]


def _shape_fits(saved: torch.Size, want: list[int | str]) -> bool:
    return len(saved) == len(want) and all(w == '?' or s == w for s, w in zip(saved, want, strict=True))


def check_model_state(model: nn.Module, sd: dict[str, torch.Tensor], path: Any = 'the checkpoint') -> None:
    """Raise a `CheckpointError` naming the missing, unexpected and mismatched-shape keys if `sd` does not fit
    `model` exactly. A lazy layer not yet initialised takes the sizes it infers from its input (loading
    initialises it), but not another output size or kernel."""
    own = model.state_dict()
    missing, unexpected = [k for k in own if k not in sd], [k for k in sd if k not in own]
    want = {k: _lazy_shape(model.get_submodule(k.rpartition('.')[0]), k.rpartition('.')[2], sd[k].ndim)
            if is_lazy(v) else list(v.shape) for k, v in own.items() if k in sd}
    shapes = [f'{k} (checkpoint {list(sd[k].shape)}, model {w})' for k, w in want.items()
              if not _shape_fits(sd[k].shape, w)]
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
    (its validation value, e.g. 'accuracy') or 'train_<name>'; `mode` may be left out for a loss, and must be
    given for anything else (e.g. mode='max' for 'accuracy'). `path` is the checkpoint file, with the best
    beside it as `<stem>_best.pt`; or a folder (an existing one, or a name without a suffix), holding
    `checkpoint.pt` and `best.pt`. `every=0` keeps only the best. Only the main process of a distributed run
    writes. Runs after `MetricsCB` and `ProgressCB`, so their state for the epoch is in the checkpoint; does
    not run during `lr_find`, and saves nothing in a validation-only fit (`fit(train=False)`), whose checkpoint
    would replace the run's with one that trained nothing. Its state holds the best with its monitor and mode; a
    resume with others is refused.
    """
    order = 10
    skip_in_lr_find = True

    def __init__(self, path: str | os.PathLike = 'checkpoint.pt', every: int = 1, monitor: str | None = None,
                 mode: str | None = None):
        mode = check_mode(monitor, mode, 'CheckpointCB')
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
        if self.monitor is not None and 'train' in learn.phases:  # (a validation-only fit saves nothing)
            check_monitor(learn, self.monitor, 'CheckpointCB')

    def after_epoch(self, learn: Learner) -> None:
        if learn.phase != learn.phases[-1] or 'train' not in learn.phases or not is_main_process():
            return  # save once the epoch's last phase is done; nothing from a validation-only fit
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
