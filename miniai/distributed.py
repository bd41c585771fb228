"""Data-parallel training on `torch.distributed`: any `Learner` runs under `torchrun --nproc_per_node N` or
`accelerate launch --multi_gpu --num_processes N` (both set the WORLD_SIZE, RANK and LOCAL_RANK it reads).

`DDPCB` joins the process group (gloo for CPU tensors, NCCL for CUDA ones), wraps the model in
`DistributedDataParallel` for the fit, gives each process its share of the data and merges the metrics of
`MetricsCB` over all processes, so the rows it prints are global. Only the main process prints, draws and
saves (`is_main_process()`). `miniai fit` adds `DDPCB` by itself when launched with WORLD_SIZE > 1, e.g.

    torchrun --nproc_per_node 2 -m miniai fit --device cpu
    accelerate launch --multi_gpu --num_processes 2 -m miniai fit

In your own script, call `init_distributed()` before putting data or models on a GPU (it picks the GPU of
this process), build the loaders with `get_dls(..., rank=get_rank(), world_size=get_world_size())` (so
that schedules sized from `len(dls.train)` count this process's batches) or let `DDPCB` shard them, and add
`DDPCB()` to the Learner's callbacks.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from .callbacks import DeviceCB
from .learner import Callback, Learner

__all__ = ['get_rank', 'get_world_size', 'is_main_process', 'init_distributed', 'shard_loader', 'DDPCB']


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """How many processes train together: the process group's size, else $WORLD_SIZE (torchrun), else 1."""
    return dist.get_world_size() if _initialized() else int(os.environ.get('WORLD_SIZE', 1))


def get_rank() -> int:
    """This process's rank (0 to world size - 1): from the process group, else $RANK, else 0."""
    return dist.get_rank() if _initialized() else int(os.environ.get('RANK', 0))


def is_main_process() -> bool:
    """True in the one process that prints, plots and saves (rank 0; always, when not distributed)."""
    return get_rank() == 0


def init_distributed() -> bool:
    """Join the process group when launched with WORLD_SIZE > 1 (by `torchrun` or `accelerate launch`), with
    gloo for CPU tensors and NCCL for CUDA ones, and make GPU LOCAL_RANK this process's default `cuda`
    device. Returns whether the run is distributed; calling it again does nothing more."""
    if get_world_size() == 1:
        return False
    if not _initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        dist.init_process_group('cpu:gloo,cuda:nccl' if cuda and dist.is_nccl_available() else 'gloo')
        atexit.register(_destroy)
    return True


def _destroy() -> None:
    if _initialized():
        dist.destroy_process_group()


def shard_loader(dl: Any, rank: int, world_size: int, train: bool = True) -> Any:
    """`dl` restricted to process `rank`'s share of the items.

    A miniai `DeviceLoader` (anything with `rank`/`world_size` options) is set to shard itself, in place. A
    torch `DataLoader` is rebuilt: for training with a `DistributedSampler` (shuffled if `dl` was; equal
    shares, padded by repeating items, as DDP needs the same number of batches everywhere; `DDPCB` calls its
    `set_epoch`), for validation with items `rank, rank + world_size, ...`, so each item counts once."""
    if hasattr(dl, 'world_size'):
        dl.rank, dl.world_size = rank, world_size
        return dl
    if not isinstance(dl, DataLoader):
        raise TypeError(f'shard_loader: cannot shard a {type(dl).__name__}; give each process its own share '
                        'and pass DDPCB(shard=False)')
    if isinstance(dl.sampler, DistributedSampler):
        return dl
    ds, shuffle = dl.dataset, isinstance(dl.sampler, RandomSampler)
    sampler = DistributedSampler(ds, world_size, rank, shuffle) if train else range(rank, len(ds), world_size)
    return DataLoader(ds, dl.batch_size, sampler=sampler, num_workers=dl.num_workers,
                      collate_fn=dl.collate_fn, pin_memory=dl.pin_memory, drop_last=dl.drop_last,
                      worker_init_fn=dl.worker_init_fn, persistent_workers=dl.persistent_workers,
                      generator=dl.generator)


class DDPCB(Callback):
    """Data-parallel fit over all processes of a `torchrun` or `accelerate launch`; a no-op in one process.

    Creating it joins the process group (`init_distributed`). For each fit it shards `learn.dls` (they stay
    sharded; pass `shard=False` if your loaders already give each process its share), wraps `learn.model` in
    `DistributedDataParallel(**ddp_kwargs)`, unwrapping it when the fit ends, so `learn.model.state_dict()`
    has the plain keys. Validation runs the plain model (no per-batch communication) with the main process's
    BatchNorm statistics, so every process evaluates the same model. At the end of each epoch the states of
    every `MetricsCB`'s metrics are merged over all processes, so all of them report the global values.
    """
    # After `DeviceCB` and `ChannelsLastCB` have put the model on its device and in its memory format (DDP's
    # gradient buckets take the parameters' layout), before the callbacks that use `learn.dl` or the metrics.
    order = DeviceCB.order + 6

    def __init__(self, shard: bool = True, **ddp_kwargs):
        self.shard, self.ddp_kwargs = shard, ddp_kwargs
        self.active = init_distributed()

    def before_fit(self, learn: Learner) -> None:
        if not self.active:
            return
        if self.shard:
            rank, ws = get_rank(), get_world_size()
            learn.dls.train = shard_loader(learn.dls.train, rank, ws, train=True)
            learn.dls.valid = shard_loader(learn.dls.valid, rank, ws, train=False)
            if learn.n_iter:  # counted before the fit, over the whole training set
                learn.n_iter = learn.n_epochs * len(learn.dls.train)
        if hasattr(learn.dls.train, 'seed'):  # a DeviceLoader's shuffle: the same on every process
            seed = [learn.dls.train.seed]
            dist.broadcast_object_list(seed, src=0)
            learn.dls.train.seed = seed[0]
        self.module = learn.model
        self.ddp = learn.model = DistributedDataParallel(learn.model, **self.ddp_kwargs)

    def before_epoch(self, learn: Learner) -> None:
        if not self.active:
            return
        training = learn.training
        if training and isinstance(getattr(learn.dl, 'sampler', None), DistributedSampler):
            learn.dl.sampler.set_epoch(learn.epoch)
        if not training:
            for b in self.module.buffers():
                dist.broadcast(b, src=0)
        learn.model = (self.ddp if training else self.module).train(training)

    def after_epoch(self, learn: Learner) -> None:
        if not self.active:
            return
        from torcheval.metrics.toolkit import get_synced_metric_collection
        for cb in learn.cbs:
            if hasattr(cb, 'all_metrics'):  # a `MetricsCB`
                synced = get_synced_metric_collection(cb.all_metrics)
                for k, m in cb.all_metrics.items():
                    m.load_state_dict(synced[k].state_dict())

    def cleanup_fit(self, learn: Learner) -> None:
        if isinstance(learn.model, DistributedDataParallel):
            learn.model = learn.model.module
