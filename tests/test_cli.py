"""`miniai fit` and `miniai compare` options: what `--resume` counts as given, the default output folder, paths in
args.json, metrics.json's non-finite values and the device checks."""

import json
import math
import re
import time
from types import SimpleNamespace

import pytest
import torch

from miniai.cli import MetricsFileCB, build_parser, checked_args, fit_command, main, resume_args


def fit(data, *flags):
    args = build_parser().parse_args(['fit', '--epochs', '1', '--limit-batches', '2', '--device', 'cpu',
                                      '--data', str(data), *flags])
    return args, fit_command(args)


@pytest.mark.parametrize('flags', [('--seed', '0'), ('--wd', '0'), ('--label-smoothing', '0'), ('--clip', '0'),
                                   ('--epochs', '0'), ('--limit-batches', '0'), ('--no-augment',), ('--no-tta',),
                                   ('--mixed-precision',)])
def test_resume_refuses_options_given_as_zero_or_off(tmp_path, flags):
    flag = flags[0].replace('--no-', '--')
    with pytest.raises(SystemExit, match=f'only --device and --data may be given with it, not {flag}\\.'):
        resume_args(build_parser().parse_args(['fit', '--resume', str(tmp_path), *flags]))


def test_speed_flags_default_to_false_in_new_and_resumed_runs(tmp_path):
    args = checked_args(build_parser().parse_args(['fit']))
    assert (args.mixed_precision, args.channels_last) == (False, False)  # what args.json records
    (tmp_path / 'checkpoint.pt').write_bytes(b'')
    for saved in ({'mixed_precision': True, 'channels_last': False}, {}):  # {}: a run from before the flags
        (tmp_path / 'args.json').write_text(json.dumps(saved))
        args = checked_args(build_parser().parse_args(['fit', '--resume', str(tmp_path)]))
        assert (args.mixed_precision, args.channels_last) == (saved.get('mixed_precision', False), False)


def test_runs_started_in_the_same_second_get_their_own_folders(tiny_fmnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, 'strftime', lambda fmt, *a: fmt.replace('%Y%m%d-%H%M%S', '20260101-120000'))
    for seed in (1, 2):
        fit(tiny_fmnist, '--seed', str(seed))
    runs = tmp_path / 'runs'
    assert sorted(p.name for p in runs.iterdir()) == ['20260101-120000', '20260101-120000-2']
    assert [json.loads((runs / d / 'args.json').read_text())['seed'] for d in sorted(runs.iterdir())] == [1, 2]


def test_comparisons_started_in_the_same_second_get_their_own_folders(tiny_fmnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, 'strftime', lambda fmt, *a: fmt.replace('%Y%m%d-%H%M%S', '20260101-120000'))
    for _ in range(2):
        main(['compare', '--epochs', '1', '--seeds', '1', '--opts', 'adam', '--bs', '32', '--limit-batches', '1',
              '--data', str(tiny_fmnist), '--device', 'cpu'])
    assert sorted(p.name for p in (tmp_path / 'runs').iterdir()) == ['compare-20260101-120000',
                                                                     'compare-20260101-120000-2']


def test_patience_stops_early_and_keeps_the_best_checkpoint(tiny_fmnist, tmp_path, monkeypatch, capsys):
    import miniai.early_stopping
    monkeypatch.setattr(miniai.early_stopping, 'improves', lambda v, best, *a: best is None)  # only epoch 0 is best
    args, res = fit(tiny_fmnist, '--epochs', '5', '--patience', '2', '--out', str(tmp_path / 'run'))
    assert [r['epoch'] for r in res['rows']] == [0, 1, 2]
    assert (tmp_path / 'run' / 'checkpoint_best.pt').is_file()
    assert 'stopped early after epoch 2 (--patience 2). The best valid loss' in capsys.readouterr().out
    _, res = fit(tiny_fmnist, '--epochs', '3', '--patience', '2', '--out', str(tmp_path / 'last'))
    assert len(res['rows']) == 3 and 'stopped early' not in capsys.readouterr().out  # it stopped after the last one
    with pytest.raises(SystemExit, match='that run stopped early .--patience 2., so it has nothing left to train'):
        main(['fit', '--resume', str(tmp_path / 'run')])
    (tmp_path / 'run' / 'model.pt').unlink()  # as after a Ctrl-C once its last checkpoint was saved
    capsys.readouterr()
    main(['fit', '--resume', str(tmp_path / 'run')])  # writes the outputs
    assert (tmp_path / 'run' / 'model.pt').is_file()
    assert 'learn.load(path)' not in capsys.readouterr().err  # the Python API's advice: not for the CLI
    with pytest.raises(SystemExit, match='--patience must be at least 1'):
        fit(tiny_fmnist, '--patience', '0')


def test_a_comparison_interrupted_before_any_run_finished_leaves_no_folder_of_its_own(tiny_fmnist, tmp_path,
                                                                                      monkeypatch):
    import miniai.compare
    def interrupted(*args, **kwargs): raise KeyboardInterrupt
    monkeypatch.setattr(miniai.compare, 'compare_optimizers', interrupted)
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'mine').mkdir()
    for out in ([], ['--out', 'new'], ['--out', 'mine']):
        with pytest.raises(SystemExit) as e:
            main(['compare', '--data', str(tiny_fmnist), '--limit-batches', '1', '--device', 'cpu', *out])
        assert e.value.code == 130
    assert list((tmp_path / 'runs').iterdir()) == [] and (tmp_path / 'mine').is_dir()


def test_metrics_json_writes_non_finite_values_as_null(tmp_path):
    history = [{'epoch': 0, 'train': True, 'loss': math.inf, 'time': 1., 'accuracy': .1},
               {'epoch': 0, 'train': False, 'loss': math.nan, 'time': 1., 'accuracy': .1}]
    path = tmp_path / 'metrics.json'
    MetricsFileCB(path, SimpleNamespace(history=history)).after_epoch(SimpleNamespace(phase='valid',
                                                                                      phases=('train', 'valid')))
    rows = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f'{c} is not JSON'))
    assert (rows[0]['train_loss'], rows[0]['valid_loss'], rows[0]['accuracy']) == (None, None, .1)


def test_paths_in_args_json_work_from_any_folder(tiny_fmnist, tmp_path, monkeypatch):
    (tmp_path / 'home').mkdir()
    (tmp_path / 'cwd').mkdir()
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    monkeypatch.chdir(tmp_path / 'cwd')
    fit('..', '--out', '~/run')  # tiny_fmnist is tmp_path
    run = tmp_path / 'home' / 'run'
    assert json.loads((run / 'args.json').read_text())['data'] == str(tiny_fmnist.resolve())
    monkeypatch.chdir(tmp_path / 'home')
    args = checked_args(build_parser().parse_args(['fit', '--resume', '~/run']))
    assert (args.resume, args.out, args.data) == (str(run), str(run), str(tiny_fmnist.resolve()))


def test_fit_and_compare_accept_only_devices_miniai_trains_on(tmp_path):
    n = torch.cuda.device_count()
    for command in ('fit', 'compare'):  # --data: an empty folder, which only a missed device check would reach
        with pytest.raises(SystemExit, match=f'^miniai {command}: --device meta: miniai trains on cpu, cuda'):
            main([command, '--device', 'meta', '--data', str(tmp_path), '--out', str(tmp_path / 'out')])
        with pytest.raises(SystemExit, match=f'^miniai {command}: --device cuda:{n}, but torch sees {n} cuda'):
            main([command, '--device', f'cuda:{n}', '--data', str(tmp_path), '--out', str(tmp_path / 'out')])


def test_resuming_on_a_machine_without_the_saved_device_says_to_pass_one(tmp_path):
    n = torch.cuda.device_count()
    (tmp_path / 'args.json').write_text(json.dumps({'device': f'cuda:{n}'}))
    (tmp_path / 'checkpoint.pt').write_bytes(b'')
    with pytest.raises(SystemExit, match=re.escape(f'the run in {tmp_path} was saved with --device cuda:{n}: resume '
                                                   'it with --device cpu')):
        main(['fit', '--resume', str(tmp_path)])


def test_resuming_with_a_missing_device_given_says_leaving_it_out_uses_the_saved_one(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 0)
    (tmp_path / 'checkpoint.pt').write_bytes(b'')
    for saved, fix in (('cpu', "leave --device out to resume on the run's own device, cpu, or pass --device cpu."),
                       (None, 'leave --device out to use the best device there is, or pass --device cpu.'),
                       ('cuda', f'the run in {tmp_path} was saved with --device cuda: resume it with --device cpu')):
        (tmp_path / 'args.json').write_text(json.dumps({'device': saved}))
        with pytest.raises(SystemExit, match=re.escape(f'--device cuda, but torch sees 0 cuda device(s) here; {fix}')):
            main(['fit', '--resume', str(tmp_path), '--device', 'cuda'])


def test_resume_names_a_missing_folder_and_a_finished_run(tiny_fmnist, tmp_path):
    with pytest.raises(SystemExit, match='no-such-run: no such folder; give the output folder'):
        main(['fit', '--resume', str(tmp_path / 'no-such-run')])
    run = tmp_path / 'run'
    fit(tiny_fmnist, '--out', str(run))
    written = {f: (run / f).stat().st_mtime_ns for f in ('model.pt', 'curves.png', 'checkpoint.pt')}
    with pytest.raises(SystemExit, match='that run finished its 1 epoch, so it has nothing left to train'):
        main(['fit', '--resume', str(run)])
    assert {f: (run / f).stat().st_mtime_ns for f in written} == written
    for f in ('model.pt', 'curves.png'):  # as after a Ctrl-C at the end of the last batch: the outputs come now
        (run / f).unlink()
    main(['fit', '--resume', str(run)])
    assert (run / 'model.pt').is_file() and (run / 'curves.png').is_file()


def test_the_command_prints_warnings_without_their_source_line(tiny_fmnist, tmp_path, capsys):
    main(['fit', '--epochs', '1', '--limit-batches', '2', '--device', 'cpu', '--data', str(tiny_fmnist),
          '--mixed-precision', '--out', str(tmp_path / 'run')])
    err = capsys.readouterr().err
    assert 'UserWarning: miniai fit --mixed-precision does nothing on the cpu' in err and 'cli.py' not in err


def test_the_seed_alone_sets_the_initial_weights_and_the_shuffles(tiny_fmnist, tmp_path, monkeypatch):
    """`--seed` gives the model's initial weights (`set_seed`, then the model) and the loader's shuffles (its
    `seed`), whatever the data options: neither depends on random numbers the other drew."""
    from miniai.learner import Learner
    from miniai.models import set_seed
    from miniai.recipes import RECIPES
    seen, fit_ = [], Learner.fit

    def spy(self, *args, **kwargs):
        seen.append(({k: v.clone() for k, v in self.model.state_dict().items()}, self.dls.train.seed))
        return fit_(self, *args, **kwargs)

    monkeypatch.setattr(Learner, 'fit', spy)
    fit(tiny_fmnist, '--seed', '7', '--out', str(tmp_path / 'a'))
    fit(tiny_fmnist, '--seed', '7', '--bs', '32', '--augment', '--out', str(tmp_path / 'b'))
    set_seed(7)
    expected = RECIPES['seed'].model().state_dict()
    assert len(seen) == 2
    for weights, loader_seed in seen:
        assert loader_seed == 7
        assert all(torch.equal(weights[k], v) for k, v in expected.items())


@pytest.mark.parametrize('argv, msg', [
    (['fit', '--seed', '-1'], 'miniai fit: --seed must be a whole number from 0 to 2\\*\\*32 - 1 \\(got -1\\)'),
    (['fit', '--seed', str(2**32)], f'--seed must be a whole number from 0 to 2\\*\\*32 - 1 \\(got {2**32}\\)'),
    (['compare', '--seeds=0,4294967296'], 'miniai compare: --seeds must be a whole number from 0 to 2\\*\\*32 - 1'),
    (['fit', '--out', '{file}'], 'miniai fit: --out .*afile is a file; give a folder'),
    (['fit', '--out', '{file}/sub'], 'miniai fit: --out .*afile/sub is under .*afile, which is a file; give a folder'),
    (['compare', '--out', '{file}'], 'miniai compare: --out .*afile is a file; give a folder')])
def test_seeds_and_out_folders_are_checked_before_anything_trains(tmp_path, argv, msg):
    (tmp_path / 'afile').write_text('')
    argv = [a.format(file=tmp_path / 'afile') for a in argv]
    with pytest.raises(SystemExit, match=msg):  # an empty data folder: reached only without a check
        main([*argv, '--data', str(tmp_path / 'none'), '--device', 'cpu', '--limit-batches', '1'])


def test_resume_names_the_processes_and_the_folder_of_a_checkpoint_file(tmp_path):
    (tmp_path / 'checkpoint.pt').write_bytes(b'')
    (tmp_path / 'args.json').write_text(json.dumps({'processes': 2}))
    with pytest.raises(SystemExit, match=re.escape(f'that run trained in 2 processes, this one in 1, so the batches '
                                                   f'would not be those of the run. Resume it as it was launched: '
                                                   f'torchrun --nproc_per_node 2 -m miniai fit --resume {tmp_path}')):
        main(['fit', '--resume', str(tmp_path)])
    with pytest.raises(SystemExit, match=re.escape(f'that is a file; give the run folder that holds it, {tmp_path}.')):
        main(['fit', '--resume', str(tmp_path / 'checkpoint.pt')])


def test_an_lr_that_overflows_the_weights_dtype_is_refused():
    with pytest.raises(SystemExit, match=r'--lr must be positive and finite, at most 3.4e\+38 \(got 1e\+300\)'):
        main(['fit', '--lr', '1e300', '--device', 'cpu'])
