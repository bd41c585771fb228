"""Soak: 200 short fits in one process, with lr_find, checkpoints, resumes and `ActivationStats` hooks, must
not grow the memory or leave forward hooks on the model. Deselected by default; run it with `make soak`."""

import gc
import warnings
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from miniai.checkpoint import CheckpointCB
from miniai.hooks import ActivationStats
from miniai.learner import Callback, CancelFitException, TrainLearner
from miniai.metrics import MetricsCB
from miniai.progress import ProgressCB
from miniai.sched import BatchSchedCB, RecorderCB, rec_lr
from miniai.schedulers import OneCycle

N_FITS, EPOCHS, WARMUP = 200, 2, 20


def rss_mb() -> float:
    """This process's resident memory, from /proc/self/status."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    raise RuntimeError('no VmRSS in /proc/self/status')


def n_tensors() -> int:
    with warnings.catch_warnings():  # isinstance() on torch.distributed's deprecated `reduce_op` warns
        warnings.simplefilter('ignore', FutureWarning)
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


def n_forward_hooks(model: nn.Module) -> int: return sum(len(m._forward_hooks) for m in model.modules())


class StopAfterFirstEpoch(Callback):
    order = CheckpointCB.order + 1

    def after_epoch(self, learn):
        if not learn.training:
            raise CancelFitException()


@pytest.mark.soak
@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='reads the RSS from /proc')
def test_many_fits_do_not_leak(tmp_path):
    try:
        import miniai.lr_finder  # noqa: F401  (adds `Learner.lr_find`)
    except ImportError:
        warnings.warn('miniai.lr_finder is not there yet: the soak runs without lr_find', stacklevel=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=g)
    y = (x[:, 0] > 0).long()
    dls = SimpleNamespace(train=DataLoader(TensorDataset(x[:64], y[:64]), 16, shuffle=True),
                          valid=DataLoader(TensorDataset(x[64:], y[64:]), 16))
    model = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))
    learn = TrainLearner(model, dls, F.cross_entropy, lr=1e-2, opt_func=optim.AdamW,
                         cbs=[MetricsCB(), ProgressCB(), RecorderCB(lr=rec_lr)])
    hooks = n_forward_hooks(model)
    sched = partial(OneCycle, max_lr=1e-2, total_steps=EPOCHS * len(dls.train))
    cbs = lambda: [ActivationStats(lambda m: isinstance(m, nn.Linear)), CheckpointCB(tmp_path),
                   BatchSchedCB(sched)]
    try:
        for i in range(N_FITS):
            if i % 10 == 4 and hasattr(learn, 'lr_find'):
                learn.lr_find(num_it=10)
            if i % 10 == 9:  # stopped after one epoch, then resumed from its checkpoint
                learn.fit(EPOCHS, cbs=[*cbs(), StopAfterFirstEpoch()])
                learn.fit(EPOCHS, cbs=cbs(), resume=tmp_path)
            else:
                learn.fit(EPOCHS, cbs=cbs())
            assert n_forward_hooks(model) == hooks, f'fit {i} left hooks on the model'
            if i == WARMUP:
                gc.collect()
                rss0, tensors0 = rss_mb(), n_tensors()
        gc.collect()
        grew_mb, grew_tensors = rss_mb() - rss0, n_tensors() - tensors0
    finally:
        torch.set_num_threads(threads)
    print(f'after {N_FITS} fits: RSS grew {grew_mb:.1f} MB, live tensors {grew_tensors:+d}')
    assert grew_mb < 20 and grew_tensors <= 0
