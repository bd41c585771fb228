"""Checkpoints: atomic writes, safe reads, `CheckpointCB`, and resuming bit for bit (after an epoch,
mid-epoch, on Ctrl-C, from the CLI)."""

import copy
import json
import os
import signal
import threading
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.optim import lr_scheduler
from torch.utils.data import DataLoader, TensorDataset
from torcheval.metrics import MulticlassAccuracy

from miniai.accel import MixedPrecision
from miniai.checkpoint import (
    CheckpointCB,
    CheckpointError,
    FitInterrupted,
    InterruptCB,
    atomic_save,
    load_checkpoint,
)
from miniai.learner import Callback, CancelBatchException, CancelFitException, Learner, TrainLearner
from miniai.metrics import MetricsCB
from miniai.progress import ProgressCB
from miniai.sched import BatchSchedCB, RecorderCB, rec_lr, rec_mom
from miniai.schedulers import OneCycle

N_EPOCHS, N_BATCHES = 3, 4
main_thread_only = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                      reason='signals are handled in the main thread only')


pytestmark = pytest.mark.usefixtures('one_thread')


def make_dls(generator=None):
    """Shuffled by the global RNG, or by `generator`, the loader's own."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return SimpleNamespace(train=DataLoader(TensorDataset(x[:32], y[:32]), 8, shuffle=True, generator=generator),
                           valid=DataLoader(TensorDataset(x[32:], y[32:]), 8))


def make_learner(sched='miniai', cbs=(), epochs=N_EPOCHS, dls=None):
    """A shuffled loader, BatchNorm, dropout (so the RNGs matter), AdamW and a one-cycle schedule."""
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    cls = OneCycle if sched == 'miniai' else optim.lr_scheduler.OneCycleLR
    one_cycle = partial(cls, max_lr=0.05, total_steps=epochs * N_BATCHES)
    cbs = [MetricsCB(acc=MulticlassAccuracy()), ProgressCB(every=3), RecorderCB(lr=rec_lr, mom=rec_mom),
           BatchSchedCB(one_cycle), *cbs]
    return TrainLearner(model, dls or make_dls(), F.cross_entropy, lr=0.05, cbs=cbs, opt_func=optim.AdamW)


def cb_of(learn, cls): return next(cb for cb in learn.cbs if isinstance(cb, cls))


def reference(sched='miniai'):
    torch.manual_seed(0)
    learn = make_learner(sched)
    learn.fit(N_EPOCHS)
    return learn


def resume(path, sched='miniai', cbs=()):
    """A fresh learner (other initial weights, other RNG state) that resumes the run saved at `path`."""
    torch.manual_seed(1234)
    learn = make_learner(sched, cbs)
    learn.fit(N_EPOCHS, resume=path)
    return learn


def assert_same_run(a, b):
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    ra, rb = cb_of(a, RecorderCB).recs, cb_of(b, RecorderCB).recs
    assert ra == rb and len(ra['lr']) == N_EPOCHS * N_BATCHES
    strip = lambda learn: [
        {k: v for k, v in r.items() if k != 'time'}
        for r in cb_of(learn, MetricsCB).history]
    assert strip(a) == strip(b) and len(strip(a)) == 2 * N_EPOCHS
    assert cb_of(a, ProgressCB).losses == cb_of(b, ProgressCB).losses


class StopAfterEpoch(Callback):
    order = CheckpointCB.order + 1  # after the epoch's checkpoint

    def __init__(self, epoch, exc): self.epoch, self.exc = epoch, exc

    def after_epoch(self, learn):
        if not learn.training and learn.epoch == self.epoch:
            raise self.exc()


@pytest.mark.parametrize('sched', ['miniai', 'torch'])
@pytest.mark.parametrize('exc', [CancelFitException, KeyboardInterrupt])
def test_resume_after_an_epoch_is_bit_identical(tmp_path, sched, exc):
    torch.manual_seed(0)
    learn = make_learner(sched, [CheckpointCB(tmp_path), StopAfterEpoch(1, exc)])
    with pytest.raises(exc) if exc is KeyboardInterrupt else nullcontext():
        learn.fit(N_EPOCHS)
    ck = load_checkpoint(tmp_path)
    assert (ck['epoch'], ck['phase'], ck['iter'], ck['train_iter']) == (2, 'train', 0, 2 * N_BATCHES)
    assert_same_run(reference(sched), resume(tmp_path, sched, [CheckpointCB(tmp_path)]))


class SigintWhen(Callback):
    """Sends this process a Ctrl-C in `after_loss` when `when(learn)`."""
    def __init__(self, when): self.when = when

    def after_loss(self, learn):
        if self.when(learn):
            signal.raise_signal(signal.SIGINT)


@main_thread_only
@pytest.mark.parametrize('when, pos', [
    (lambda learn: learn.training and learn.train_iter == 5, (1, 'train', 2)),  # mid-epoch
    (lambda learn: learn.training and learn.train_iter == 7, (1, 'train', 4)),  # the epoch's last batch
    (lambda learn: not learn.training and learn.epoch == 1, (1, 'valid', 0))])  # during validation
def test_ctrl_c_stops_at_the_batch_end_and_resumes_bit_identical(tmp_path, when, pos):
    torch.manual_seed(0)
    learn = make_learner(cbs=[InterruptCB(), SigintWhen(when)])
    old = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        learn.fit(N_EPOCHS)
    assert signal.getsignal(signal.SIGINT) is old  # InterruptCB put the handler back
    learn.save(tmp_path / 'checkpoint.pt')
    ck = load_checkpoint(tmp_path / 'checkpoint.pt')
    assert (ck['epoch'], ck['phase'], ck['iter']) == pos
    assert_same_run(reference(), resume(tmp_path))


def test_checkpoint_holds_only_plain_data_and_rng_tensors(tmp_path):
    torch.manual_seed(0)
    learn = make_learner(cbs=[CheckpointCB(tmp_path / 'ck.pt')], epochs=1)
    learn.fit(1)
    ck = torch.load(tmp_path / 'ck.pt', weights_only=True)
    rng = ck['start']['rng']
    assert all(isinstance(t, torch.Tensor) for t in (rng['torch'], rng['random']['state'],
                                                     rng['numpy']['keys']))
    assert set(ck['cbs']) == {'MetricsCB_0', 'ProgressCB_0', 'RecorderCB_0', 'BatchSchedCB_0',
                              'CheckpointCB_0'}
    assert ck['opt_type'] == 'AdamW' and ck['epoch'] == 1


def test_save_then_load_restores_model_optimizer_and_rngs(tmp_path):
    torch.manual_seed(0)
    learn = make_learner(epochs=1)
    learn.fit(1)
    learn.save(tmp_path / 'ck.pt')
    expected = torch.rand(3)
    other = make_learner()
    other.load(tmp_path / 'ck.pt')
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(a, b) for a, b in zip(learn.model.state_dict().values(),
                                                 other.model.state_dict().values(), strict=True))
    sa, sb = learn.opt.state_dict()['state'], other.opt.state_dict()['state']
    assert all(torch.equal(sa[i]['exp_avg'], sb[i]['exp_avg']) for i in sa)
    assert cb_of(other, RecorderCB).recs == cb_of(learn, RecorderCB).recs


def test_crash_mid_save_keeps_the_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    torch.manual_seed(0)
    learn = make_learner(epochs=1)
    learn.fit(1)
    path = learn.save(tmp_path / 'ck.pt')
    good = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(good[:100])  # part of a file, then the disk fills up
        raise OSError('No space left on device')
    monkeypatch.setattr(torch, 'save', crash)
    learn.fit(1)
    for p in (path, tmp_path / 'new.pt'):
        with pytest.raises(OSError, match='No space'):
            learn.save(p)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ['ck.pt']
    assert load_checkpoint(path)['epoch'] == 1


def test_atomic_save_replaces_the_file(tmp_path):
    atomic_save({'a': 1}, tmp_path / 'x.pt')
    atomic_save({'a': 2}, tmp_path / 'x.pt')
    assert torch.load(tmp_path / 'x.pt', weights_only=True) == {'a': 2} and os.listdir(tmp_path) == ['x.pt']


def test_loading_into_another_model_names_the_keys(tmp_path):
    torch.manual_seed(0)
    learn = make_learner()
    learn.save(tmp_path / 'ck.pt')
    model = nn.Sequential(nn.Linear(6, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))
    before = [p.clone() for p in model.parameters()]
    other = TrainLearner(model, make_dls(), F.cross_entropy)
    for load in (lambda: other.load(tmp_path / 'ck.pt'), lambda: other.fit(1, resume=tmp_path / 'ck.pt')):
        with pytest.raises(CheckpointError) as e:
            load()
        msg = str(e.value)
        assert 'missing keys: 3.weight, 3.bias' in msg and 'unexpected keys: 4.weight, 4.bias' in msg
        assert '0.weight (checkpoint [16, 6], model [32, 6])' in msg and 'different model' in msg
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_unreadable_checkpoints_say_why(tmp_path):
    with pytest.raises(FileNotFoundError, match='No checkpoint'):
        load_checkpoint(tmp_path / 'nope.pt')
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / 'bare.pt')
    with pytest.raises(CheckpointError, match='not a miniai checkpoint'):
        load_checkpoint(tmp_path / 'bare.pt')
    (tmp_path / 'cut.pt').write_bytes((tmp_path / 'bare.pt').read_bytes()[:50])
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        load_checkpoint(tmp_path / 'cut.pt')


def test_resume_checks_the_epoch_count_and_a_finished_run_stays_finished(tmp_path):
    torch.manual_seed(0)
    learn = make_learner(cbs=[CheckpointCB(tmp_path)])
    learn.fit(N_EPOCHS)
    with pytest.raises(ValueError, match='pass at least 3'):
        make_learner().fit(2, resume=tmp_path)
    assert_same_run(learn, resume(tmp_path, cbs=[CheckpointCB(tmp_path)]))


def test_checkpointcb_keeps_the_best_and_saves_every_n_epochs(tmp_path):
    torch.manual_seed(0)
    saved = []
    learn = make_learner(cbs=[CheckpointCB(tmp_path / 'run.pt', every=2, monitor='valid_loss'),
                              CheckpointCB(tmp_path / 'acc', every=0, monitor='acc', mode='max')])
    learn.save = lambda p: saved.append((learn.epoch, Path(p).name)) or Learner.save(learn, p)
    learn.fit(N_EPOCHS)
    rows = cb_of(learn, MetricsCB).history
    valid_losses = [r['loss'] for r in rows if not r['train']]
    regular = [e for e, name in saved if name == 'run.pt']
    assert regular == [1, 2]  # every 2 epochs, and after the last
    best = load_checkpoint(tmp_path / 'run_best.pt')
    assert best['cbs']['CheckpointCB_0']['best'] == min(valid_losses)
    assert best['epoch'] == valid_losses.index(min(valid_losses)) + 1
    best_acc = max(r['acc'] for r in rows if not r['train'])
    assert load_checkpoint(tmp_path / 'acc' / 'best.pt')['cbs']['CheckpointCB_1']['best'] == best_acc
    assert not (tmp_path / 'acc' / 'checkpoint.pt').exists()


def test_lr_find_leaves_the_checkpoints_alone(tmp_path):
    lr_finder = pytest.importorskip('miniai.lr_finder')
    torch.manual_seed(0)
    learn = make_learner(cbs=[CheckpointCB(tmp_path, monitor='valid_loss')])
    learn.fit(N_EPOCHS)
    files = {p: p.read_bytes() for p in tmp_path.iterdir()}
    lr_finder.lr_find(learn, num_it=6)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == files


def test_checkpointcb_rejects_unknown_monitors_and_modes(tmp_path):
    with pytest.raises(ValueError, match="'valid_loss', 'train_loss'|valid_loss"):
        make_learner(cbs=[CheckpointCB(tmp_path, monitor='accuracy', mode='max')]).fit(N_EPOCHS)
    with pytest.raises(ValueError, match="'min' or 'max'"):
        CheckpointCB(tmp_path, mode='lowest')
    with pytest.raises(ValueError, match='needs a MetricsCB'):
        TrainLearner(nn.Linear(6, 3), make_dls(), F.cross_entropy,
                     cbs=[CheckpointCB(tmp_path, monitor='valid_loss')]).fit(1)


def test_callback_states_are_keyed_by_class_and_index_and_mismatches_warn(tmp_path):
    torch.manual_seed(0)
    learn = make_learner(cbs=[RecorderCB(lr=rec_lr)], epochs=1)
    learn.fit(1)
    learn.save(tmp_path / 'ck.pt')
    ck = load_checkpoint(tmp_path / 'ck.pt')
    assert ck['cbs']['RecorderCB_1'] == {'recs': {'lr': cb_of(learn, RecorderCB).recs['lr']}}
    with pytest.warns(UserWarning, match=r"\(ignored\): \['RecorderCB_1'\]"):
        make_learner(epochs=1).fit(1, resume=tmp_path / 'ck.pt')


def test_cli_resumes_after_ctrl_c_bit_identical(fmnist_dir, tmp_path, monkeypatch, capsys):
    from miniai.cli import main
    if threading.current_thread() is not threading.main_thread():
        pytest.skip('signals are handled in the main thread only')
    run = ['fit', '--epochs', '2', '--limit-batches', '2', '--bs', '64', '--device', 'cpu',
           '--data', str(fmnist_dir), '--out']
    main([*run, str(tmp_path / 'a')])
    assert (tmp_path / 'a' / 'checkpoint.pt').is_file()

    after_step = RecorderCB.after_step
    def ctrl_c_at_step_1(self, learn):
        after_step(self, learn)
        if learn.train_iter == 1:
            signal.raise_signal(signal.SIGINT)
    monkeypatch.setattr(RecorderCB, 'after_step', ctrl_c_at_step_1)
    with pytest.raises(SystemExit) as e:
        main([*run, str(tmp_path / 'b')])
    assert e.value.code == 130
    assert f"continue with: miniai fit --resume {tmp_path / 'b'}" in capsys.readouterr().out
    assert not (tmp_path / 'b' / 'model.pt').exists()
    monkeypatch.undo()

    main(['fit', '--resume', str(tmp_path / 'b')])
    a, b = (torch.load(tmp_path / d / 'model.pt', weights_only=True) for d in 'ab')
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [[{k: v for k, v in r.items() if k != 'seconds'}
             for r in json.loads((tmp_path / d / 'metrics.json').read_text())] for d in 'ab']
    assert rows[0] == rows[1] and len(rows[0]) == 2


def test_resume_with_the_device_loader_replays_its_shuffles(tmp_path):
    """`DeviceLoader` draws each epoch's order from its own seed and epoch counter, which checkpoints keep."""
    from miniai.data import DataLoaders, DeviceLoader
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (40, 4, 4), dtype=torch.uint8, generator=g), torch.randint(0, 3, (40,), generator=g)

    def run(cbs, seed, resume=None):
        torch.manual_seed(seed)
        dls = DataLoaders(DeviceLoader(x[:32], y[:32], bs=8, shuffle=True, device='cpu'),
                          DeviceLoader(x[32:], y[32:], bs=8, device='cpu'))
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        learn = TrainLearner(model, dls, F.cross_entropy, lr=0.1, cbs=cbs)
        learn.fit(N_EPOCHS, resume=resume)
        return learn

    ref = run([], 0)
    run([CheckpointCB(tmp_path), StopAfterEpoch(1, CancelFitException)], 0)
    # another seed: the loader's own seed must come from the checkpoint
    res = run([CheckpointCB(tmp_path)], 1234, resume=tmp_path)
    assert torch.equal(ref.model[1].weight, res.model[1].weight)


class At(Callback):
    """Calls `act` in event `event` of training batch `it` of `epoch` (validation batch, with `valid`), and
    raises what it returns, if anything (e.g. `act=CancelFitException`)."""
    order = 100  # after the other callbacks: the batch is done when it stops in `after_batch`

    def __init__(self, event, epoch, it, act, valid=False):
        self.at, self.act, self.valid = (epoch, it), act, valid
        setattr(self, event, self._act)

    def _act(self, learn):
        if learn.training != self.valid and (learn.epoch, learn.iter) == self.at and (exc := self.act()):
            raise exc


def ctrl_c(times=1):
    for _ in range(times):
        signal.raise_signal(signal.SIGINT)


def weights(learn): return [v.clone() for v in learn.model.state_dict().values()]


def same_weights(a, b): return all(torch.equal(v, w) for v, w in zip(weights(a), weights(b), strict=True))


def test_resume_after_a_cancelled_batch_goes_on_after_it(tmp_path):
    """A cancelled batch took no step, but it was read: the checkpoint's position counts it."""
    cancel = lambda: At('after_loss', 1, 1, CancelBatchException)
    torch.manual_seed(0)
    ref = make_learner(cbs=[cancel()])
    ref.fit(N_EPOCHS)
    torch.manual_seed(0)
    learn = make_learner(cbs=[cancel(), At('after_batch', 1, 2, CancelFitException)])
    learn.fit(N_EPOCHS)
    learn.save(tmp_path / 'ck.pt')
    ck = load_checkpoint(tmp_path / 'ck.pt')
    assert (ck['epoch'], ck['iter'], ck['train_iter']) == (1, 3, N_BATCHES + 2)  # 3 batches read, 2 steps
    torch.manual_seed(1234)
    res = make_learner()
    res.fit(N_EPOCHS, resume=tmp_path / 'ck.pt')
    assert same_weights(ref, res) and res.train_iter == ref.train_iter == N_EPOCHS * N_BATCHES - 1


def test_resume_with_a_dataloader_that_has_its_own_generator_is_bit_identical(tmp_path):
    """`DataLoader(..., generator=g)` shuffles with `g`, not the global RNG: checkpoints keep its state."""
    gen = lambda seed: torch.Generator().manual_seed(seed)
    torch.manual_seed(0)
    ref = make_learner(dls=make_dls(gen(5)))
    ref.fit(N_EPOCHS)
    torch.manual_seed(0)
    learn = make_learner(cbs=[At('after_batch', 1, 1, CancelFitException)], dls=make_dls(gen(5)))
    learn.fit(N_EPOCHS)
    learn.save(tmp_path / 'ck.pt')
    torch.manual_seed(1234)
    res = make_learner(dls=make_dls(gen(99)))  # another seed: the state must come from the checkpoint
    res.fit(N_EPOCHS, resume=tmp_path / 'ck.pt')
    assert same_weights(ref, res)


def test_resume_refuses_a_phase_the_fit_does_not_run(tmp_path):
    torch.manual_seed(0)
    learn = make_learner(cbs=[At('after_batch', 1, 0, CancelFitException, valid=True)])
    learn.fit(N_EPOCHS)
    learn.save(tmp_path / 'valid.pt')  # stopped in epoch 1's validation
    other = make_learner()
    before = weights(other)
    with pytest.raises(ValueError, match=r"valid phase of epoch 1, which this fit \(phases \('train',\)\)"):
        other.fit(N_EPOCHS, valid=False, resume=tmp_path / 'valid.pt')
    learn = make_learner(cbs=[At('after_batch', 1, 1, CancelFitException)])
    learn.fit(N_EPOCHS)
    learn.save(tmp_path / 'train.pt')  # stopped in epoch 1's training
    with pytest.raises(ValueError, match=r"train phase of epoch 1.*resume with the train/valid arguments"):
        other.fit(N_EPOCHS, train=False, resume=tmp_path / 'train.pt')
    assert all(torch.equal(a, b) for a, b in zip(before, weights(other), strict=True))


def assert_same_checkpoint(a, b, path='ck'):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_checkpoint(a[k], b[k], f'{path}[{k!r}]')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_checkpoint(x, y, f'{path}[{i}]')
    else:
        assert a == b, path


@pytest.mark.parametrize('stop', [At('after_batch', 1, 1, CancelFitException), StopAfterEpoch(1, CancelFitException)])
def test_load_then_save_writes_the_same_checkpoint(tmp_path, stop):
    torch.manual_seed(0)
    learn = make_learner(cbs=[stop])
    learn.fit(N_EPOCHS)
    learn.save(tmp_path / 'a.pt')
    torch.manual_seed(1234)
    other = make_learner()
    other.load(tmp_path / 'a.pt')
    other.save(tmp_path / 'b.pt')
    a, b = load_checkpoint(tmp_path / 'a.pt'), load_checkpoint(tmp_path / 'b.pt')
    assert (b['epoch'], b['phase'], b['iter']) == (a['epoch'], a['phase'], a['iter']) and a['epoch'] >= 1
    del a['cbs']['MetricsCB_0']['history'][-1]['time'], b['cbs']['MetricsCB_0']['history'][-1]['time']
    assert_same_checkpoint(a, b)


def test_a_refused_resume_or_load_changes_nothing(tmp_path):
    torch.manual_seed(0)
    saved = make_learner()
    saved.create_opt()
    saved.save(tmp_path / 'adamw.pt')
    model = make_learner().model
    before = [v.clone() for v in model.state_dict().values()]
    sgd = TrainLearner(model, make_dls(), F.cross_entropy, opt_func=optim.SGD)
    two_groups = TrainLearner(model, make_dls(), F.cross_entropy, opt_func=optim.AdamW,
                              splitter=lambda m: [{'params': m[0].parameters()}, {'params': m[1:].parameters()}])
    for learn, why in ((sgd, 'optimizer is AdamW but this Learner.s is SGD'), (two_groups, 'param groups of')):
        with pytest.raises(ValueError, match=why):
            learn.fit(1, resume=tmp_path / 'adamw.pt')
        with pytest.raises(ValueError, match=why):
            learn.load(tmp_path / 'adamw.pt')
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values(), strict=True))


@main_thread_only
def test_ctrl_c_after_the_last_batch_still_stops(tmp_path):
    """A Ctrl-C that comes after the last batch (here just after the last checkpoint) is not dropped."""
    torch.manual_seed(0)
    last_valid_batch = len(make_dls().valid) - 1
    learn = make_learner(cbs=[InterruptCB(), CheckpointCB(tmp_path),
                              At('after_epoch', N_EPOCHS - 1, last_valid_batch, ctrl_c, valid=True)])
    with pytest.raises(FitInterrupted):
        learn.fit(N_EPOCHS)
    assert load_checkpoint(tmp_path)['epoch'] == N_EPOCHS  # the finished run, saved before the stop


@main_thread_only
def test_a_second_ctrl_c_stops_mid_batch_with_a_plain_keyboard_interrupt():
    torch.manual_seed(0)
    learn = make_learner(cbs=[InterruptCB(), At('after_step', 0, 1, partial(ctrl_c, 2))])
    with pytest.raises(KeyboardInterrupt) as e:
        learn.fit(N_EPOCHS)
    assert type(e.value) is KeyboardInterrupt and learn.train_iter == 1  # mid-batch: step 2 taken, not counted


@main_thread_only
def test_cli_keeps_the_last_checkpoint_when_stopped_mid_batch(tiny_fmnist, tmp_path, monkeypatch, capsys):
    from miniai.cli import main
    run = ['fit', '--epochs', '2', '--limit-batches', '2', '--bs', '16', '--device', 'cpu',
           '--data', str(tiny_fmnist), '--out']
    main([*run, str(tmp_path / 'a')])

    after_step = RecorderCB.after_step
    def two_ctrl_c_at_step_3(self, learn):  # in the second epoch, after the first epoch's checkpoint
        after_step(self, learn)
        if learn.train_iter == 3:
            ctrl_c(2)
    monkeypatch.setattr(RecorderCB, 'after_step', two_ctrl_c_at_step_3)
    with pytest.raises(SystemExit) as e:
        main([*run, str(tmp_path / 'b')])
    assert e.value.code == 130
    out = capsys.readouterr().out
    assert 'Interrupted mid-batch, so nothing was saved' in out and f'--resume {tmp_path / "b"}' in out
    assert load_checkpoint(tmp_path / 'b')['epoch'] == 1  # the one saved after the first epoch
    assert [r['epoch'] for r in json.loads((tmp_path / 'b' / 'metrics.json').read_text())] == [0]  # kept
    monkeypatch.undo()

    main(['fit', '--resume', str(tmp_path / 'b')])
    a, b = (torch.load(tmp_path / d / 'model.pt', weights_only=True) for d in 'ab')
    assert all(torch.equal(a[k], b[k]) for k in a)


@main_thread_only
def test_cli_a_ctrl_c_during_the_interrupt_save_keeps_the_last_checkpoint(tiny_fmnist, tmp_path, monkeypatch,
                                                                          capsys):
    from miniai.cli import main
    from miniai.learner import Learner
    run = ['fit', '--epochs', '2', '--limit-batches', '2', '--bs', '16', '--device', 'cpu', '--data', str(tiny_fmnist),
           '--out', str(tmp_path)]
    after_step, save = RecorderCB.after_step, Learner.save
    def ctrl_c_at_step_3(self, learn):  # in the second epoch, after the first epoch's checkpoint
        after_step(self, learn)
        if learn.train_iter == 3:
            ctrl_c()
    def interrupted_save(self, path):
        if not self._fitting:  # the interrupt's checkpoint, after the fit: a second Ctrl-C while it is written
            raise KeyboardInterrupt
        return save(self, path)
    monkeypatch.setattr(RecorderCB, 'after_step', ctrl_c_at_step_3)
    monkeypatch.setattr(Learner, 'save', interrupted_save)
    with pytest.raises(SystemExit) as e:
        main(run)
    assert e.value.code == 130
    out = capsys.readouterr().out
    assert f'Interrupted again while saving: the last checkpoint, {tmp_path / "checkpoint.pt"}, is kept' in out
    assert load_checkpoint(tmp_path)['epoch'] == 1


def test_checkpointcb_monitor_needs_a_metricscb_in_this_fit(tmp_path):
    torch.manual_seed(0)
    learn = TrainLearner(nn.Linear(6, 3), make_dls(), F.cross_entropy)
    learn.fit(1, cbs=[MetricsCB()])  # `learn.metrics` stays, to be read, but is not in the next fit
    with pytest.raises(ValueError, match='needs a MetricsCB'):
        learn.fit(1, cbs=[CheckpointCB(tmp_path, monitor='valid_loss')])


def test_a_resume_refused_by_a_callback_changes_nothing(tmp_path):
    """Refused in a callback's `before_fit` (a bad monitor) or by a callback's state (other metrics): the
    weights and the optimizer's state stay as they were."""
    torch.manual_seed(0)
    learn = make_learner()
    learn.fit(N_EPOCHS)
    learn.save(tmp_path / 'ck.pt')
    torch.manual_seed(1)
    other = make_learner()
    other.fit(N_EPOCHS)  # trained in memory, not saved
    before, opt_before = weights(other), copy.deepcopy(other.opt.state_dict())
    with pytest.raises(ValueError, match="monitor='nope'"):
        other.fit(N_EPOCHS, resume=tmp_path / 'ck.pt', cbs=[CheckpointCB(tmp_path / 'x', monitor='nope', mode='max')])
    other.remove_cb(cb_of(other, MetricsCB)).add_cb(MetricsCB(acc=MulticlassAccuracy(), f1=MulticlassAccuracy()))
    with pytest.raises(ValueError, match=r"the checkpoint's metrics are \['acc', 'loss'\], this MetricsCB's "
                                         r"\['acc', 'f1', 'loss'\]"):
        other.fit(N_EPOCHS, resume=tmp_path / 'ck.pt')
    assert all(torch.equal(a, b) for a, b in zip(before, weights(other), strict=True))
    assert_same_checkpoint(opt_before['state'], other.opt.state_dict()['state'])  # (a scheduler built in
    # `before_fit` has set its first lr, as it does in every fit)


class BigLoss(Callback):
    """Scales the loss so that fp16 gradients overflow at the grad scaler's initial scale, which then drops."""
    def after_loss(self, learn): learn.loss = learn.loss * 100


class ScaleAtStart(Callback):
    """Keeps the grad scaler's scale at the start of the fit, and ends the fit there."""
    order = MixedPrecision.order + 1

    def before_fit(self, learn):
        self.scale = learn.grad_scaler.get_scale()
        raise CancelFitException


def test_fp16_resume_restores_the_grad_scaler_and_is_bit_identical(tmp_path):
    fp16 = lambda *cbs: make_learner(cbs=[MixedPrecision(torch.float16), BigLoss(), *cbs])
    torch.manual_seed(0)
    ref = fp16()
    ref.fit(N_EPOCHS)
    torch.manual_seed(0)
    learn = fp16(At('after_batch', 1, 1, CancelFitException))
    learn.fit(N_EPOCHS)
    learn.save(tmp_path / 'ck.pt')
    scaler = load_checkpoint(tmp_path / 'ck.pt')['cbs']['MixedPrecision_0']['scaler']
    assert scaler['scale'] < 2. ** 16  # overflows lowered it
    torch.manual_seed(1234)
    res = fp16()
    res.fit(N_EPOCHS, resume=tmp_path / 'ck.pt')
    assert_same_run(ref, res)
    loaded = fp16(start := ScaleAtStart())  # loaded before any fit: the next fit's scaler starts from it
    loaded.load(tmp_path / 'ck.pt')
    assert cb_of(loaded, MixedPrecision).state_dict() == {'scaler': scaler}
    loaded.fit(N_EPOCHS)
    assert start.scale == scaler['scale']


def test_checkpointcb_refuses_a_best_kept_for_another_monitor_or_mode(tmp_path):
    saved = {**CheckpointCB(tmp_path, monitor='valid_loss').state_dict(), 'best': 0.5}
    for cb in (CheckpointCB(tmp_path, monitor='acc', mode='max'), CheckpointCB(tmp_path, monitor='valid_loss',
                                                                                mode='max')):
        with pytest.raises(ValueError, match="CheckpointCB: the checkpoint's CheckpointCB watched "
                                             "monitor='valid_loss', mode='min'; this one monitor="):
            cb.load_state_dict(saved)
        assert cb.best is None
    old = CheckpointCB(tmp_path, monitor='acc', mode='max')
    old.load_state_dict({'best': 0.75})  # saved before monitor and mode were kept
    assert old.best == 0.75


class NumpyState(Callback):
    """A state that torch.save takes but torch.load(..., weights_only=True) refuses: a numpy number."""
    def state_dict(self): return {'best': np.float64(0.5)}
    def load_state_dict(self, sd): pass


def test_a_callback_state_that_would_not_load_is_named_at_save_and_at_load(tmp_path):
    learn = make_learner(cbs=[NumpyState(), CheckpointCB(tmp_path)], epochs=1)
    for save in (lambda: learn.save(tmp_path / 'ck.pt'), lambda: learn.fit(1)):
        with pytest.raises(TypeError, match=r"cbs\['NumpyState_0'\]\['best'\] is a numpy.float64.*state_dict of "
                                            r'callback NumpyState_0 return only tensors, numbers, strings, lists'):
            save()
    assert list(tmp_path.iterdir()) == []
    torch.save(learn.state_dict(), tmp_path / 'np.pt')  # unchecked
    with pytest.raises(CheckpointError, match=r"holds a numpy\S*scalar.*a callback's state_dict returned it, make "
                                              'it return only tensors, numbers'):
        load_checkpoint(tmp_path / 'np.pt')


class Thing:
    """Not a tensor, number, string or container."""


class HistoryCB(Callback):
    def __init__(self, history): self.history = history
    def state_dict(self): return {'history': self.history}
    def load_state_dict(self, sd): self.history = sd['history']


def test_a_state_holding_an_object_is_refused_at_save_naming_its_path(tmp_path):
    learn = make_learner(cbs=[HistoryCB([0.5, {'a': 1}, (2, 'x'), Thing()])], epochs=1)
    with pytest.raises(TypeError, match=r"cbs\['HistoryCB_0'\]\['history'\]\[3\] is a test_checkpoint.Thing, .*"
                                        'state_dict of callback HistoryCB_0 return only tensors, numbers'):
        learn.save(tmp_path / 'ck.pt')
    cb_of(learn, HistoryCB).history = [{(1, 2): 0.5, Thing(): 1}]
    with pytest.raises(TypeError, match=r"cbs\['HistoryCB_0'\]\['history'\]\[0\] has a key of type test_che"):
        learn.save(tmp_path / 'ck.pt')
    cb_of(learn, HistoryCB).history = [torch.zeros(2).as_subclass(Tagged)]
    with pytest.raises(TypeError, match=r"\['history'\]\[0\] is a test_checkpoint.Tagged"):
        learn.save(tmp_path / 'ck.pt')
    assert list(tmp_path.iterdir()) == []


class Tagged(torch.Tensor):
    """A tensor subclass, which weights_only loading refuses."""


def test_what_loads_back_is_saved_though_the_walk_does_not_know_it(tmp_path, monkeypatch):
    """E.g. MultiStepLR's state holds a Counter; tuple keys and sets load too, tried once per container."""
    history = [{(1, 2): 0.5}, {3, 4}] * 1000
    learn = make_learner(cbs=[BatchSchedCB(partial(lr_scheduler.MultiStepLR, milestones=[2, 4])),
                              HistoryCB(history)], epochs=1)
    learn.fit(1)
    loads, load = [], torch.load
    monkeypatch.setattr(torch, 'load', lambda *a, **kw: loads.append(1) or load(*a, **kw))
    learn.save(tmp_path / 'ck.pt')
    assert len(loads) == 2  # the scheduler's state, and the history
    assert load_checkpoint(tmp_path / 'ck.pt')['cbs']['HistoryCB_0']['history'] == history


def test_save_checks_the_state_without_loading_it(tmp_path, monkeypatch):
    """A long history is checked by its types, not by a torch.save/torch.load round trip."""
    state = [0.5] * 200_000, [{'loss': 1.0, 'epoch': 2, 'train': True, 'x': None}] * 1000, torch.float32
    learn = make_learner(cbs=[HistoryCB(list(state))], epochs=1)
    def no_load(*args, **kwargs): raise AssertionError('torch.load called during save')
    monkeypatch.setattr(torch, 'load', no_load)
    learn.save(tmp_path / 'ck.pt')
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / 'ck.pt')['cbs']['HistoryCB_0']['history'] == list(state)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)


@pytest.mark.filterwarnings('ignore:`torch.jit:FutureWarning', "ignore:'torch.load' received a zip file")
@pytest.mark.parametrize('model', [nn.Linear(2, 2), Net()])
def test_a_whole_saved_model_or_a_truncated_file_says_so(tmp_path, model):
    torch.save(model, tmp_path / 'model.pt')
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / 'model.pt')
    msg = str(e.value)
    assert 'whole model' in msg and 'model.state_dict()' in msg and 'learn.save' in msg
    assert 'not corrupt' not in msg and 'callback' not in msg
    make_learner().save(tmp_path / 'ck.pt')
    data = (tmp_path / 'ck.pt').read_bytes()
    (tmp_path / 'half.pt').write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='not a readable torch checkpoint.*truncated or corrupt') as e:
        load_checkpoint(tmp_path / 'half.pt')
    assert 'not corrupt' not in str(e.value)
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), tmp_path / 'ts.pt')
    with pytest.raises(CheckpointError, match=r'a TorchScript archive.*torch.jit.load'):
        load_checkpoint(tmp_path / 'ts.pt')


def test_save_into_an_existing_folder_writes_its_checkpoint_pt(tmp_path):
    learn = make_learner(epochs=1)
    assert learn.save(tmp_path) == tmp_path / 'checkpoint.pt'  # as load and CheckpointCB read a folder
    learn.load(tmp_path)
    assert learn.save(tmp_path / 'new').is_file()  # a path that is not a folder (yet) is the file


def test_checkpointcb_every_is_a_whole_number_of_epochs(tmp_path):
    for every in (-1, 2.5, '2'):
        with pytest.raises(ValueError, match=r'every is a number of epochs, 1 or more \(0: only the best'):
            CheckpointCB(tmp_path, every=every)


def test_a_validation_only_fit_leaves_the_runs_checkpoint(tmp_path):
    learn = make_learner(cbs=[CheckpointCB(tmp_path, monitor='valid_loss')], epochs=1)
    learn.fit(1)
    saved = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    learn.fit(1, train=False)
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == saved


def test_a_fit_refused_in_before_fit_changes_nothing():
    """A monitor typo is caught at order 9, after MetricsCB, RecorderCB and the scheduler reset: all put back."""
    from miniai.early_stopping import EarlyStoppingCB
    torch.manual_seed(0)
    learn = make_learner()
    learn.fit(N_EPOCHS, cbs=[At('after_batch', 1, 1, CancelFitException)])
    before = copy.deepcopy(learn.state_dict())
    with pytest.raises(ValueError, match="monitor='accuracy' is not one of this fit's values"):
        learn.fit(N_EPOCHS, cbs=[EarlyStoppingCB(monitor='accuracy', mode='max')])  # the metric is 'acc'
    assert_same_checkpoint(before, learn.state_dict())
    assert len(cb_of(learn, RecorderCB).recs['lr']) == N_BATCHES + 2


def test_a_validation_only_fit_keeps_the_run_to_save_and_resume(tmp_path):
    """Train, validate, save: the checkpoint is the training run's, and resuming it trains nothing more."""
    from miniai.early_stopping import EarlyStoppingCB
    torch.manual_seed(0)
    learn = make_learner(cbs=[EarlyStoppingCB(monitor='train_loss', patience=5)])
    learn.fit(N_EPOCHS)
    before, es = copy.deepcopy(learn.state_dict()), cb_of(learn, EarlyStoppingCB).state_dict()
    learn.fit(1, train=False, cbs=[CheckpointCB(tmp_path / 'v', monitor='train_loss')])  # a train monitor: idle
    assert not cb_of(learn, MetricsCB).history[-1]['train']  # it validated
    after = learn.state_dict()
    for k in ('epoch', 'phase', 'iter', 'train_iter', 'n_epochs', 'should_stop'):
        assert after[k] == before[k], k
    assert cb_of(learn, EarlyStoppingCB).state_dict() == es and es['best'] is not None
    learn.save(tmp_path / 'ck.pt')
    res = make_learner(cbs=[EarlyStoppingCB(monitor='train_loss', patience=5)])
    res.fit(N_EPOCHS, resume=tmp_path / 'ck.pt')
    assert res.train_iter == N_EPOCHS * N_BATCHES and same_weights(learn, res)


def test_a_checkpoint_saved_before_the_optimizer_existed_restores_a_fresh_one(tmp_path):
    """`save` before any fit holds no optimizer: load or resume it, and the run starts over exactly."""
    torch.manual_seed(0)
    learn = make_learner()
    learn.save(tmp_path / 'init.pt')
    learn.fit(N_EPOCHS)
    first = weights(learn)
    learn.load(tmp_path / 'init.pt')
    assert not learn.opt.state  # the trained run's moments and step counts are gone
    learn.fit(N_EPOCHS)
    assert all(torch.equal(a, b) for a, b in zip(first, weights(learn)))
    learn.fit(N_EPOCHS, resume=tmp_path / 'init.pt')
    assert all(torch.equal(a, b) for a, b in zip(first, weights(learn)))
    torch.manual_seed(0)
    plain = TrainLearner(nn.Linear(6, 3), make_dls(), F.cross_entropy, lr=0.05)  # no schedule: the lrs are fit's
    plain.save(tmp_path / 'plain.pt')
    plain.fit(2)
    first = weights(plain)
    plain.fit(1, lr=0.5)
    plain.fit(2, resume=tmp_path / 'plain.pt')  # at learn.lr, as the saved run started, not at the last fit's
    assert all(torch.equal(a, b) for a, b in zip(first, weights(plain)))


class Accumulate(Callback):
    """Gradient accumulation: steps every third batch, across epoch ends too."""
    def before_fit(self, learn): self.n = 0
    def after_backward(self, learn):
        self.n += 1
        if self.n % 3: raise CancelBatchException()
    def state_dict(self): return {'n': self.n}
    def load_state_dict(self, sd): self.n = sd['n']


def test_resume_with_gradients_pending_is_bit_identical(tmp_path):
    """The checkpoint after epoch 0 (4 batches, a step every 3) holds the gradients of a batch not yet stepped."""
    torch.manual_seed(0)
    ref = make_learner(cbs=[Accumulate()])
    ref.fit(N_EPOCHS)
    torch.manual_seed(0)
    learn = make_learner(cbs=[Accumulate(), CheckpointCB(tmp_path / 'ck.pt'), StopAfterEpoch(0, CancelFitException)])
    learn.fit(N_EPOCHS)
    assert any(p.grad is not None for p in learn.model.parameters())
    torch.manual_seed(1234)
    res = make_learner(cbs=[Accumulate()])
    res.fit(N_EPOCHS, resume=tmp_path / 'ck.pt')
    assert same_weights(ref, res)


def test_an_older_checkpoint_whose_loader_left_a_lone_image_names_the_change(tmp_path):
    from miniai.data import DeviceLoader
    x, y = torch.randint(0, 256, (21, 6, 1), dtype=torch.uint8), torch.randint(0, 3, (21,))
    dls = SimpleNamespace(train=DeviceLoader(x, y, bs=4, shuffle=True, seed=0, device='cpu'),
                          valid=DeviceLoader(x, y, bs=4, device='cpu'))
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    learn = TrainLearner(model, dls, F.cross_entropy, cbs=[CheckpointCB(tmp_path)])
    learn.fit(1)
    ck = load_checkpoint(tmp_path)
    ck['n_batches']['train'] = 6  # as an older miniai, which kept the lone 21st image as a batch, saved it
    torch.save(ck, tmp_path / 'checkpoint.pt')
    with pytest.raises(CheckpointError, match='had 6 batches per epoch; this one has 5.*joins a lone last training '
                                              'image.*learn.load\\(path\\), then fit, trains on from it'):
        learn.fit(2, resume=tmp_path)


def test_a_save_after_a_batch_stopped_after_its_backward_holds_no_gradients(tmp_path):
    """Its gradients are in them, and the resume replays it: they must not count twice."""
    def plain(*cbs):  # no dropout: the batch's forward draws nothing, so its replay is exact
        torch.manual_seed(0)
        return TrainLearner(nn.Linear(6, 3), make_dls(), F.cross_entropy, lr=0.05, cbs=list(cbs))
    (ref := plain()).fit(N_EPOCHS)
    learn = plain(At('after_backward', 1, 2, KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        learn.fit(N_EPOCHS)
    learn.save(tmp_path / 'ck.pt')
    assert all(g is None for g in load_checkpoint(tmp_path / 'ck.pt')['grads'])
    (res := plain()).fit(N_EPOCHS, resume=tmp_path / 'ck.pt')
    assert same_weights(ref, res)


def test_save_to_a_path_ending_in_a_slash_makes_a_folder(tmp_path):
    learn = make_learner(epochs=1)
    assert learn.save(f'{tmp_path}/run/') == tmp_path / 'run' / 'checkpoint.pt'
    assert (tmp_path / 'run' / 'checkpoint.pt').is_file()
    learn.fit(1, cbs=[CheckpointCB(tmp_path / 'run')])  # the same folder, as CheckpointCB names it
    with pytest.warns(UserWarning, match=r"without a matching callback \(ignored\): \['CheckpointCB_0'\]"):
        learn.load(f'{tmp_path}/run/')
    assert learn.epoch == 1


@pytest.mark.skipif(not hasattr(signal, 'SIGKILL'), reason='needs SIGKILL')
def test_a_save_removes_the_temporary_files_of_saves_killed_mid_write(tmp_path):
    import subprocess
    import sys
    child = f'''if True:
        import os, signal, torch
        class Killed:  # the process is killed (OOM killer) while torch.save writes the file
            def __reduce__(self): os.kill(os.getpid(), signal.SIGKILL)
        torch.save({{'w': torch.zeros(1)}}, {str(tmp_path / 'ck.pt')!r})
        from miniai.checkpoint import atomic_save
        atomic_save({{'w': torch.zeros(1000), 'x': Killed()}}, {str(tmp_path / 'ck.pt')!r})'''
    assert subprocess.run([sys.executable, '-c', child]).returncode == -signal.SIGKILL
    leftover = [f.name for f in tmp_path.iterdir() if f.name != 'ck.pt']
    assert len(leftover) == 1 and leftover[0].startswith('.ck.pt.')
    os.utime(tmp_path / leftover[0], (0, 0))  # left long ago
    others = ['.other.pt.0123456789abcdef0123456789abcdef.tmp', 'ck.pt.bak', '.ck.pt.mine.tmp',
              '.ck.pt.0123456789abcdef0123456789abcdef.tmp']  # the last: another process's save, being written
    for name in others:
        (tmp_path / name).write_bytes(b'x')
    atomic_save({'w': torch.ones(1)}, tmp_path / 'ck.pt')
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(['ck.pt', *others])
    assert torch.load(tmp_path / 'ck.pt', weights_only=True) == {'w': torch.ones(1)}


def flip_a_bit_of(path, member):
    """Flip a bit in the data of zip `member` of the file at `path` (its local header has a padded extra field)."""
    import struct
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(member))
    raw = bytearray(path.read_bytes())
    n, m = struct.unpack('<HH', raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + n + m + 10] ^= 0x40
    path.write_bytes(bytes(raw))


def test_a_flipped_bit_in_the_tensor_data_is_refused_as_corrupt(tmp_path):
    torch.manual_seed(0)
    learn = make_learner(epochs=1)
    learn.fit(1)
    path = learn.save(tmp_path / 'ck.pt')
    flip_a_bit_of(path, '/data/0')
    assert torch.load(path, weights_only=True)  # torch.load does not check the CRCs
    for load in (lambda: load_checkpoint(path), lambda: make_learner().fit(N_EPOCHS, resume=path)):
        with pytest.raises(CheckpointError, match=rf'{path} is corrupt: its .*data/0 fails the zip CRC check.*'
                                                  'best checkpoint'):
            load()
    raw = bytearray(learn.save(tmp_path / 'records.pt').read_bytes())
    raw[raw.find(b'PK\x01\x02') + 6] ^= 1 << 6  # the first record's "version needed" field
    (tmp_path / 'records.pt').write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r'is corrupt: its zip records are damaged \(NotImplementedError'):
        load_checkpoint(tmp_path / 'records.pt')


def test_a_checkpoint_of_another_version_or_missing_keys_says_so(tmp_path):
    ck = make_learner().state_dict()
    torch.save({**ck, 'version': 2}, tmp_path / 'v2.pt')
    torch.save({k: v for k, v in ck.items() if k not in ('epoch', 'cbs')}, tmp_path / 'cut.pt')
    for name, match in (('v2.pt', r'saved by another miniai version \(checkpoint version 2\); this one reads '
                                  'version 1'),
                        ('cut.pt', 'miniai checkpoint but lacks epoch, cbs: it was not written by learn.save')):
        for load in (make_learner().load, lambda p: make_learner().fit(N_EPOCHS, resume=p)):
            with pytest.raises(CheckpointError, match=match):
                load(tmp_path / name)
    torch.manual_seed(0)
    learn = make_learner()
    learn.fit(N_EPOCHS, cbs=[StopAfterEpoch(0, CancelFitException)])
    ck = learn.state_dict()
    old = {k: v for k, v in ck.items() if k not in ('grads', 'should_stop', 'n_batches')}  # an older checkpoint
    torch.save(old, tmp_path / 'old.pt')
    assert make_learner().load(tmp_path / 'old.pt').epoch == 1
    assert_same_run(reference(), resume(tmp_path / 'old.pt'))
