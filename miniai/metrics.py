"""`MetricsCB`: torcheval metrics and the mean loss per epoch, kept on the training device until read."""

from __future__ import annotations

import math
import time
import warnings
from copy import copy
from typing import Any

import torch
from torcheval.metrics import Mean, Metric

from .distributed import is_main_process
from .learner import Callback, Learner

__all__ = ['MetricsCB', 'format_time', 'fit_metrics', 'check_monitor', 'monitored_value', 'improves', 'check_mode',
           'is_loss']


def format_time(t: float) -> str:
    """Seconds as `m:ss` (or `h:mm:ss`), as fastai prints them."""
    t = int(t)
    h, m, s = t // 3600, (t // 60) % 60, t % 60
    return f'{h}:{m:02d}:{s:02d}' if h else f'{m:02d}:{s:02d}'


RESERVED = ('loss', 'epoch', 'train', 'time')


def fit_metrics(learn: Learner) -> MetricsCB | None:
    """The `MetricsCB` of the Learner's current fit, or None (`learn.metrics` stays after its fit, to be read)."""
    m = getattr(learn, 'metrics', None)
    return m if any(cb is m for cb in learn.cbs) else None


def check_monitor(learn: Learner, monitor: str, who: str) -> None:
    """Raise a `ValueError` naming the choices unless this fit's `MetricsCB` gives a value named `monitor`, as
    `miniai fit`'s metrics.json names them: 'valid_loss', 'train_loss', a metric's name (its validation value,
    e.g. 'accuracy') or 'train_<name>'. `who` is the callback that asks, for the message."""
    metrics = fit_metrics(learn)
    if metrics is None:
        raise ValueError(f'{who}(monitor={monitor!r}) needs a MetricsCB in the Learner.')
    names = [f'{ph}_loss' for ph in learn.phases] + [
        n if ph == 'valid' else f'train_{n}' for ph in learn.phases for n in metrics.metrics]
    if monitor not in names:
        raise ValueError(f"{who}: monitor={monitor!r} is not one of this fit's values {names}.")


def monitored_value(learn: Learner, monitor: str) -> float | None:
    """The value named `monitor` (see `check_monitor`) of the current epoch, or None if it has none yet."""
    row = {}
    for h in learn.metrics.history[-len(learn.phases):]:
        if h['epoch'] == learn.epoch:
            pre = 'train_' if h['train'] else ''
            row.update({pre + k: v for k, v in h.items() if k not in RESERVED})
            row['train_loss' if h['train'] else 'valid_loss'] = h['loss']
    return row.get(monitor)


def is_loss(monitor: str) -> bool:
    """Whether the `MetricsCB` value `monitor` is a loss ('valid_loss', 'train_loss'): lower is better."""
    return monitor.endswith('loss')


def check_mode(monitor: str | None, mode: str | None, who: str) -> str:
    """`mode` ('min' or 'max'); None gives 'min', for a loss (or no monitor). A `ValueError` for another value, or
    for None with a monitor that is not a loss: whether higher is better is the user's to say."""
    if mode is None and monitor is not None and not is_loss(monitor):
        raise ValueError(f"{who}(monitor={monitor!r}): say which way is better: mode='max' if higher is (accuracy), "
                         "mode='min' if lower is (an error).")
    if mode not in (None, 'min', 'max'):
        raise ValueError(f"{who}: mode must be 'min' or 'max', got {mode!r}")
    return mode or 'min'


def improves(v: float, best: float | None, mode: str, min_delta: float = 0.) -> bool:
    """Whether `v` beats `best` (None: nothing yet) by more than `min_delta`: lower for `mode='min'`, higher for
    'max'. A NaN or infinite `v` never does."""
    if not math.isfinite(v):
        return False
    if best is None:
        return True
    return v < best - min_delta if mode == 'min' else v > best + min_delta


def _n_items(learn: Learner) -> int:
    """How many items the batch holds, for the loss mean: the first dim of its target (of its first tensor, for a
    tuple or dict of them), else of the predictions; 1 for an unbatched item. (An input may be a tuple, or
    sequence-first.)"""
    b = learn.batch
    for t in (b[learn.n_inp] if len(b) > learn.n_inp else None, learn.preds):
        while isinstance(t, (tuple, list, dict)) and t:
            t = next(iter(t.values())) if isinstance(t, dict) else t[0]
        if isinstance(t, torch.Tensor) and t.ndim:
            return len(t)
    return 1


class MetricsCB(Callback):
    """Computes torcheval `metrics` and the loss mean each epoch and logs one row per train and per valid epoch.

    `MetricsCB(MulticlassAccuracy())` names a metric after its class; `MetricsCB(accuracy=MulticlassAccuracy())`
    names it yourself. Each row is also kept, with numbers rather than text, in `history` (a list of dicts
    with the metrics, `loss`, `epoch`, `train` (bool) and `time` in seconds), which each fit starts afresh.
    Metrics are updated on the training device and read back once per epoch: no sync per batch. The target
    is the batch's item after its `learn.n_inp` inputs (1 unless a `TrainCB(n_inp)` says otherwise).

    The batches counted are those whose loss counts (`learn.loss_counts`: also a training batch cancelled
    after its backward, as gradient accumulation does). A phase with no batch that counts gets no row (with a
    warning), so `EarlyStoppingCB` and `CheckpointCB` skip that epoch.
    Names are refused that would clash with the names monitors and metrics.json derive: 'train_loss',
    'valid_loss' and 'train_<name>' of another metric. The loss mean weighs each batch by its number of targets.
    A validation-only fit (`fit(n, train=False)`) has its own rows in `history` (a checkpoint saved after it
    holds the training run's: see `Learner.fit`).
    """
    def __init__(self, *ms: Metric, **metrics: Metric):
        for o in ms:
            name = type(o).__name__
            if name in metrics:
                raise ValueError(f'MetricsCB: two metrics named {name!r}; name them yourself, e.g. '
                                 f'MetricsCB(acc1={name}(...), acc2={name}(...)).')
            metrics[name] = o
        for k, m in metrics.items():
            if k in RESERVED:
                raise ValueError(f'MetricsCB: {k!r} is the name of a column MetricsCB writes itself ({RESERVED}); '
                                 'give the metric another name.')
            if k in ('train_loss', 'valid_loss') or (k.startswith('train_') and k[6:] in metrics):
                raise ValueError(f"MetricsCB: {k!r} is also the name MetricsCB gives a loss or a metric's training "
                                 "value ('train_loss', 'valid_loss', 'train_<name>'); give the metric another name.")
            if not isinstance(m, Metric):
                raise TypeError(f"MetricsCB: metric {k!r} is a {type(m).__name__}, not a torcheval Metric; pass one "
                                "such as MulticlassAccuracy(), or subclass torcheval.metrics.Metric.")
        self.metrics = metrics
        self.all_metrics = copy(metrics)
        self.all_metrics['loss'] = self.loss = Mean()
        self.history: list[dict[str, Any]] = []
        self._counted = False  # whether `after_batch` counted the current batch
        self._start: float | None = None  # when the running phase started (`time.perf_counter`); None: none runs
        self._elapsed = 0.  # the time the last phase ran (or a checkpoint's, when saved mid-epoch)

    def state_dict(self) -> dict[str, Any]:
        """The history, the metrics' running state and the time the epoch has run (used when a checkpoint was
        saved mid-epoch)."""
        elapsed = self._elapsed if self._start is None else time.perf_counter() - self._start
        return {'history': self.history, 'running': {k: m.state_dict() for k, m in self.all_metrics.items()},
                'elapsed': elapsed}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if sd['running'].keys() != self.all_metrics.keys():
            raise ValueError(f"MetricsCB: the checkpoint's metrics are {sorted(sd['running'])}, this MetricsCB's "
                             f'{sorted(self.all_metrics)}: build it with the same metrics (and names) as the run '
                             'that saved it.')
        self.history = [dict(r) for r in sd['history']]
        self._elapsed = sd.get('elapsed', 0.)  # (older checkpoints have none)
        for k, m in self.all_metrics.items():  # a checkpoint saved mid-epoch: its first epoch goes on from these
            m.load_state_dict(sd['running'][k])
            m.to(m.device)

    def _log(self, d: dict[str, str]) -> None:
        if not is_main_process(): return
        if self._first_row: print('  '.join(f'{k:>8}' for k in d))
        print('  '.join(f'{v:>8}' for v in d.values()))
        self._first_row = False

    def before_fit(self, learn: Learner) -> None:
        learn.metrics = self
        self.history, self._first_row = [], True
        for m in self.all_metrics.values(): m.reset()

    def before_epoch(self, learn: Learner) -> None:
        if not learn.resume_iter:  # resuming mid-epoch, they hold the running state a checkpoint gave them
            for m in self.all_metrics.values(): m.reset()
        self._start = time.perf_counter() - (self._elapsed if learn.resume_iter else 0.)

    def cleanup_epoch(self, learn: Learner) -> None:
        if self._start is not None:  # (None: an earlier callback's `before_epoch` raised)
            self._elapsed, self._start = time.perf_counter() - self._start, None
    def after_batch(self, learn: Learner) -> None:
        if learn.loss_counts: self._update(learn)
        self._counted = True

    def cleanup_batch(self, learn: Learner) -> None:
        if not self._counted and learn.loss_counts: self._update(learn)  # cancelled after its loss counted
        self._counted = False

    def _update(self, learn: Learner) -> None:
        loss = learn.loss.detach()
        for m in self.all_metrics.values():
            if m.device != loss.device: m.to(loss.device)
        if self.metrics:
            preds = learn.preds
            if not isinstance(preds, torch.Tensor):
                raise TypeError(f'MetricsCB: the predictions (learn.preds) are a {type(preds).__name__}, not a tensor, '
                                'so the metrics cannot take them. Make learn.preds the tensor the metrics should see '
                                '(e.g. a TrainLearner whose predict keeps the logits), or log only the loss with '
                                'MetricsCB().')
            for m in self.metrics.values(): m.update(preds.detach(), learn.batch[learn.n_inp])
        self.loss.update(loss, weight=_n_items(learn))

    def compute(self) -> dict[str, float]:
        """The current value of every metric and of the loss, as Python floats (one device read each)."""
        res = {}
        for k, m in self.all_metrics.items():
            v = m.compute()
            if v.numel() != 1:
                raise ValueError(f'MetricsCB: metric {k!r} ({type(m).__name__}) gives {v.numel()} values, but each '
                                 "metric logs one number: use its averaged form (e.g. average='macro'), or one "
                                 'MetricsCB entry per value you want.')
            res[k] = v.item()
        return res

    def after_epoch(self, learn: Learner) -> None:
        if not self.loss.weights:  # no batch counted (the loss's total weight; global under `DDPCB`)
            if is_main_process():
                warnings.warn(f'MetricsCB: no batch of the {learn.phase} phase of epoch {learn.epoch} counted (all '
                              'were cancelled), so it has no row and no values; EarlyStoppingCB and CheckpointCB '
                              'skip them.', stacklevel=2)
            return
        row = {**self.compute(), 'epoch': learn.epoch, 'train': learn.training,
               'time': time.perf_counter() - self._start}
        self.history.append(row)
        if not math.isfinite(row['loss']) and is_main_process():
            warnings.warn(f"MetricsCB: the {learn.phase} loss of epoch {learn.epoch} is {row['loss']}: the model "
                          'gives NaN or inf for some of these batches (a diverged model, or NaN/inf in the data).',
                          stacklevel=2)
        self._log({**{k: f'{row[k]:.3f}' for k in self.all_metrics}, 'epoch': str(learn.epoch),
                   'train': 'train' if learn.training else 'eval', 'time': format_time(row['time'])})
