"""Data-parallel training on `torch.distributed`: any `Learner` runs under `torchrun --nproc_per_node N` or
`accelerate launch --multi_gpu --num_processes N` (both set the WORLD_SIZE, RANK and LOCAL_RANK it reads).

`DDPCB` joins the process group (gloo for CPU tensors, NCCL for CUDA ones), wraps the model in
`DistributedDataParallel` for the fit, gives each process its share of the data and merges the metrics of
`MetricsCB` over all processes, so the rows it prints are global. Only the main process prints, draws and
saves (`is_main_process()`; the others' warnings, which would repeat the main one's, are silenced). A checkpoint
holds the main process's random state, and every process resumes with it: processes that draw from random
streams of their own (e.g. seeded with seed + rank) resume with the same draws, not their own; and a checkpoint
saved mid-epoch by `learn.save` (`CheckpointCB` and `miniai fit` save between epochs) holds the main process's
running metrics only, so the resumed epoch's training row is not the global one. `miniai fit` seeds every
process alike, so batch augmentation and dropout draw alike at the same position of each process's batch.
`miniai fit` adds `DDPCB` by itself when launched with WORLD_SIZE > 1, e.g.

    torchrun --nproc_per_node 2 -m miniai fit --device cpu
    accelerate launch --multi_gpu --num_processes 2 -m miniai fit

In your own script, call `init_distributed()` before putting data or models on a GPU (it picks the GPU of
this process), build the loaders with `get_dls(..., rank=get_rank(), world_size=get_world_size())` (so
that schedules sized from `len(dls.train)` count this process's batches) or let `DDPCB` shard them, and add
`DDPCB()` to the Learner's callbacks.
"""

from __future__ import annotations

import atexit
import copy
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler

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
    device. Returns whether the run is distributed; calling it again does nothing more. Silences warnings in
    the processes other than the main one."""
    if get_world_size() == 1:
        return False
    if not _initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        dist.init_process_group('cpu:gloo,cuda:nccl' if cuda and dist.is_nccl_available() else 'gloo')
        atexit.register(_destroy)
    if not is_main_process():
        warnings.simplefilter('ignore')  # only the main process prints: the others' would repeat its own
    return True


def _destroy() -> None:
    if _initialized():
        dist.destroy_process_group()


# The DataLoader options `shard_loader` carries over (those that this torch has).
_DL_OPTIONS = ('num_workers', 'collate_fn', 'pin_memory', 'drop_last', 'timeout', 'worker_init_fn',
               'multiprocessing_context', 'generator', 'prefetch_factor', 'persistent_workers', 'pin_memory_device',
               'in_order')


class _EveryNth(Sampler[int]):
    """Items `rank, rank + world_size, ...` of `n`: a validation share, each item on one process only."""
    def __init__(self, n: int, rank: int, world_size: int):
        self.items = range(rank, n, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _unshardable(dl: DataLoader) -> str | None:
    """What of DataLoader `dl` a rebuild over a `DistributedSampler` would lose, or None."""
    if dl.batch_size is None and dl.batch_sampler is not None:
        return f'its batch_sampler ({type(dl.batch_sampler).__name__})'
    s = dl.sampler
    if type(s) is RandomSampler and (s.replacement or s.num_samples != len(dl.dataset)):
        return 'a RandomSampler that draws with replacement or num_samples items'
    return None if type(s) in (SequentialSampler, RandomSampler) else f'its sampler ({type(s).__name__})'


def shard_loader(dl: Any, rank: int, world_size: int, train: bool = True) -> Any:
    """`dl` restricted to process `rank`'s share of the items.

    A miniai `DeviceLoader` (anything with `rank`/`world_size` options) is set to shard itself, in place. A
    torch `DataLoader` with a plain sequential or shuffled sampler is rebuilt with its options: for training with
    a `DistributedSampler` (shuffled if `dl` was; equal shares, padded by repeating items, as DDP needs the same
    number of batches everywhere; `DDPCB` calls its `set_epoch`), for validation with items `rank, rank +
    world_size, ...`, so each item counts once. The shuffle's seed is `dl`'s generator's, else one drawn from
    torch's global RNG; `DDPCB` gives every process rank 0's. A custom sampler or batch_sampler is refused."""
    if hasattr(dl, 'world_size'):
        if train and not getattr(dl, 'shuffle', True) and len(set(_shard_batches(dl, world_size))) > 1:
            raise ValueError(f'shard_loader: this unshuffled training {type(dl).__name__} of {dl.n} items would give '
                             f'the {world_size} processes {" and ".join(map(str, _shard_batches(dl, world_size)))} '
                             'batches, and DDP needs the same number in each: build it with shuffle=True (its order '
                             'is then cut to equal shares).')
        dl.rank, dl.world_size = rank, world_size
        return dl
    if not isinstance(dl, DataLoader):
        raise TypeError(f'shard_loader: cannot shard a {type(dl).__name__}; give each process its own share '
                        'and pass DDPCB(shard=False)')
    if isinstance(dl.sampler, (DistributedSampler, _EveryNth)):  # sharded already
        return dl
    if (what := _unshardable(dl)) is not None:
        raise TypeError(f'shard_loader: cannot shard a DataLoader with {what}: a DistributedSampler over the whole '
                        "dataset would replace it. Give each process its own share (e.g. a sampler over that "
                        "process's items) and pass DDPCB(shard=False).")
    ds, shuffle = dl.dataset, isinstance(dl.sampler, RandomSampler)
    if train:
        sampler = DistributedSampler(ds, world_size, rank, shuffle, _shuffle_seed(dl.sampler) if shuffle else 0)
    else:
        sampler = _EveryNth(len(ds), rank, world_size)
    options = {k: getattr(dl, k) for k in _DL_OPTIONS if hasattr(dl, k)}
    return DataLoader(ds, dl.batch_size, sampler=sampler, **options)


def _shard_batches(dl: Any, world_size: int) -> tuple[int, int]:
    """The batches of the first and last process's shares of `DeviceLoader` `dl` (the largest and smallest)."""
    lens = []
    for r in (0, world_size - 1):
        share = copy.copy(dl)
        share.rank, share.world_size = r, world_size
        lens.append(len(share))
    return tuple(lens)


def _shuffle_seed(sampler: RandomSampler) -> int:
    """The seed of `sampler`'s generator (a `DataLoader(..., shuffle=True, generator=g)`'s), else one drawn from
    torch's global RNG (from which a `RandomSampler` without a generator draws)."""
    g = sampler.generator
    return g.initial_seed() if g is not None else int(torch.randint(2**62, ()))


def _from_main(obj: Any) -> Any:
    """`obj` as the main process (rank 0) has it."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class DDPCB(Callback):
    """Data-parallel fit over all processes of a `torchrun` or `accelerate launch`; a no-op in one process.

    Creating it joins the process group (`init_distributed`). For each fit it shards the loaders of the phases it
    runs (they stay sharded; pass `shard=False` if your loaders already give each process its share), wraps
    `learn.model` in `DistributedDataParallel(**ddp_kwargs)`, unwrapping it when the fit ends, so
    `learn.model.state_dict()` has the plain keys. Every process shuffles the training data as the main process
    does: a `DeviceLoader` gets its state (seed and epoch counter), a `DistributedSampler` its seed and, each
    epoch, `set_epoch` with the training epochs of all fits so far, so a second fit does not replay the first's
    orders (its state, `epochs_done` and `seed`, goes into checkpoints, so a resumed fit replays them).
    Validation runs the plain model (no per-batch communication) with the main process's BatchNorm statistics,
    so every process evaluates the same model. At the end of each epoch the states of every `MetricsCB`'s
    metrics are merged over all processes, so all of them report the global values.
    """
    # After `DeviceCB` and `ChannelsLastCB` have put the model on its device and in its memory format (DDP's
    # gradient buckets take the parameters' layout), before the callbacks that use `learn.dl` or the metrics.
    order = DeviceCB.order + 6

    def __init__(self, shard: bool = True, **ddp_kwargs):
        self.shard, self.ddp_kwargs = shard, ddp_kwargs
        self.active = init_distributed()
        # training epochs of the earlier fits (each counts its n_epochs once the next fit starts, so that a
        # checkpoint saved in or after a fit holds the count its fit started from), and the sampler's seed
        self.epochs_done, self.last_fit, self.seed = 0, 0, None

    def state_dict(self) -> dict[str, Any]:
        return {'epochs_done': self.epochs_done, 'last_fit': self.last_fit, 'seed': self.seed}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.epochs_done, self.last_fit = int(sd['epochs_done']), int(sd.get('last_fit', 0))
        if sd['seed'] is not None:  # else (saved by a run without a DistributedSampler) keep rank 0's
            self.seed = sd['seed']

    def before_fit(self, learn: Learner) -> None:
        if 'train' in learn.phases:  # (a validation-only fit leaves the count to the next training fit)
            self.epochs_done, self.last_fit = self.epochs_done + self.last_fit, 0
        if not self.active:
            return
        if self.shard:
            rank, ws = get_rank(), get_world_size()
            for phase in learn.phases:
                if (dl := getattr(learn.dls, phase)) is not None:
                    setattr(learn.dls, phase, shard_loader(dl, rank, ws, train=phase == 'train'))
            if learn.n_iter:  # counted before the fit, over the whole training set
                learn.n_iter = learn.n_epochs * len(learn.dls.train)
        train = learn.dls.train if 'train' in learn.phases else None
        if isinstance(getattr(train, 'sampler', None), DistributedSampler):
            self.seed = _from_main(train.sampler.seed)
        elif hasattr(train, 'world_size') and callable(getattr(train, 'load_state_dict', None)):  # a DeviceLoader
            train.load_state_dict(_from_main(train.state_dict()))
        self.module = learn.model
        self.ddp = learn.model = DistributedDataParallel(learn.model, **self.ddp_kwargs)

    def before_epoch(self, learn: Learner) -> None:
        if not self.active:
            return
        training, sampler = learn.training, getattr(learn.dl, 'sampler', None)
        if training and isinstance(sampler, DistributedSampler):
            sampler.seed = self.seed  # rank 0's, or the resumed run's
            sampler.set_epoch(self.epochs_done + learn.epoch)
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
        if 'train' in learn.phases:
            self.last_fit = learn.n_epochs
        if isinstance(learn.model, DistributedDataParallel):
            learn.model = learn.model.module
