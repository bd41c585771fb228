"""GPU speed of the seed recipe, plain and with each speed option of `miniai.accel`, run A B A B.

The seed recipe: BatchNorm CNN with leaky `GeneralRelu`, AdamW, one-cycle to 6e-2, bs 1024, 5 epochs, on the
fast on-device loader, with `DeviceCB`, `MetricsCB(accuracy)` and `BatchSchedCB`. Each contender gets one
untimed warm-up epoch (cuDNN plans, `torch.compile`), then `--rounds` timed fits from the same initial
weights, interleaved with the other contenders'. Printed per contender: the median seconds of the fit
(training and validation), training images per second, final accuracy and the ratio to `plain`; then the
share of the fit the GPU is busy (kernel time from `torch.profiler` over wall time of one profiled fit)
and where the fit synchronises with the host (`torch.cuda.set_sync_debug_mode`).

    python bench/gpu.py                        # plain,mp,cl,compile,all: 5 epochs, 2 rounds
    python bench/gpu.py --contenders plain,noguard,all-ng,ro-ng  # without the Learner's NaN guard
    python bench/gpu.py --quick                # 1 epoch, 1 round
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
import traceback
import warnings
from collections import Counter
from functools import partial

import torch
import torch.nn.functional as F
from torch import optim

from miniai import BatchSchedCB, DeviceCB, MetricsCB, OneCycle, TrainLearner, get_dls, set_seed, speed_cbs
from miniai.recipes import seed_model

ALL = dict(mixed_precision=True, channels_last=True, compile=True)
# `nan_guard=False` turns off the Learner's check of each training loss (one host read per batch); `fused=True`
# gives AdamW its fused CUDA kernel.
CONTENDERS = {'plain': {}, 'mp': dict(mixed_precision=True), 'cl': dict(channels_last=True),
              'compile': dict(compile=True), 'all': ALL, 'noguard': dict(nan_guard=False),
              'all-ng': dict(ALL, nan_guard=False), 'ro-ng': dict(compile='reduce-overhead', nan_guard=False),
              'ro-ng-fused': dict(compile='reduce-overhead', nan_guard=False, fused=True)}


def fit(model: torch.nn.Module, dls, opts: dict, epochs: int) -> tuple[float, float]:
    """One seed-recipe fit of `model` (already at its initial weights): (seconds, final valid accuracy)."""
    from torcheval.metrics import MulticlassAccuracy
    opts = dict(opts)
    guard = opts.pop('nan_guard', True)
    opt_func = partial(optim.AdamW, fused=True) if opts.pop('fused', False) else optim.AdamW
    metrics = MetricsCB(accuracy=MulticlassAccuracy())
    sched = partial(OneCycle, max_lr=6e-2, total_steps=epochs * len(dls.train))
    cbs = [DeviceCB('cuda'), metrics, BatchSchedCB(sched), *speed_cbs(**opts)]
    learn = TrainLearner(model, dls, F.cross_entropy, lr=6e-2, cbs=cbs, opt_func=opt_func, nan_guard=guard)
    torch.cuda.synchronize()
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        learn.fit(epochs)
    torch.cuda.synchronize()
    return time.perf_counter() - start, metrics.history[-1]['accuracy']


def kernel_seconds(prof) -> float:
    """Total GPU time of the kernels and copies a `torch.profiler` run recorded (they run one at a time)."""
    evs = prof.key_averages()
    attr = 'self_device_time_total' if hasattr(evs[0], 'self_device_time_total') else 'self_cuda_time_total'
    return sum(getattr(e, attr) for e in evs) / 1e6


def sync_sites(model, dls, opts: dict, epochs: int) -> Counter:
    """Where one fit synchronises the host with the GPU: file:line of the first non-torch frame, counted."""
    sites: Counter = Counter()

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        frames = [f for f in traceback.extract_stack()[:-1] if '/torch/' not in f.filename
                  and 'warnings' not in f.filename]
        f = frames[-1]
        sites[f'{f.filename.split("/")[-1]}:{f.lineno} {f.line}'] += 1

    with warnings.catch_warnings():
        warnings.simplefilter('always')
        old, warnings.showwarning = warnings.showwarning, record
        torch.cuda.set_sync_debug_mode('warn')
        try:
            fit(model, dls, opts, epochs)
        finally:
            torch.cuda.set_sync_debug_mode(0)
            warnings.showwarning = old
    return sites


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--contenders', default='plain,mp,cl,compile,all',
                   help=f'comma-separated, of {list(CONTENDERS)}')
    p.add_argument('--data', default=None, help='Fashion-MNIST folder (default: $MINIAI_DATA, the cache)')
    p.add_argument('--quick', action='store_true', help='1 epoch, 1 round')
    args = p.parse_args()
    names = args.contenders.split(',')
    if unknown := [n for n in names if n not in CONTENDERS]:
        raise SystemExit(f'gpu.py: unknown contenders {unknown}; they are {list(CONTENDERS)}.')
    if not torch.cuda.is_available():
        print('bench/gpu.py: no CUDA GPU here, nothing to measure (run it on a machine with one).')
        return
    if args.quick:
        args.epochs, args.rounds = 1, 1
    torch._dynamo.config.recompile_limit = 64  # one model per contender, each compiled for several shapes
    print(f'torch {torch.__version__}, {torch.cuda.get_device_name()}, seed recipe, {args.epochs} epochs, '
          f'{args.rounds} rounds')

    start = time.perf_counter()
    dls = get_dls(bs=1024, path=args.data, device='cuda', seed=0)
    torch.cuda.synchronize()
    print(f'data on the GPU in {time.perf_counter() - start:.2f}s')
    n_train = dls.train.n

    models = {}
    for nm in names:  # one model per contender, warmed up (and compiled) once, reset before each fit
        set_seed(0)
        m = seed_model()
        init = {k: v.clone() for k, v in m.state_dict().items()}
        t0 = time.perf_counter()
        try:
            fit(m, dls, CONTENDERS[nm], 1)
        except Exception as e:  # a speed option this torch or GPU cannot run: measure the others
            print(f'{nm}: FAILED in its warm-up, left out: {type(e).__name__}: {str(e)[:300]}', flush=True)
            continue
        print(f'{nm}: warm-up epoch {time.perf_counter() - t0:.2f}s', flush=True)
        models[nm] = m, init
    names = list(models)

    times: dict[str, list[float]] = {nm: [] for nm in names}
    accs: dict[str, list[float]] = {nm: [] for nm in names}
    for _ in range(args.rounds):
        for nm in names:
            m, init = models[nm]
            m.load_state_dict(init)
            secs, acc = fit(m, dls, CONTENDERS[nm], args.epochs)
            times[nm].append(secs)
            accs[nm].append(acc)

    print(f'\n{"contender":>9} {"seconds":>8} {"img/s":>9} {"accuracy":>8} {"vs plain":>8}  (all rounds)')
    base = statistics.median(times['plain']) if 'plain' in times else None
    for nm in names:
        t = statistics.median(times[nm])
        ratio = f'{base / t:7.2f}x' if base else ''
        print(f'{nm:>9} {t:8.2f} {args.epochs * n_train / t:9.0f} {accs[nm][-1]:8.4f} {ratio:>8}  '
              + ' '.join(f'{s:.2f}' for s in times[nm]))

    print('\nGPU busy (kernel time / wall time of one profiled fit):')
    for nm in names:
        m, init = models[nm]
        m.load_state_dict(init)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            secs, _ = fit(m, dls, CONTENDERS[nm], args.epochs)
        k = kernel_seconds(prof)
        print(f'{nm:>9}: kernels {k:.2f}s of {secs:.2f}s profiled ({k / secs:.0%}); '
              f'{k / statistics.median(times[nm]):.0%} of the unprofiled median')

    n_batches = args.epochs * (len(dls.train) + len(dls.valid))
    for nm in ('plain', 'all-ng'):
        if nm not in models:
            continue
        m, init = models[nm]
        m.load_state_dict(init)
        sites = sync_sites(m, dls, CONTENDERS[nm], args.epochs)
        print(f'\nhost-GPU synchronisations in one {nm} fit: {sum(sites.values())} over {n_batches} batches')
        for site, n in sites.most_common():
            print(f'  {n:5d}  {site}')


if __name__ == '__main__':
    sys.exit(main())
