"""Data-parallel training: 2 CPU processes (gloo) launched by `torchrun` or by Hugging Face Accelerate's
`accelerate launch` run an unchanged Learner with `DDPCB`.

Run as a script (`torchrun --nproc_per_node 2 tests/test_distributed.py OUT`), this file is the worker: each
process trains on synthetic data and writes what it saw to OUT/rank<r>.pt for the tests to check.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)

from miniai import (
    DDPCB,
    FMNIST_MEAN,
    FMNIST_STD,
    Callback,
    CancelFitException,
    ChannelsLastCB,
    CheckpointCB,
    CompileCB,
    DeviceCB,
    DeviceLoader,
    EarlyStoppingCB,
    MetricsCB,
    ParamScheduler,
    TrainLearner,
    get_rank,
    get_world_size,
    is_main_process,
    sched_cos,
    shard_loader,
)

N_TRAIN, N_VALID, BS = 96, 50, 8


def synthetic(n: int, seed: int) -> TensorDataset:
    """`(x, y, index)` items; the index tells which items each process saw."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long(), torch.arange(n))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


class SeenCB(Callback):
    """Logs each batch: (training, epoch, item ids, summed loss, correct predictions)."""
    def before_fit(self, learn):
        self.log, self.n_iter = [], learn.n_iter

    def after_batch(self, learn):
        x, y, ids = learn.batch
        self.log.append((learn.training, learn.epoch, ids.tolist(), learn.loss.item() * len(y),
                         (learn.preds.argmax(1) == y).sum().item()))


def fit(dls, model, n_epochs=2, cbs=()):
    from torcheval.metrics import MulticlassAccuracy
    metrics, seen = MetricsCB(accuracy=MulticlassAccuracy()), SeenCB()
    learn = TrainLearner(model, dls, F.cross_entropy, lr=0.1, opt_func=optim.SGD,
                         cbs=[DeviceCB('cpu'), DDPCB(), metrics, seen, *cbs])
    learn.fit(n_epochs)
    return learn, metrics, seen


class IdsLoader(DeviceLoader):
    """A `DeviceLoader` whose batches also carry the item ids (coded in each image's first pixel)."""
    def __iter__(self):
        for x, y in super().__iter__():
            yield x, y, ((x[:, 0, 0, 0] * FMNIST_STD + FMNIST_MEAN) * 255).round().long()


def worker(out: Path) -> None:
    """One process of the torchrun launch: a torch DataLoader fit, then a DeviceLoader fit."""
    dls = SimpleNamespace(train=DataLoader(synthetic(N_TRAIN, 0), BS, shuffle=True),
                          valid=DataLoader(synthetic(N_VALID, 1), BS))
    learn, metrics, seen = fit(dls, mlp())
    res = dict(rank=get_rank(), world_size=get_world_size(), main=is_main_process(), history=metrics.history,
               seen=seen.log, n_iter=seen.n_iter, wrapped=isinstance(learn.model, DistributedDataParallel),
               state=learn.model.state_dict(), preds=learn.get_preds())
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8, generator=g)
    x[:, 0, 0] = torch.arange(64)
    y = torch.randint(0, 10, (64,), generator=g)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    # Shuffle seeds and epoch counters differ per process (the main one peeks at a batch): DDPCB must give all
    # rank 0's state, or the shares would overlap.
    dls = SimpleNamespace(train=IdsLoader(x, y, bs=8, shuffle=True, device='cpu', seed=get_rank()),
                          valid=IdsLoader(x[:20], y[:20], bs=8, device='cpu'))
    if is_main_process():
        next(iter(dls.train))
    _, metrics, seen = fit(dls, model, n_epochs=1)
    res['fast'] = dict(seen=seen.log, n_iter=seen.n_iter, history=metrics.history)
    res['resumed_same'] = resumed_equals_uninterrupted(out / 'checkpoint.pt')
    res['refits'] = refit_orders()
    res['compiled'] = compiled_channels_last_fits()
    # 'max' of a falling training loss: no better after epoch 0, so it stops after epoch 1, on every process.
    es = EarlyStoppingCB(monitor='train_loss', mode='max', patience=1)
    dls = SimpleNamespace(train=DataLoader(synthetic(N_TRAIN, 0), BS, shuffle=True),
                          valid=DataLoader(synthetic(N_VALID, 1), BS))
    learn, metrics, _ = fit(dls, mlp(), n_epochs=5, cbs=[es])
    res['early'] = dict(stopped=es.stopped_epoch, epochs=sorted({h['epoch'] for h in metrics.history}))
    res.update(lr_find_preds_and_warnings())
    res['uneven_resume'] = resume_with_uneven_validation_shares(out / 'uneven.pt')
    torch.save(res, out / f'rank{get_rank()}.pt')


def lr_find_preds_and_warnings() -> dict:
    """`lr_find` over the shards (6 batches per process, 10 asked: two epochs), the shard of a `DeviceLoader`
    given to `get_preds`, and whether `init_distributed` silences this process's warnings."""
    from miniai import init_distributed
    dls = SimpleNamespace(train=DataLoader(synthetic(N_TRAIN, 0), BS, shuffle=True),
                          valid=DataLoader(synthetic(N_VALID, 1), BS))
    learn = TrainLearner(mlp(), dls, F.cross_entropy, lr=0.1, opt_func=optim.SGD, cbs=[DeviceCB('cpu'), DDPCB()])
    found = learn.lr_find(num_it=10, show_plot=False)
    test_dl = DeviceLoader(torch.zeros(20, 6, 1, dtype=torch.uint8), torch.zeros(20).long(), bs=8, device='cpu')
    learn.model = nn.Sequential(nn.Flatten(), learn.model)
    learn.get_preds(test_dl)
    filters = warnings.filters[:]
    warnings.resetwarnings()
    init_distributed()
    silenced = any(f[0] == 'ignore' for f in warnings.filters)
    warnings.filters[:] = filters
    return dict(lr_find=(found.lrs, found.losses), test_dl_shard=(test_dl.rank, test_dl.world_size),
                silenced=silenced)


def resume_with_uneven_validation_shares(ck: Path) -> str:
    """Resume a run whose 17 validation items, in batches of 8, give the processes 2 and 1 batches."""
    def learner():
        dls = SimpleNamespace(train=DataLoader(synthetic(N_TRAIN, 0), BS, shuffle=True),
                              valid=DataLoader(synthetic(17, 1), BS))
        return TrainLearner(mlp(), dls, F.cross_entropy, lr=0.1, opt_func=optim.SGD,
                            cbs=[DeviceCB('cpu'), DDPCB(), CheckpointCB(ck)])
    learner().fit(1)
    torch.distributed.barrier()  # the main process has written the checkpoint
    try:
        learner().fit(2, resume=ck)
    except Exception as e:
        return f'{type(e).__name__}: {e}'
    return 'resumed'


class StopAfterFirstEpoch(Callback):
    order = CheckpointCB.order + 1  # after the epoch's checkpoint

    def after_epoch(self, learn):
        if not learn.training and learn.epoch == 0:
            raise CancelFitException()


def resumed_equals_uninterrupted(ck: Path) -> bool:
    """Whether the second fit of a run, stopped after its first epoch and resumed from its checkpoint in a new
    Learner, ends with the weights of a run that was not stopped (with a `ParamScheduler`, whose resume checks its
    saved values against its schedule over this process's shard). The resume must take the training orders after
    the first fit's, and the sampler's seed, from the checkpoint."""
    def run(cbs, resume=None):
        dls = SimpleNamespace(train=DataLoader(synthetic(N_TRAIN, 0), BS, shuffle=True),
                              valid=DataLoader(synthetic(N_VALID, 1), BS))
        model = mlp()
        if resume:  # other initial weights: the checkpoint's must replace them
            with torch.no_grad():
                for p in model.parameters(): p.add_(1.)
        learn = TrainLearner(model, dls, F.cross_entropy, lr=0.01, opt_func=optim.AdamW,
                             cbs=[DeviceCB('cpu'), DDPCB(), ParamScheduler({'lr': sched_cos(0.01, 0.001)})])
        if resume:
            torch.manual_seed(1)  # another global RNG than the stopped run's when its sampler drew its seed
        else:
            learn.fit(1)
        learn.fit(2, cbs=cbs, resume=resume)
        return learn.model.state_dict()
    ref = run([])
    run([CheckpointCB(ck), StopAfterFirstEpoch()])
    torch.distributed.barrier()  # the main process has written the checkpoint
    res = run([CheckpointCB(ck)], resume=ck)
    return all(torch.equal(ref[k], res[k]) for k in ref)


def refit_orders() -> list[list[int]]:
    """The items this process trained on in each of two one-epoch, training-only fits in a row, with no
    validation loader and a generator seeded differently on each process (DDPCB must give all rank 0's seed)."""
    dls = SimpleNamespace(train=DataLoader(synthetic(N_TRAIN, 0), BS, shuffle=True,
                                           generator=torch.Generator().manual_seed(get_rank())), valid=None)
    seen = SeenCB()
    learn = TrainLearner(mlp(), dls, F.cross_entropy, lr=0.1, opt_func=optim.SGD, cbs=[DeviceCB('cpu'), DDPCB(), seen])
    orders = []
    for _ in range(2):
        learn.fit(1, valid=False)
        orders.append(sum((o[2] for o in seen.log), []))
    return orders


def compiled_channels_last_fits() -> dict:
    """Two fits of a conv net with `ChannelsLastCB` and `CompileCB` (a backend that counts its graphs): how many
    graphs each fit compiled, whether the plain module is the compiled one, and the warnings seen."""
    n_graphs = [0]

    def backend(gm, inputs):
        n_graphs[0] += 1
        return gm.forward
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
    dls = SimpleNamespace(train=DataLoader(TensorDataset(x, y), BS, shuffle=True),
                          valid=DataLoader(TensorDataset(x, y), BS))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(36, 10))
    learn = TrainLearner(model, dls, F.cross_entropy, lr=0.1, opt_func=optim.SGD,
                         cbs=[DeviceCB('cpu'), DDPCB(), ChannelsLastCB(), CompileCB(backend=backend)])
    graphs = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        for _ in range(2):
            learn.fit(1)
            graphs.append(n_graphs[0] - sum(graphs))
    return dict(graphs=graphs, plain_compiled=learn.model._compiled_call_impl is not None,
                warnings=[str(w.message) for w in seen])


def n_tables(out: str) -> int:
    """How many `MetricsCB` tables (header lines) were printed."""
    return sum(line.split() == ['accuracy', 'loss', 'epoch', 'train', 'time'] for line in out.splitlines())


LAUNCHERS = {  # two processes on this machine; `accelerate launch --multi_gpu` runs torchrun's launcher
    'torchrun': [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2'],
    'accelerate': [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
                   '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no'],
}


def launch(launcher: str, *args, timeout=120) -> subprocess.CompletedProcess:
    if launcher == 'accelerate':
        pytest.importorskip('accelerate', reason='`accelerate launch` needs Hugging Face Accelerate installed')
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    res = subprocess.run([*LAUNCHERS[launcher], *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


@pytest.fixture(scope='module', params=list(LAUNCHERS))
def launched(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f'ddp-{request.param}')
    proc = launch(request.param, __file__, str(out))
    return proc, [torch.load(out / f'rank{r}.pt', weights_only=False) for r in range(2)]


def test_a_resumed_fit_ends_as_the_uninterrupted_one(launched):
    assert [r['resumed_same'] for r in launched[1]] == [True, True]


def items(log, training, epoch=None):
    return [o for o in log if o[0] == training and (epoch is None or o[1] == epoch)]


def test_both_finish_and_only_main_prints(launched):
    proc, (r0, r1) = launched
    assert (r0['rank'], r0['world_size'], r0['main'], r1['rank'], r1['main']) == (0, 2, True, 1, False)
    assert n_tables(proc.stdout) == 3  # one table per fit with a MetricsCB, from rank 0 only
    assert not r0['wrapped'] and not any(k.startswith('module.') for k in r0['state'])  # unwrapped after fit


def test_each_process_sees_half_the_data(launched):
    _, ranks = launched
    for epoch in (0, 1):
        ids = [sum((o[2] for o in items(r['seen'], True, epoch)), []) for r in ranks]
        assert [len(items(r['seen'], True, epoch)) for r in ranks] == [N_TRAIN // BS // 2] * 2
        assert sorted(ids[0] + ids[1]) == list(range(N_TRAIN))
        vids = [sum((o[2] for o in items(r['seen'], False, epoch)), []) for r in ranks]
        assert sorted(vids[0] + vids[1]) == list(range(N_VALID))  # no padding: each item once
    assert ranks[0]['n_iter'] == 2 * N_TRAIN // BS // 2  # schedules see the sharded length
    e0, e1 = ([o[2] for o in items(ranks[0]['seen'], True, e)] for e in (0, 1))
    assert e0 != e1  # reshuffled each epoch (DistributedSampler.set_epoch)


def test_models_stay_identical(launched):
    _, (r0, r1) = launched
    for k, v in r0['state'].items():
        torch.testing.assert_close(v, r1['state'][k])


def test_metrics_are_global(launched):
    _, ranks = launched
    for r in ranks:
        for h in r['history']:
            seen = [o for rk in ranks for o in items(rk['seen'], h['train'], h['epoch'])]
            n = sum(len(o[2]) for o in seen)
            assert h['loss'] == pytest.approx(sum(o[3] for o in seen) / n, rel=1e-5)
            assert h['accuracy'] == pytest.approx(sum(o[4] for o in seen) / n, rel=1e-6)
    # The last validation row equals a single-process evaluation of the final model on the whole valid set.
    model = mlp()
    model.load_state_dict(ranks[0]['state'])
    x, y, _ = synthetic(N_VALID, 1).tensors
    with torch.no_grad():
        preds = model.eval()(x)
    last = ranks[0]['history'][-1]
    assert last['loss'] == pytest.approx(F.cross_entropy(preds, y).item(), rel=1e-5)
    assert last['accuracy'] == pytest.approx((preds.argmax(1) == y).float().mean().item())


def test_get_preds_gives_each_process_its_share(launched):
    _, ranks = launched
    ids = torch.cat([r['preds'][1][1] for r in ranks])
    assert sorted(ids.tolist()) == list(range(N_VALID))  # each item once, on one process
    model = mlp()
    model.load_state_dict(ranks[0]['state'])
    x, y, _ = synthetic(N_VALID, 1).tensors
    with torch.no_grad():
        torch.testing.assert_close(torch.cat([r['preds'][0] for r in ranks]), model.eval()(x[ids]))
    assert torch.equal(torch.cat([r['preds'][1][0] for r in ranks]), y[ids])


def test_lr_find_runs_its_batches_on_the_shards_with_the_mean_loss(launched):
    (lrs0, losses0), (lrs1, losses1) = (r['lr_find'] for r in launched[1])
    assert len(lrs0) == len(lrs1) == 10  # not the 6 of one epoch of this process's share
    assert lrs0 == lrs1 and losses0 == losses1  # every process the same curve, so the same suggestions


def test_get_preds_puts_back_the_shard_of_the_loader_it_was_given(launched):
    assert [r['test_dl_shard'] for r in launched[1]] == [(0, 1), (0, 1)]


def test_only_the_main_process_warns(launched):
    assert [r['silenced'] for r in launched[1]] == [False, True]


def test_a_resume_with_uneven_validation_shares_goes_through(launched):
    assert [r['uneven_resume'] for r in launched[1]] == ['resumed', 'resumed']


def test_an_unshuffled_device_loader_with_unequal_shares_is_refused_for_training():
    dl = DeviceLoader(torch.zeros(65, 2, 2, dtype=torch.uint8), torch.zeros(65).long(), bs=8, device='cpu')
    with pytest.raises(ValueError, match='unshuffled training DeviceLoader of 65 items would give the 2 processes 5 '
                                         'and 4 batches.*build it with shuffle=True'):
        shard_loader(dl, 0, 2)
    assert shard_loader(dl, 0, 2, train=False) is dl  # validation: every item once
    dl = DeviceLoader(torch.zeros(17, 2, 2, dtype=torch.uint8), torch.zeros(17).long(), bs=16, device='cpu')
    assert shard_loader(dl, 0, 2) is dl  # shares of 9 and 8 items: one batch each


def test_compile_and_channels_last_under_ddp(launched):
    for r in launched[1]:
        c = r['compiled']
        # Compiled once (a training and a validation graph), in the module DDP wraps: the second fit reuses them.
        assert c['graphs'][0] >= 1 and c['graphs'][1] == 0 and c['plain_compiled']
        assert not [w for w in c['warnings'] if 'strides' in w]  # DDP's buckets took the channels-last layout


def test_early_stopping_stops_every_process_at_the_same_epoch(launched):
    assert [r['early'] for r in launched[1]] == [dict(stopped=1, epochs=[0, 1])] * 2


def test_each_fit_reshuffles_over_disjoint_shares(launched):
    """Training-only fits with dls.valid None; `fit(1); fit(1)` must not replay the first fit's order."""
    (a0, a1), (b0, b1) = (r['refits'] for r in launched[1])
    assert sorted(a0 + b0) == sorted(a1 + b1) == list(range(N_TRAIN))
    assert a0 != a1


def test_device_loader_sharded_by_ddpcb(launched):
    _, ranks = launched
    ids = [sum((o[2] for o in items(r['fast']['seen'], True)), []) for r in ranks]
    assert [len(i) for i in ids] == [32, 32] and sorted(ids[0] + ids[1]) == list(range(64))
    assert [r['fast']['n_iter'] for r in ranks] == [4, 4]
    vids = [sum((o[2] for o in items(r['fast']['seen'], False)), []) for r in ranks]
    assert sorted(vids[0] + vids[1]) == list(range(20))
    rows = [[(h['loss'], h['accuracy']) for h in r['fast']['history']] for r in ranks]
    assert rows[0] == rows[1]  # every process reports the same, global, values


def test_single_process_is_unchanged():
    dls = SimpleNamespace(train=DataLoader(synthetic(16, 0), 8), valid=DataLoader(synthetic(8, 1), 8))
    learn, metrics, seen = fit(dls, mlp(), n_epochs=1)
    assert (get_rank(), get_world_size(), is_main_process()) == (0, 1, True)
    assert isinstance(learn.dls.train, DataLoader) and learn.dls.train is dls.train
    assert len(items(seen.log, True)) == 2 and not isinstance(learn.model, DistributedDataParallel)


def test_shard_loader():
    ds = synthetic(10, 0)
    shards = [shard_loader(DataLoader(ds, 2), r, 3, train=False) for r in range(3)]
    assert [len(s.sampler) for s in shards] == [4, 3, 3]  # validation: every item once, no padding
    train = [shard_loader(DataLoader(ds, 2, shuffle=True), r, 3) for r in range(3)]
    assert [len(s.sampler) for s in train] == [4, 4, 4] and train[0].sampler.shuffle
    dl = DeviceLoader(torch.zeros(10, 2, 2, dtype=torch.uint8), torch.zeros(10).long(), bs=2, device='cpu')
    assert shard_loader(dl, 1, 2) is dl and (dl.rank, dl.world_size, len(dl)) == (1, 2, 3)
    with pytest.raises(TypeError, match='cannot shard'):
        shard_loader([1, 2], 0, 2)


@pytest.mark.parametrize('kw, what', [
    (dict(batch_size=2, sampler=SubsetRandomSampler(range(4))), r'its sampler \(SubsetRandomSampler\)'),
    (dict(batch_size=2, sampler=WeightedRandomSampler([1.] * 10, 10)), r'its sampler \(WeightedRandomSampler\)'),
    (dict(batch_sampler=BatchSampler(SequentialSampler(range(10)), 4, False)), r'its batch_sampler \(BatchSampler\)'),
    (dict(batch_size=2, sampler=RandomSampler(range(10), replacement=True)), 'a RandomSampler that draws with repl')])
def test_shard_loader_refuses_what_it_would_replace(kw, what):
    dl = DataLoader(synthetic(10, 0), **kw)
    for train in (True, False):
        with pytest.raises(TypeError, match=f'cannot shard a DataLoader with {what}.*DDPCB\\(shard=False\\)'):
            shard_loader(dl, 0, 2, train=train)


def test_shard_loader_shards_a_loader_of_ready_made_batches():
    ds = [(torch.full((2,), float(i)), torch.tensor([i, i])) for i in range(6)]  # each item a whole batch
    loader = lambda: DataLoader(ds, batch_size=None, shuffle=True, generator=torch.Generator().manual_seed(0))
    shards = [shard_loader(loader(), r, 2) for r in range(2)]
    seen = [[int(y[0]) for _, y in s] for s in shards]
    assert sorted(seen[0] + seen[1]) == list(range(6)) and len(seen[0]) == 3


def test_ddpcb_counts_a_fit_from_the_next_one_so_its_checkpoints_hold_their_base():
    """A fit that stops early still counts all its epochs, but only when the next fit starts: a checkpoint
    saved after it resumes it with the sampler epochs it ran with (single process: the count alone)."""
    class StopAt(Callback):
        def after_batch(self, learn):
            if learn.epoch == 1 and learn.training:
                raise CancelFitException()
    dls = SimpleNamespace(train=DataLoader(synthetic(16, 0), 8), valid=DataLoader(synthetic(8, 1), 8))
    ddp = DDPCB()
    learn = TrainLearner(mlp(), dls, F.cross_entropy, lr=0.1, cbs=[ddp])
    learn.fit(3, cbs=[StopAt()])
    assert ddp.state_dict() == {'epochs_done': 0, 'last_fit': 3, 'seed': None}
    learn.fit(1, valid=False)
    assert ddp.state_dict()['epochs_done'] == 3
    learn.fit(1, train=False)  # a validation-only fit counts nothing, and leaves the count as the last fit did
    learn.fit(1, train=False)
    assert ddp.state_dict() == {'epochs_done': 3, 'last_fit': 1, 'seed': None}
    ddp.load_state_dict({'epochs_done': 2, 'seed': None})  # a state without last_fit: the fit was counted
    assert ddp.state_dict() == {'epochs_done': 2, 'last_fit': 0, 'seed': None}


def test_shard_loader_keeps_the_loaders_seed_and_options():
    ds = synthetic(12, 0)
    ids = lambda dl: torch.cat([b[2] for b in dl]).tolist()
    shuffled = lambda seed: DataLoader(ds, 4, shuffle=True, generator=torch.Generator().manual_seed(seed))
    assert shard_loader(shuffled(5), 0, 2).sampler.seed == 5
    assert ids(shard_loader(shuffled(1), 0, 2)) == ids(shard_loader(shuffled(1), 0, 2))
    assert ids(shard_loader(shuffled(1), 0, 2)) != ids(shard_loader(shuffled(2), 0, 2))
    seeds = []
    for s in (3, 3, 4):  # no generator: a seed from torch's global RNG
        torch.manual_seed(s)
        seeds.append(shard_loader(DataLoader(ds, 4, shuffle=True), 0, 2).sampler.seed)
    assert seeds[0] == seeds[1] != seeds[2]
    dl = DataLoader(ds, 4, shuffle=True, num_workers=2, prefetch_factor=8, timeout=30,
                    multiprocessing_context='spawn', pin_memory_device='cpu', in_order=False)
    for train in (True, False):
        s = shard_loader(dl, 1, 2, train=train)
        for k in ('num_workers', 'prefetch_factor', 'timeout', 'multiprocessing_context', 'generator',
                  'pin_memory_device', 'in_order'):
            assert getattr(s, k) == getattr(dl, k), k


@pytest.mark.parametrize('launcher', list(LAUNCHERS))
def test_miniai_fit_launched(launcher, fmnist_dir, tmp_path):
    proc = launch(launcher, '-m', 'miniai', 'fit', '--epochs', '1', '--limit-batches', '2', '--bs', '64',
                    '--device', 'cpu', '--data', str(fmnist_dir), '--out', str(tmp_path))
    assert n_tables(proc.stdout) == 1 and proc.stdout.count('valid accuracy') == 1
    assert {p.name for p in tmp_path.iterdir()} >= {'metrics.json', 'curves.png', 'model.pt'}
    assert not any(k.startswith('module.') for k in torch.load(tmp_path / 'model.pt'))


if __name__ == '__main__':
    worker(Path(sys.argv[1]))
