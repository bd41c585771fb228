"""The recipes: the `best` model and its flip TTA, 2-batch `miniai fit --recipe best|cpu` runs on tiny IDX files,
and the flags that override a recipe's augmentation, TTA and label smoothing."""

import dataclasses
import json
import warnings
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from miniai import BatchAugment
from miniai.cli import build_parser, checked_args, fit_command, resume_args
from miniai.recipes import RECIPES, FlipTTACB, ResBlock, resnet


@pytest.mark.parametrize('ni, nf, stride, size, out',
                         [(1, 16, 1, 28, 28), (16, 32, 2, 28, 14), (32, 32, 2, 7, 4)])
def test_resblock_shapes(ni, nf, stride, size, out):
    assert ResBlock(ni, nf, stride)(torch.randn(2, ni, size, size)).shape == (2, nf, out, out)


def test_resnet_shapes():
    m = resnet((8, 16, 32, 64))
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert isinstance(m[-1], nn.BatchNorm1d) and sum(isinstance(o, ResBlock) for o in m) == 4


def test_flip_tta_averages_the_mirror():
    m = resnet((8, 16)).eval()
    x = torch.randn(4, 1, 28, 28)
    learn = type('L', (), dict(training=False, model=m, batch=(x, None), preds=m(x)))()
    FlipTTACB().after_predict(learn)
    torch.testing.assert_close(learn.preds, (m(x) + m(x.flip(-1))) / 2)


def test_fit_best_recipe_two_batches(tiny_fmnist, tmp_path, monkeypatch):
    # The recipe as it is, but narrow, to keep the test fast on the CPU.
    monkeypatch.setitem(RECIPES, 'best', dataclasses.replace(RECIPES['best'], model=partial(resnet, (8, 16))))
    args = build_parser().parse_args(['fit', '--recipe', 'best', '--epochs', '1', '--bs', '4',
                                      '--limit-batches', '2', '--device', 'cpu', '--data', str(tiny_fmnist),
                                      '--out', str(tmp_path / 'run')])
    with pytest.warns(UserWarning, match=r'--recipe best on the CPU: .* made for a GPU.* `--recipe cpu`'):
        res = fit_command(args)
    assert args.lr == RECIPES['best'].lr and isinstance(res['learn'].model[0], ResBlock)
    rows = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert len(rows) == 1 and np.isfinite(rows[0]['valid_loss'])


def test_seed_recipe_stays_the_default():
    args = checked_args(build_parser().parse_args(['fit']))
    assert args.recipe == 'seed' and RECIPES['seed'].bs == 1024 and RECIPES['seed'].lr == 6e-2


def test_cpu_recipe_two_batches(tiny_fmnist, tmp_path):
    args = build_parser().parse_args(['fit', '--recipe', 'cpu', '--epochs', '1', '--limit-batches', '2',
                                      '--device', 'cpu', '--data', str(tiny_fmnist), '--out', str(tmp_path / 'run')])
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='miniai fit')  # the cpu recipe has no CPU warning
        res = fit_command(args)
    assert (args.bs, args.lr) == (RECIPES['cpu'].bs, RECIPES['cpu'].lr)
    assert any(isinstance(cb, FlipTTACB) for cb in res['learn'].cbs)
    rows = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert len(rows) == 1 and np.isfinite(rows[0]['valid_loss'])


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_every_recipe_is_a_cli_choice(name):
    assert build_parser().parse_args(['fit', '--recipe', name]).recipe == name


def fit_tiny(data, out, *flags):
    args = build_parser().parse_args(['fit', '--epochs', '1', '--limit-batches', '2', '--device', 'cpu',
                                      '--data', str(data), '--out', str(out), *flags])
    return args, fit_command(args)['learn']


def extras(learn):
    """(augmentation of the training batches, flip TTA on, label smoothing) of a fit's Learner."""
    return (learn.dls.train.tfm, any(isinstance(cb, FlipTTACB) for cb in learn.cbs),
            learn.loss_func.keywords['label_smoothing'])


def test_flags_turn_a_recipes_extras_off(tiny_fmnist, tmp_path):
    _, learn = fit_tiny(tiny_fmnist, tmp_path / 'on', '--recipe', 'cpu')
    assert extras(learn) == (RECIPES['cpu'].augment, True, 0.1)
    args, learn = fit_tiny(tiny_fmnist, tmp_path / 'off', '--recipe', 'cpu', '--no-augment', '--no-tta',
                           '--label-smoothing', '0')
    assert extras(learn) == (None, False, 0.)
    saved = json.loads((tmp_path / 'off' / 'args.json').read_text())
    assert (saved['augment'], saved['tta'], saved['label_smoothing']) == (False, False, 0.)


def test_flags_add_extras_to_the_seed_recipe(tiny_fmnist, tmp_path):
    _, learn = fit_tiny(tiny_fmnist, tmp_path / 'plain')
    assert extras(learn) == (None, False, 0.)
    _, learn = fit_tiny(tiny_fmnist, tmp_path / 'extras', '--augment', '--tta', '--label-smoothing', '0.2')
    tfm, tta, eps = extras(learn)
    assert isinstance(tfm, BatchAugment) and tfm.pad == RECIPES['best'].augment.pad and (tta, eps) == (True, 0.2)


def test_label_smoothing_out_of_range(tiny_fmnist, tmp_path):
    with pytest.raises(SystemExit, match=r'--label-smoothing must be in \[0, 1\) \(got 1.0\)'):
        fit_tiny(tiny_fmnist, tmp_path, '--label-smoothing', '1')


def test_resume_reads_args_json_older_than_the_flags(tmp_path):
    # A run saved before --augment/--tta/--label-smoothing existed resumes with the recipe's choices.
    saved = {k: v for k, v in vars(build_parser().parse_args(['fit', '--recipe', 'best'])).items()
             if k not in ('augment', 'tta', 'label_smoothing')}
    (tmp_path / 'args.json').write_text(json.dumps(saved))
    args = resume_args(build_parser().parse_args(['fit', '--resume', str(tmp_path)]))
    assert (args.recipe, args.augment, args.tta, args.label_smoothing) == ('best', None, None, None)


@pytest.mark.parametrize('opt, sched', [('adagrad', 'onecycle'), ('adadelta', 'cosine'), ('adagrad', 'cyclic')])
def test_optimizers_without_momentum_train_from_the_cli(tiny_fmnist, tmp_path, opt, sched):
    args, learn = fit_tiny(tiny_fmnist, tmp_path / 'run', '--opt', opt, '--sched', sched, '--lr', '1e-2')
    rec = next(cb for cb in learn.cbs if hasattr(cb, 'recs'))
    assert rec.recs['mom'] and all(m != m for m in rec.recs['mom'])  # NaN: no momentum to record
    assert (tmp_path / 'run' / 'curves.png').is_file()


@pytest.mark.parametrize('flags, msg', [(('--limit-batches', '-1'), '--limit-batches must be at least 1 .got -1.'),
                                        (('--limit-batches', '0'), '--limit-batches must be at least 1 .got 0.'),
                                        (('--lr', '0'), '--lr must be positive and finite, at most .* .got 0.0.'),
                                        (('--lr', 'nan'), '--lr must be positive and finite, at most .* .got nan.'),
                                        (('--lr', 'inf'), '--lr must be positive and finite, at most .* .got inf.'),
                                        (('--wd', '-0.1'), '--wd must be 0 or more, and finite .got -0.1.'),
                                        (('--wd', 'inf'), '--wd must be 0 or more, and finite .got inf.'),
                                        (('--clip', '0'), '--clip must be positive and finite .got 0.0.'),
                                        (('--clip', 'inf'), '--clip must be positive and finite .got inf.'),
                                        (('--label-smoothing', 'inf'), '--label-smoothing must be in .0, 1. .got inf')])
def test_fit_refuses_bad_numbers(tiny_fmnist, tmp_path, flags, msg):
    with pytest.raises(SystemExit, match=msg):
        fit_tiny(tiny_fmnist, tmp_path / 'run', *flags)


def cli(*argv):
    from miniai.cli import main
    return main(list(argv))


def test_resume_takes_no_options_but_device_and_data(tiny_fmnist, tmp_path):
    run = str(tmp_path / 'run')
    fit_tiny(tiny_fmnist, run)
    with pytest.raises(SystemExit, match=r'only --device and --data may be given with it, not --epochs, --lr'):
        cli('fit', '--resume', run, '--epochs', '10', '--lr', '0.1')
    for default in (('--epochs', '5'), ('--opt', 'adamw'), ('--recipe', 'seed')):  # given, though the default
        with pytest.raises(SystemExit, match=f'not {default[0]}'):
            cli('fit', '--resume', run, *default)


def test_out_of_an_existing_run_is_refused(tiny_fmnist, tmp_path):
    fit_tiny(tiny_fmnist, tmp_path / 'run')
    with pytest.raises(SystemExit, match='already holds a run; continue it with `miniai fit --resume'):
        fit_tiny(tiny_fmnist, tmp_path / 'run')
    (tmp_path / 'file').write_text('')
    with pytest.raises(SystemExit, match='is a file; give a folder'):
        fit_tiny(tiny_fmnist, tmp_path / 'file')


def test_resume_of_a_run_without_a_checkpoint_or_with_bad_options(tiny_fmnist, tmp_path):
    run = tmp_path / 'run'
    fit_tiny(tiny_fmnist, run)
    args = json.loads((run / 'args.json').read_text())
    (run / 'args.json').write_text(json.dumps({**args, 'recipe': 'huge'}))
    with pytest.raises(SystemExit, match=r"options this miniai does not know: recipe='huge'"):
        cli('fit', '--resume', str(run))
    (run / 'args.json').write_text('{"recipe": ')
    with pytest.raises(SystemExit, match='is not valid JSON'):
        cli('fit', '--resume', str(run))
    (run / 'args.json').write_text(json.dumps(args))
    (run / 'checkpoint.pt').unlink()
    with pytest.raises(SystemExit, match='no checkpoint.pt there: the run stopped before it saved one'):
        cli('fit', '--resume', str(run))


def test_devices_this_machine_lacks_are_named(tiny_fmnist, tmp_path):
    with pytest.raises(SystemExit, match="--device 'gpu' is not a device torch knows"):
        fit_tiny(tiny_fmnist, tmp_path / 'a', '--device', 'gpu')
    n = torch.cuda.device_count()
    with pytest.raises(SystemExit, match=f'--device cuda:{n}, but torch sees {n} cuda device'):
        fit_tiny(tiny_fmnist, tmp_path / 'b', '--device', f'cuda:{n}')
    assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()  # no run folder left behind


def test_compile_modes_are_checked_before_anything_runs():
    with pytest.raises(SystemExit):
        build_parser().parse_args(['fit', '--compile', 'bogus'])
    assert build_parser().parse_args(['fit', '--compile']).compile == 'default'


def test_data_and_nan_errors_print_a_message_not_a_traceback(tiny_fmnist, tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SystemExit, match=r'^miniai fit: .*empty'):
        cli('fit', '--data', str(tmp_path / 'empty'), '--out', str(tmp_path / 'a'), '--device', 'cpu')
    nan_run = ['fit', '--data', str(tiny_fmnist), '--out', str(tmp_path / 'b'), '--device', 'cpu', '--bs', '16',
               '--limit-batches', '2', '--epochs', '3', '--sched', 'none']
    with pytest.raises(SystemExit, match=r'(?s)training loss is .*start a new run, with another --out, and a lower '
                                         r'--lr \(this run used 1e\+30\)'):
        cli(*nan_run, '--lr', '1e30')
    assert not (tmp_path / 'b' / 'checkpoint.pt').exists()  # it diverged in its first epoch: nothing to resume,
    cli(*nan_run, '--lr', '1e-3')  # so the same --out may be used again


def test_mixed_precision_on_the_cpu_says_it_does_nothing(tiny_fmnist, tmp_path):
    with pytest.warns(UserWarning, match='--mixed-precision does nothing on the cpu'):
        fit_tiny(tiny_fmnist, tmp_path / 'run', '--mixed-precision')


def test_rmsprop_keeps_its_momentum_off(tiny_fmnist, tmp_path):
    _, learn = fit_tiny(tiny_fmnist, tmp_path / 'run', '--opt', 'rmsprop', '--lr', '1e-3')
    assert learn.opt.param_groups[0]['momentum'] == 0


def test_weight_decay_and_clipping_flags(tiny_fmnist, tmp_path):
    from miniai import GradClipCB
    _, learn = fit_tiny(tiny_fmnist, tmp_path / 'default')
    assert learn.opt.param_groups[0]['weight_decay'] == 0.01  # AdamW's own
    assert not any(isinstance(cb, GradClipCB) for cb in learn.cbs)
    _, learn = fit_tiny(tiny_fmnist, tmp_path / 'set', '--wd', '0.05', '--clip', '0.5', '--opt', 'sgd')
    assert isinstance(learn.opt, torch.optim.SGD) and learn.opt.param_groups[0]['weight_decay'] == 0.05
    assert [cb.max_norm for cb in learn.cbs if isinstance(cb, GradClipCB)] == [0.5]
    saved = json.loads((tmp_path / 'set' / 'args.json').read_text())
    assert (saved['wd'], saved['clip']) == (0.05, 0.5)
    assert resume_args(build_parser().parse_args(['fit', '--resume', str(tmp_path / 'set')])).clip == 0.5


@pytest.mark.parametrize('stride', [0, 3, 2.0, True])
def test_resblock_refuses_strides_other_than_1_or_2(stride):
    with pytest.raises(ValueError, match=f'ResBlock: stride is 1 or 2.*got {stride}'):
        ResBlock(8, 8, stride=stride)
