"""`ProgressCB`: fastprogress bars with the running loss, the metrics table, and a live loss plot."""

from __future__ import annotations

import sys

import torch

from .distributed import is_main_process
from .guards import is_whole
from .learner import Callback, Learner
from .metrics import MetricsCB, fit_metrics

__all__ = ['ProgressCB', 'in_notebook']


def _isatty() -> bool: return sys.stdout.isatty()


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where bars and plots render as HTML)."""
    shell = sys.modules.get('IPython') and sys.modules['IPython'].get_ipython()
    return type(shell).__name__ == 'ZMQInteractiveShell'


class ProgressCB(Callback):
    """Shows an epoch bar and a batch bar with the running loss, and writes `MetricsCB`'s rows under them.

    In a notebook, `plot=True` also draws the train and valid loss live. In a terminal the bars are
    fastprogress's console bars; when output is not a terminal (a log file, CI) no bar is drawn and the
    metrics are printed as plain lines, so logs get no carriage returns. The training loss of every batch
    whose loss counts (`learn.loss_counts`: also one cancelled after its backward) is kept in `losses`, read
    back from the device at most once every `every` (an int >= 1) batches; a validation-only fit keeps the last
    training fit's. The plot puts each valid loss after the training losses recorded by then.
    """
    order = MetricsCB.order + 1

    def __init__(self, plot: bool = False, every: int = 10):
        if not is_whole(every, 1):
            raise ValueError(f'ProgressCB: every is a number of batches, a whole number >= 1; got {every!r}.')
        self.plot, self.every = plot, int(every)
        self.bars, self.losses, self._pending, self._kept, self._valid_x = False, [], [], False, []

    def state_dict(self) -> dict[str, list]:
        """The losses and the valid points' x."""
        pending = torch.stack(self._pending).float().cpu().tolist() if self._pending else []
        return {'losses': self.losses + pending, 'valid_x': self._valid_x}

    def load_state_dict(self, sd: dict[str, list]) -> None:
        self.losses, self._valid_x = list(sd['losses']), list(sd.get('valid_x', ()))  # (older checkpoints have none)

    def cleanup_fit(self, learn: Learner) -> None:
        """Keep the losses not read back yet (a fit that stopped early has some), close the bars of such a fit,
        and give `MetricsCB` back its own way of printing."""
        self._read_pending()
        if not self.bars:
            return
        if self._metrics is not None:
            vars(self._metrics).pop('_log')
            if self._metrics_log is not None:
                self._metrics._log = self._metrics_log
        for bar in (getattr(self, 'pbar', None), self.mbar.main_bar):
            if bar is not None and bar.last_v is not None:
                bar.on_interrupt()
        self.bars = False

    def before_fit(self, learn: Learner) -> None:
        self.bars = is_main_process() and (in_notebook() or _isatty())
        if 'train' in learn.phases: self.losses = []  # a validation-only fit keeps the training fit's
        self._pending: list[torch.Tensor] = []
        self._valid_x: list[int] = []  # the x of each valid row of the metrics' history (which each fit restarts)
        self._first, self._metrics = True, fit_metrics(learn)
        if not self.bars: return
        from fastprogress.fastprogress import master_bar, progress_bar
        self._progress_bar = progress_bar
        learn.epochs = self.mbar = master_bar(learn.epochs)
        if self._metrics is not None:  # its rows go into the bar's table (its own `_log`, if set, comes back after)
            self._metrics_log = vars(self._metrics).get('_log')
            self._metrics._log = self._log

    def _log(self, d: dict[str, str]) -> None:
        if self._first: self.mbar.write(list(d), table=True)
        self.mbar.write(list(d.values()), table=True)
        self._first = False

    def before_epoch(self, learn: Learner) -> None:
        if self.bars: learn.dl = self.pbar = self._progress_bar(learn.dl, leave=False, parent=self.mbar)

    def after_batch(self, learn: Learner) -> None:
        if learn.training and learn.loss_counts: self._keep(learn)
        self._kept = True

    def cleanup_batch(self, learn: Learner) -> None:
        if not self._kept and learn.training and learn.loss_counts: self._keep(learn)  # cancelled after backward
        self._kept = False

    def _keep(self, learn: Learner) -> None:
        self._pending.append(learn.loss.detach())
        if len(self._pending) >= self.every: self._flush()

    def _read_pending(self) -> None:
        if self._pending:
            self.losses += torch.stack(self._pending).float().cpu().tolist()
            self._pending.clear()

    def _flush(self) -> None:
        if not self._pending: return
        self._read_pending()
        if self.bars: self.pbar.comment = f'{self.losses[-1]:.3f}'
        if self.bars and self.plot: self._update_graph()

    def after_epoch(self, learn: Learner) -> None:
        if learn.training:
            self._flush()
            return
        self._read_pending()  # those of a training phase cancelled (`CancelEpochException`) before its after_epoch
        if self._metrics is not None:  # its valid row, if any (not if all batches were cancelled), goes after the
            n_rows = sum(not h['train'] for h in self._metrics.history)  # training losses recorded so far
            self._valid_x += [len(self.losses)] * (n_rows - len(self._valid_x))
        if self.bars and self.plot: self._update_graph()

    def _update_graph(self) -> None:
        graphs = [[list(range(len(self.losses))), self.losses]]
        hist = self._metrics.history if self._metrics is not None else []
        if valid := [h['loss'] for h in hist if not h['train']]:
            graphs.append([self._valid_x, valid])
        self.mbar.update_graph(graphs)
