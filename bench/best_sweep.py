"""A sweep of 5-epoch variants of the `best` recipe, each trained by `miniai fit` itself, in parallel processes.

Each candidate is a `Recipe` (registered as `sweep-NAME` in the worker) plus `miniai fit` flags, trained once per
seed. A step of the ResNet on a GPU is bound by Python, not by the GPU, so several processes share one GPU well;
their times are therefore not each run's time alone (the sweep is about accuracy: `bench/gpu.py` measures speed).
Every finished run is printed at once and appended to `--out` (JSON lines), then a table of the candidates by
mean valid accuracy over the seeds.

    python bench/best_sweep.py                                   # every candidate, seeds 1 and 2, 8 processes
    python bench/best_sweep.py --candidates base,deep --seeds 1,2,3
    python bench/best_sweep.py --device cpu --epochs 1 --limit-batches 2 --workers 2 --candidates base,deep  # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from functools import partial
from multiprocessing import get_context

import torch
from torch import nn

from miniai.models import init_weights
from miniai.recipes import RECIPES, ResBlock, resnet
from miniai.vision import BatchAugment


def deep_resnet(nfs: tuple[int, ...] = (64, 128, 256, 512)) -> nn.Sequential:
    """`resnet` with two `ResBlock`s per stage (a stride-2 block, then a stride-1 one)."""
    layers = [ResBlock(1, nfs[0], ks=5)]
    for ni, nf in zip(nfs, nfs[1:]):
        layers += [ResBlock(ni, nf, stride=2), ResBlock(nf, nf)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(nfs[-1], 10, bias=False), nn.BatchNorm1d(10)]
    return nn.Sequential(*layers).apply(partial(init_weights, leaky=0.1))


def wide_resnet() -> nn.Sequential:
    """`resnet` at twice the width: 128 → 1024 channels."""
    return resnet(nfs=(128, 256, 512, 1024))


# The best 5-epoch configuration measured so far (0.9413 with seed 1 on an H100, before `miniai fit` seeded its
# loader with --seed itself): bs 128, nothing else.
BASE = replace(RECIPES['best'], bs=128, label_smoothing=0., augment=None, tta=False)
FLIP = BatchAugment(pad=0)  # random horizontal flip only
CANDIDATES: dict[str, tuple] = {  # name: (recipe, extra `miniai fit` flags)
    'base': (BASE, []),
    'bs64': (replace(BASE, bs=64), []),
    'bs256': (replace(BASE, bs=256), []),
    'lr2e-2': (replace(BASE, lr=2e-2), []),
    'lr5e-3': (replace(BASE, lr=5e-3), []),
    'wd.05': (BASE, ['--wd', '0.05']),
    'wd.1': (BASE, ['--wd', '0.1']),
    'tta': (replace(BASE, tta=True), []),
    'flip+tta': (replace(BASE, augment=FLIP, tta=True), []),
    'ls.1': (replace(BASE, label_smoothing=0.1), []),
    'wide': (replace(BASE, model=wide_resnet), []),
    'deep': (replace(BASE, model=deep_resnet), []),
    'wide+flip+tta': (replace(BASE, model=wide_resnet, augment=FLIP, tta=True), []),
    'deep+flip+tta': (replace(BASE, model=deep_resnet, augment=FLIP, tta=True), []),
    'wide+wd.05': (replace(BASE, model=wide_resnet), ['--wd', '0.05']),
    'deep+bs64': (replace(BASE, model=deep_resnet, bs=64), []),
}


def run_one(name: str, seed: int, flags: list[str], threads: int) -> dict:
    """Train candidate `name` with `seed` through `miniai fit` (output quiet); its valid accuracies and seconds."""
    import tempfile

    from miniai.cli import build_parser, fit_command
    torch.set_num_threads(threads)
    RECIPES[f'sweep-{name}'] = CANDIDATES[name][0]
    with tempfile.TemporaryDirectory() as out:
        argv = ['fit', '--recipe', f'sweep-{name}', '--seed', str(seed), '--out', out, *CANDIDATES[name][1], *flags]
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rows = fit_command(build_parser().parse_args(argv))['rows']
    return {'name': name, 'seed': seed, 'acc': [r['accuracy'] for r in rows], 'seconds': time.perf_counter() - start}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--candidates', default=','.join(CANDIDATES), help=f'comma-separated, of {list(CANDIDATES)}')
    p.add_argument('--seeds', default='1,2')
    p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--workers', type=int, default=8, help='processes training at once')
    p.add_argument('--threads', type=int, default=2, help='torch threads per process')
    p.add_argument('--device', default=None, help='default: the best there is')
    p.add_argument('--limit-batches', type=int, default=None, help='for a smoke run: N batches an epoch')
    p.add_argument('--data', default=None, help='Fashion-MNIST folder (default: $MINIAI_DATA)')
    p.add_argument('--out', default=None, help='append each run as a JSON line to this file')
    args = p.parse_args()
    names, seeds = args.candidates.split(','), [int(s) for s in args.seeds.split(',')]
    if unknown := [n for n in names if n not in CANDIDATES]:
        raise SystemExit(f'best_sweep.py: unknown candidates {unknown}; they are {list(CANDIDATES)}.')
    flags = ['--epochs', str(args.epochs)]
    flags += ['--device', args.device] if args.device else []
    flags += ['--data', args.data] if args.data else []
    flags += ['--limit-batches', str(args.limit_batches)] if args.limit_batches else []
    if (args.device or ('cuda' if torch.cuda.is_available() else 'cpu')).startswith('cuda'):
        flags.append('--mixed-precision')
    print(f'torch {torch.__version__}, {torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"}; '
          f'{len(names)} candidates x seeds {seeds}, {args.epochs} epochs, {args.workers} processes; flags {flags}',
          flush=True)

    results: dict[str, list[dict]] = {n: [] for n in names}
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context('spawn')) as pool:
        jobs = {pool.submit(run_one, n, s, flags, args.threads): (n, s) for s in seeds for n in names}
        for job in as_completed(jobs):
            n, s = jobs[job]
            try:
                r = job.result()
            except Exception as e:  # one failed candidate does not end the sweep
                print(f'{n} seed {s}: FAILED {type(e).__name__}: {e}', flush=True)
                continue
            results[n].append(r)
            print(f'{n:>14} seed {s}: ' + ' '.join(f'{a:.4f}' for a in r['acc']) + f'  ({r["seconds"]:.0f}s)',
                  flush=True)
            if args.out:
                with open(args.out, 'a') as f: f.write(json.dumps(r) + '\n')
    print(f'\nall runs in {time.perf_counter() - start:.0f}s. Final valid accuracy, by mean over the seeds:')
    done = sorted((n for n in names if results[n]), key=lambda n: -statistics.mean(r['acc'][-1] for r in results[n]))
    for n in done:
        finals = {r['seed']: r['acc'][-1] for r in results[n]}
        print(f'{n:>14} {statistics.mean(finals.values()):.4f}  '
              + ' '.join(f'seed {s}: {a:.4f}' for s, a in sorted(finals.items())))


if __name__ == '__main__':
    sys.exit(main())
