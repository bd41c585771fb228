"""`compare_optimizers` on tiny synthetic data, and `miniai compare` end to end on a few real batches."""

from functools import partial
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from miniai.cli import main
from miniai.compare import (
    COMPARE_FIELDS,
    _seeds,
    compare_optimizers,
    plot_comparison,
    read_rows_csv,
    summarise,
)
from miniai.data import DataLoaders
from miniai.learner import Callback, Learner

OPTS = {'Adam': (optim.Adam, 1e-2), 'SGD+CLR': (partial(optim.SGD, momentum=0.9), None)}


def tiny_dls() -> DataLoaders:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return DataLoaders(DataLoader(TensorDataset(x[:64], y[:64]), 16, shuffle=True),
                       DataLoader(TensorDataset(x[64:], y[64:]), 16))


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))


class LrRecorder(Callback):
    def __init__(self): self.lrs = []
    def after_step(self, learn): self.lrs.append(learn.opt.param_groups[0]['lr'])


@pytest.fixture
def spy_lr_find(monkeypatch):
    """Replace `Learner.lr_find` with a spy returning fixed bounds."""
    calls = []

    def lr_find(learn, **kw):
        calls.append(kw)
        return SimpleNamespace(upper=0.3, lower=0.05)
    monkeypatch.setattr(Learner, 'lr_find', lr_find, raising=False)
    return calls


def test_compare_optimizers_table_csv_png_and_clr_bounds(tmp_path, spy_lr_find, capsys):
    recorders = []

    def cbs_fn():
        recorders.append(LrRecorder())
        return [recorders[-1]]
    rows = compare_optimizers(tiny_model, tiny_dls, OPTS, epochs=2, seeds=(0, 1), out=tmp_path,
                              lr_find_kw={'num_it': 20}, cbs_fn=cbs_fn, clr_step_epochs=1)
    assert len(rows) == 2 * 2 * 2 and all(tuple(r) == COMPARE_FIELDS for r in rows)
    assert [(r['optimizer'], r['seed'], r['epoch']) for r in rows[:4]] == [('Adam', 0, 0), ('Adam', 0, 1),
                                                                         ('Adam', 1, 0), ('Adam', 1, 1)]
    assert all(0 <= r['valid_accuracy'] <= 1 and r['seconds'] > 0 for r in rows)
    # The CLR bounds come from lr_find, once per SGD+CLR run, with `lr_find_kw`.
    assert spy_lr_find == [{'show_plot': False, 'num_it': 20}] * 2  # not drawn: one figure per run would pile up
    assert {r['lr'] for r in rows if r['optimizer'] == 'SGD+CLR'} == {0.3}
    # 4 batches per epoch and a step of one epoch: a triangle from 0.05 up to 0.3 at batch 4 and back.
    assert recorders[2].lrs == pytest.approx([0.05 + 0.25 * (1 - abs(k - 4) / 4) for k in range(8)])
    assert set(recorders[0].lrs) == {1e-2}
    # CSV re-read, PNG written, one plain line per run when stdout is not a terminal.
    assert read_rows_csv(tmp_path / 'compare.csv') == rows
    png = (tmp_path / 'compare.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'
    size = int.from_bytes(png[16:20], 'big'), int.from_bytes(png[20:24], 'big')
    assert size == (1200, 400)  # the comparison's figure (12 x 4 inches at dpi 100), not another one
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(':')[0] for line in lines] == [f'{o} seed {s}' for o in OPTS for s in (0, 1)]


def test_same_seed_same_numbers(spy_lr_find):
    run = partial(compare_optimizers, tiny_model, tiny_dls, OPTS, epochs=2)
    a, b, c = run(seeds=(0,)), run(seeds=(0,)), run(seeds=(1,))
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ('seconds', 'seed')} for r in rows]
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_real_lr_find_sets_the_cycle():
    rec = LrRecorder()
    rows = compare_optimizers(tiny_model, tiny_dls, {'SGD+CLR': OPTS['SGD+CLR']}, epochs=2, seeds=(0,),
                              lr_find_kw={'num_it': 30}, cbs_fn=lambda: [rec], clr_step_epochs=1)
    upper = rows[0]['lr']
    assert 1e-7 < upper < 10
    fit_lrs = rec.lrs[-8:]  # the recorder saw lr_find's batches first, then the 2 epochs of 4 batches
    assert (min(fit_lrs), max(fit_lrs)) == pytest.approx((upper / 6, upper))  # lower bound = upper / 6


def test_clr_off_trains_at_the_found_upper_lr(spy_lr_find):
    rec = LrRecorder()
    compare_optimizers(tiny_model, tiny_dls, {'SGD': OPTS['SGD+CLR']}, epochs=1, seeds=(0,), clr=False,
                       cbs_fn=lambda: [rec])
    assert set(rec.lrs) == {0.3}


def test_summarise_and_plot():
    rows = [{'optimizer': o, 'seed': s, 'epoch': e, 'lr': .1, 'train_loss': 1., 'train_accuracy': .5 + .1 * e,
             'valid_loss': 1., 'valid_accuracy': .6 + .1 * e + .02 * s, 'seconds': 2.}
            for o in ('A', 'B') for s in (0, 1) for e in (0, 1)]
    summary = summarise(rows)
    assert [s['optimizer'] for s in summary] == ['A', 'B']
    assert summary[0]['valid_accuracy'] == pytest.approx(.71) and summary[0]['runs'] == 2
    assert summary[0]['valid_accuracy_std'] == pytest.approx(.02 / 2 ** .5)
    assert summary[0]['seconds'] == pytest.approx(4.)
    assert plot_comparison(rows) is None  # a notebook shows the figure once
    fig = plt.gcf()
    assert [ax.get_title() for ax in fig.axes] == ['training accuracy', 'validation accuracy']
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ['A', 'B']


def test_seeds_flag():
    assert _seeds('3') == [0, 1, 2]
    assert _seeds('4,7') == [4, 7]
    assert _seeds('5,') == [5]


def test_cli_compare_end_to_end(fmnist_dir, tmp_path, capsys):
    out = tmp_path / 'cmp'
    main(['compare', '--epochs', '2', '--seeds', '1', '--opts', 'adam,sgd+clr', '--bs', '32',
          '--limit-batches', '3', '--data', str(fmnist_dir), '--device', 'cpu', '--out', str(out)])
    rows = read_rows_csv(out / 'compare.csv')
    assert [(r['optimizer'], r['epoch']) for r in rows] == [(o, e) for o in OPTS for e in (0, 1)]
    assert (out / 'compare.png').stat().st_size > 0
    printed = capsys.readouterr().out
    assert 'computed mean 0.2' in printed and 'valid acc' in printed and '(1 run, ' in printed


def test_an_interrupted_comparison_keeps_the_runs_that_finished(tmp_path):
    class CtrlCInSecondRun(Callback):
        runs = 0
        def before_fit(self, learn): CtrlCInSecondRun.runs += 1
        def after_batch(self, learn):
            if CtrlCInSecondRun.runs == 2 and learn.training: raise KeyboardInterrupt
    opts = {'Adam': OPTS['Adam'], 'Adamax': (optim.Adamax, 2e-3)}
    with pytest.raises(KeyboardInterrupt):
        compare_optimizers(tiny_model, tiny_dls, opts, epochs=2, seeds=(0,), out=tmp_path,
                           cbs_fn=lambda: [CtrlCInSecondRun()])
    rows = read_rows_csv(tmp_path / 'compare.csv')
    assert [(r['optimizer'], r['epoch']) for r in rows] == [('Adam', 0), ('Adam', 1)]
    assert (tmp_path / 'compare.png').is_file()


@pytest.mark.parametrize('flags, msg', [(('--opts', ''), '--opts names no optimizer; choose from Adagrad'),
                                        (('--seeds', 'a,b'), "--seeds takes a count N or a comma list of seeds, "
                                                             "got 'a,b'"),
                                        (('--seeds', '-2'), '--seeds -2 gives no seeds')])
def test_compare_refuses_empty_choices(flags, msg):
    with pytest.raises(SystemExit, match=msg):
        main(['compare', *flags])


def test_compare_refuses_repeated_seeds(tmp_path):
    with pytest.raises(SystemExit, match='--seeds 1,1 repeats a seed'):
        main(['compare', '--seeds', '1,1', '--data', str(tmp_path)])  # an empty folder: reached only without a check


def test_compare_refuses_an_out_that_holds_a_comparison(tmp_path):
    (tmp_path / 'compare.csv').write_text('')
    with pytest.raises(SystemExit, match='already holds a comparison'):
        main(['compare', '--out', str(tmp_path)])


def test_summarise_takes_each_runs_own_last_epoch():
    def row(seed, epoch, acc):
        return {'optimizer': 'A', 'seed': seed, 'epoch': epoch, 'lr': .1, 'train_loss': 1., 'train_accuracy': acc,
                'valid_loss': 1., 'valid_accuracy': acc, 'seconds': 10.}
    rows = [row(0, 0, .5), row(0, 1, .8), row(0, 2, .9), row(1, 0, .5), row(1, 1, .6)]  # seed 1 stopped early
    s, = summarise(rows)
    assert s['runs'] == 2 and s['valid_accuracy'] == pytest.approx(.75)
    assert s['valid_accuracy_std'] == pytest.approx(.3 / 2 ** .5) and s['seconds'] == pytest.approx(25.)


def test_compare_optimizers_refuses_repeated_seeds():
    with pytest.raises(ValueError, match=r'seeds \(0, 1, 0\) repeat a seed.*give each seed once'):
        compare_optimizers(tiny_model, tiny_dls, {'Adam': OPTS['Adam']}, epochs=1, seeds=[0, 1, 0])
