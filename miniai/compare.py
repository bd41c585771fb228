"""Comparing optimizers the second article's way: each trained from several seeds on the same model and data,
then compared by the mean and spread of their training and validation accuracy curves.

`compare_optimizers` returns a tidy table (one row dict per optimizer × seed × epoch), which
`write_rows_csv`, `read_rows_csv`, `plot_comparison` and `summarise` take; `miniai compare` runs it on
Fashion-MNIST.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import nn, optim

from . import lr_finder  # noqa: F401  (gives `Learner` its `lr_find`)
from .learner import Callback, Learner, TrainLearner
from .metrics import MetricsCB
from .models import set_seed
from .progress import in_notebook
from .sched import BatchSchedCB
from .schedulers import CyclicLR, uses_momentum

__all__ = ['COMPARE_OPTS', 'COMPARE_FIELDS', 'compare_optimizers', 'train_run', 'save_comparison', 'write_rows_csv',
           'read_rows_csv', 'plot_comparison', 'summarise']

# name -> (optimizer factory, lr); lr None: bounds from `learn.lr_find()` and a triangular cyclical lr.
COMPARE_OPTS: dict[str, tuple[Callable, float | None]] = {
    'Adagrad': (optim.Adagrad, 1e-2), 'Adadelta': (optim.Adadelta, 1.0), 'RMSprop': (optim.RMSprop, 1e-3),
    'Adam': (optim.Adam, 1e-3), 'Adamax': (optim.Adamax, 2e-3),
    'SGD+CLR': (partial(optim.SGD, momentum=0.9), None)}
COMPARE_FIELDS = ('optimizer', 'seed', 'epoch', 'lr', 'train_loss', 'train_accuracy', 'valid_loss',
                  'valid_accuracy', 'seconds')


class _RunLogCB(Callback):
    """A batch bar under the grid's master bar (terminal, notebook), and one line per finished run."""
    order = MetricsCB.order + 1

    def __init__(self, label: str, mbar: Any = None): self.label, self.mbar = label, mbar

    def before_epoch(self, learn: Learner) -> None:
        if self.mbar is None:
            return
        from fastprogress.fastprogress import ConsoleProgressBar, progress_bar
        learn.dl = bar = progress_bar(learn.dl, parent=self.mbar, leave=False)
        split = 'train' if learn.training else 'valid'
        where = f'{self.label}, {split} epoch {learn.epoch + 1}/{learn.n_epochs}'
        if isinstance(bar, ConsoleProgressBar):
            bar.prefix = where  # its own prefix would call the runs 'Epoch'
        else:
            bar.comment = where

    def after_fit(self, learn: Learner) -> None:
        h, t = learn.metrics.history, sum(r['time'] for r in learn.metrics.history)
        tr, va = (next(r for r in reversed(h) if r['train'] == split) for split in (True, False))
        line = (f"{self.label}: train acc {tr['accuracy']:.4f}, valid acc {va['accuracy']:.4f}, "
                f"valid loss {va['loss']:.4f} ({t:.1f}s)")
        if self.mbar is None:
            print(line, flush=True)
        else:
            self.mbar.write(line)


def _cyclic(lower: float, upper: float, step: int) -> Callable:
    """A triangular `CyclicLR` factory; momentum cycles only where the optimizer uses some."""
    def sched(opt: optim.Optimizer) -> CyclicLR:
        return CyclicLR(opt, base_lr=lower, max_lr=upper, step_size_up=step, cycle_momentum=uses_momentum(opt))
    return sched


def _epoch_rows(history: list[dict], **keys: Any) -> list[dict]:
    rows: dict[int, dict] = {}
    for h in history:
        split = 'train' if h['train'] else 'valid'
        r = rows.setdefault(h['epoch'], {**keys, 'epoch': h['epoch'], 'seconds': 0.})
        r[f'{split}_loss'], r[f'{split}_accuracy'] = h['loss'], h['accuracy']
        r['seconds'] += h['time']
    return [{k: r[k] for k in COMPARE_FIELDS} for r in rows.values()]


def train_run(model_fn: Callable[[], nn.Module], dls_fn: Callable[[], Any], opt_func: Callable,
              lr: float | None, epochs: int, seed: int, name: str = '', clr: bool = True,
              clr_step_epochs: float = 2., lr_find_kw: dict | None = None, cbs: Iterable[Callback] = (),
              mbar: Any = None) -> list[dict]:
    """One run of the grid: seed, build model and data, train `epochs` with cross-entropy and return its rows.
    `lr=None` takes the lr from `learn.lr_find()`: with `clr`, a triangular `CyclicLR` from `.lower` to
    `.upper` with a step of `clr_step_epochs` epochs; without, the constant `.upper`. Rows' `seconds` are
    each epoch's training plus validation time (`lr_find`'s not included); `lr` is the lr, or the CLR's upper bound,
    which a fit shorter than `clr_step_epochs` does not reach."""
    from torcheval.metrics import MulticlassAccuracy
    set_seed(seed)
    dls = dls_fn()
    learn = TrainLearner(model_fn(), dls, F.cross_entropy, cbs=cbs, opt_func=opt_func)
    sched = []
    if lr is None:
        found = learn.lr_find(**{'show_plot': False, **(lr_find_kw or {})})
        lr = found.upper
        if clr:
            step = max(1, round(clr_step_epochs * len(dls.train)))
            sched = [BatchSchedCB(_cyclic(found.lower, found.upper, step))]
    metrics = MetricsCB(accuracy=MulticlassAccuracy())
    metrics._log = lambda d: None  # the grid logs one line per run instead
    learn.fit(epochs, lr=lr, cbs=[metrics, *sched, _RunLogCB(f'{name} seed {seed}', mbar)])
    return _epoch_rows(metrics.history, optimizer=name, seed=seed, lr=lr)


def compare_optimizers(model_fn: Callable[[], nn.Module], dls_fn: Callable[[], Any],
                       opts: dict[str, tuple[Callable, float | None]] | None = None, epochs: int = 5,
                       seeds: Sequence[int] = (0, 1, 2), out: str | os.PathLike | None = None,
                       clr: bool = True, lr_find_kw: dict | None = None,
                       cbs_fn: Callable[[], Iterable[Callback]] | None = None,
                       clr_step_epochs: float = 2.) -> list[dict]:
    """Train a fresh `model_fn()` on `dls_fn()` for every optimizer × seed, `set_seed(seed)` first, and
    return the tidy table: a row dict per optimizer × seed × epoch with the `COMPARE_FIELDS`.

    `opts` maps names to `(optimizer factory, lr)` (default `COMPARE_OPTS`, the article's six); an lr of None
    is found per run by `learn.lr_find(**lr_find_kw)` (see `train_run` for `clr` and `clr_step_epochs`).
    `cbs_fn()` gives each run's extra callbacks (device, augmentation), which `lr_find` uses too. With `out`,
    writes `compare.csv` and `compare.png` (`plot_comparison`) there. Shows a master bar over the runs in a
    terminal or notebook, else prints a line per run."""
    opts = COMPARE_OPTS if opts is None else opts
    if len(set(seeds)) < len(seeds):
        raise ValueError(f'compare_optimizers: seeds {tuple(seeds)} repeat a seed, which would train the same run '
                         'twice and understate the spread; give each seed once.')
    runs = [(name, seed) for name in opts for seed in seeds]
    mbar = None
    if in_notebook() or sys.stdout.isatty():
        from fastprogress.fastprogress import master_bar
        runs = mbar = master_bar(runs)
    rows = []
    try:
        for name, seed in runs:
            opt_func, lr = opts[name]
            rows += train_run(model_fn, dls_fn, opt_func, lr, epochs, seed, name, clr, clr_step_epochs,
                              lr_find_kw, cbs_fn() if cbs_fn else (), mbar)
    except KeyboardInterrupt:
        if out is not None and rows:
            save_comparison(rows, out)  # the runs that finished
        raise
    if out is not None:
        save_comparison(rows, out)
    return rows


def save_comparison(rows: list[dict], out: str | os.PathLike) -> None:
    """Write `compare.csv` and `compare.png` to folder `out`."""
    import matplotlib.pyplot as plt
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_rows_csv(rows, out / 'compare.csv')
    plot_comparison(rows)
    fig = plt.gcf()
    fig.savefig(out / 'compare.png', dpi=100)
    plt.close(fig)


def write_rows_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """Write the tidy table as CSV, columns in `COMPARE_FIELDS` order."""
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, COMPARE_FIELDS)
        w.writeheader()
        w.writerows(rows)


def read_rows_csv(path: str | os.PathLike) -> list[dict]:
    """Read a table written by `write_rows_csv`, with numbers as numbers."""
    with open(path, newline='') as f:
        return [{k: v if k == 'optimizer' else int(v) if k in ('seed', 'epoch') else float(v)
                 for k, v in r.items()} for r in csv.DictReader(f)]


def _by_optimizer(rows: list[dict]) -> dict[str, list[dict]]:
    res: dict[str, list[dict]] = {}
    for r in rows:
        res.setdefault(r['optimizer'], []).append(r)
    return res


def plot_comparison(rows: list[dict], figsize: tuple[float, float] = (12, 4)) -> None:
    """Training and validation accuracy per epoch: each optimizer's mean over seeds, with a min–max band
    (`plt.savefig` saves it)."""
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 2, figsize=figsize, sharey=True)
    for name, rs in _by_optimizer(rows).items():
        epochs = sorted({r['epoch'] for r in rs})
        for ax, split in zip(axs, ('train', 'valid'), strict=True):
            vals = [[r[f'{split}_accuracy'] for r in rs if r['epoch'] == e] for e in epochs]
            line, = ax.plot(epochs, [statistics.fmean(v) for v in vals], 'o-', label=name)
            ax.fill_between(epochs, [min(v) for v in vals], [max(v) for v in vals], color=line.get_color(),
                            alpha=.2)
    from matplotlib.ticker import MaxNLocator
    for ax, split in zip(axs, ('training', 'validation'), strict=True):
        ax.set(title=f'{split} accuracy', xlabel='epoch')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=.3)
    axs[0].set_ylabel('accuracy (mean; band: min–max over seeds)')
    axs[1].legend()
    fig.tight_layout()


def summarise(rows: list[dict]) -> list[dict]:
    """Per optimizer, the accuracies and valid loss of each run's (seed's) last epoch, as mean and std over the
    runs (a run that stopped early counts with its last epoch), and the mean seconds per run."""
    res = []
    for name, rs in _by_optimizer(rows).items():
        final: dict[int, dict] = {}  # seed -> its run's last row
        for r in rs:
            if r['seed'] not in final or r['epoch'] > final[r['seed']]['epoch']:
                final[r['seed']] = r
        d: dict[str, Any] = {'optimizer': name, 'runs': len(final)}
        for k in ('train_accuracy', 'valid_accuracy', 'valid_loss'):
            v = [r[k] for r in final.values()]
            d[k], d[f'{k}_std'] = statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.
        d['seconds'] = sum(r['seconds'] for r in rs) / len(final)
        res.append(d)
    return res


def _seeds(s: str) -> list[int]:
    """`--seeds`: a count N (seeds 0..N-1) or a comma list of seeds."""
    return [int(o) for o in s.split(',') if o] if ',' in s else list(range(int(s)))


def add_compare_args(p: argparse.ArgumentParser) -> None:
    """The `miniai compare` flags."""
    p.add_argument('--epochs', type=int, default=5, help='epochs per run (default: 5)')
    p.add_argument('--seeds', default='3', help='a count N (seeds 0..N-1) or a comma list of seeds (default: 3)')
    p.add_argument('--opts', default=','.join(COMPARE_OPTS),
                   help='comma list of optimizers to compare (default: all six)')
    p.add_argument('--bs', type=int, default=256, help='batch size (default: 256)')
    p.add_argument('--data', default=None,
                   help='folder with the Fashion-MNIST IDX files (default: $MINIAI_DATA, then the cache)')
    p.add_argument('--device', default=None, help='cuda, mps or cpu (default: the best available)')
    p.add_argument('--out', default=None, help='output folder (default: runs/compare-<timestamp>)')
    p.add_argument('--limit-batches', type=int, default=None, metavar='N',
                   help='train on the first N*bs training images and validate on the first N*bs test images: '
                        'N batches an epoch (a quick smoke run)')
    p.add_argument('--augment', action=argparse.BooleanOptionalAction, default=True,
                   help='random crop (pad 4) and horizontal flip of training batches (default: on)')


def compare_command(args: argparse.Namespace) -> list[dict]:
    """Run `miniai compare`: the vanilla CNN on Fashion-MNIST (normalised with its computed mean/std) for each
    optimizer × seed; writes compare.csv and compare.png and prints the final accuracies."""
    import matplotlib
    matplotlib.use('Agg')
    from .callbacks import BatchTransformCB, DeviceCB
    from .cli import check_out, check_seed, checked_device, new_run_dir
    from .data import DataLoaders, DeviceLoader, fashion_mnist_arrays
    from .vision import batch_augment, channel_stats, vanilla_cnn

    names = {k.lower(): k for k in COMPARE_OPTS}
    picked = [o.strip() for o in args.opts.split(',') if o.strip()]
    if bad := [o for o in picked if o.lower() not in names]:
        raise SystemExit(f"miniai compare: unknown optimizer(s) {', '.join(bad)}; "
                         f"choose from {', '.join(COMPARE_OPTS)}")
    if not picked:
        raise SystemExit(f"miniai compare: --opts names no optimizer; choose from {', '.join(COMPARE_OPTS)}")
    try:
        seeds = _seeds(args.seeds)
    except ValueError:
        raise SystemExit(f'miniai compare: --seeds takes a count N or a comma list of seeds, got {args.seeds!r}.'
                         ) from None
    if not seeds:
        raise SystemExit(f'miniai compare: --seeds {args.seeds} gives no seeds: give a count of at least 1, or a '
                         'comma list of seeds.')
    for seed in seeds:
        check_seed(seed, '--seeds', 'compare')
    if len(set(seeds)) < len(seeds):
        raise SystemExit(f'miniai compare: --seeds {args.seeds} repeats a seed, which would train the same run '
                         'twice and understate the spread; give each seed once.')
    for flag, v in (('--epochs', args.epochs), ('--bs', args.bs),
                    ('--limit-batches', 1 if args.limit_batches is None else args.limit_batches)):
        if v < 1:
            raise SystemExit(f'miniai compare: {flag} must be at least 1 (got {v}).')
    device = checked_device(args.device, 'compare')
    out = Path(args.out).expanduser() if args.out else None
    check_out(out, 'compare')
    if out is not None and (out / 'compare.csv').exists():
        raise SystemExit(f'miniai compare: {out} already holds a comparison (compare.csv); give another --out.')

    # Read and normalise once; every run gets fresh loaders over the same tensors (shuffled from its seed).
    n = args.limit_batches and args.limit_batches * args.bs
    arrays = fashion_mnist_arrays(args.data).values()
    (xt, yt), (xv, yv) = ((x[:n].to(device), y[:n].to(device)) for x, y in arrays)
    mean, std = (float(s) / 255 for s in channel_stats(xt[:, None]))
    print(f'normalising with the computed mean {mean:.4f} and std {std:.4f} of {len(xt)} training images')
    kw = dict(bs=args.bs, mean=mean, std=std, device=device)

    def dls_fn() -> DataLoaders:
        return DataLoaders(DeviceLoader(xt, yt, shuffle=True, **kw), DeviceLoader(xv, yv, **kw))

    def cbs_fn() -> list[Callback]:
        augment = [BatchTransformCB(batch_augment(), on_val=False)] if args.augment else []
        return [DeviceCB(device), *augment]

    opts = {names[o.lower()]: COMPARE_OPTS[names[o.lower()]] for o in picked}
    made = out is None
    out = out or new_run_dir(prefix='compare-')  # made once the data is read
    try:
        rows = compare_optimizers(vanilla_cnn, dls_fn, opts, epochs=args.epochs, seeds=seeds, out=out,
                                  cbs_fn=cbs_fn)
    except KeyboardInterrupt:
        done = out / 'compare.csv'
        if made and not any(out.iterdir()):
            out.rmdir()
        print('Interrupted: ' + (f'the runs that finished are in {done} and compare.png' if done.is_file()
                                 else 'no run had finished, nothing was written'))
        raise SystemExit(130) from None
    for s in summarise(rows):
        runs = f"{s['runs']} run{'s' * (s['runs'] != 1)}"
        print(f"{s['optimizer']:>9}: valid acc {s['valid_accuracy']:.4f} ± {s['valid_accuracy_std']:.4f}, "
              f"train acc {s['train_accuracy']:.4f} ± {s['train_accuracy_std']:.4f} ({runs}, {s['seconds']:.0f}s each)")
    print(f'wrote compare.csv and compare.png to {out}')
    return rows
