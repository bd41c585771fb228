"""The seed's data pipeline against miniai's fast path, training the seed recipe for one epoch with each.

Seed: `get_dls(fast=False)`, i.e. `load_fashion_mnist` (a `datasets` DatasetDict), `with_transform` running
`TF.to_tensor` + normalise per item, a torch `DataLoader` with the dict collate and the best `num_workers`
(probed first). Fast: `get_dls(fast=True)`, the uint8 arrays kept on the device. Runs take turns (A B B A ...).

    python bench/data_pipeline.py            # full epoch, 3 rounds, CPU
    python bench/data_pipeline.py --quick    # a few batches (the smoke test)
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from miniai import (
    BatchSchedCB,
    Callback,
    CancelFitException,
    DeviceCB,
    GeneralRelu,
    MetricsCB,
    OneCycle,
    TrainLearner,
    get_dls,
    get_model,
    init_weights,
    set_seed,
)


class StopAfter(Callback):
    """Ends the fit after `n` training batches (for probing `num_workers`)."""
    def __init__(self, n: int): self.n = n

    def after_batch(self, learn) -> None:
        if learn.training and learn.iter + 1 >= self.n:
            raise CancelFitException()


def fit_seed_recipe(dls, device: str, cbs=()) -> None:
    """One epoch of the seed recipe: BatchNorm CNN, AdamW, one-cycle to 6e-2, accuracy."""
    from torcheval.metrics import MulticlassAccuracy  # after miniai, which silences its import warning
    set_seed(42)
    model = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), norm=nn.BatchNorm2d)
    model.apply(partial(init_weights, leaky=0.1))
    sched = partial(OneCycle, max_lr=6e-2, total_steps=len(dls.train))
    cbs = [DeviceCB(device), MetricsCB(accuracy=MulticlassAccuracy()), BatchSchedCB(sched), *cbs]
    learn = TrainLearner(model, dls, F.cross_entropy, lr=6e-2, opt_func=torch.optim.AdamW, cbs=cbs)
    learn.fit(1)


def run(fast: bool, args, num_workers: int = 0, cbs=()) -> tuple[float, float]:
    """Build the loaders, then fit; returns (setup seconds, fit seconds)."""
    t0 = time.perf_counter()
    kw = dict(num_workers=num_workers) if not fast else dict(device=args.device)
    dls = get_dls(bs=args.bs, path=args.data, fast=fast, n_train=args.n_train, n_valid=args.n_valid, **kw)
    t1 = time.perf_counter()
    fit_seed_recipe(dls, args.device, cbs)
    return t1 - t0, time.perf_counter() - t1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='tiny run for the smoke test')
    p.add_argument('--data', default=None, help='Fashion-MNIST IDX folder (default: $MINIAI_DATA)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--bs', type=int, default=1024)
    p.add_argument('--rounds', type=int, default=3, help='rounds of A and B')
    p.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2], help='num_workers to try')
    p.add_argument('--probe-batches', type=int, default=10, help='training batches timed per num_workers')
    args = p.parse_args(argv)
    args.n_train = args.n_valid = None
    if args.quick:
        args.bs, args.rounds, args.n_train, args.n_valid, args.probe_batches = 64, 1, 256, 128, 2
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, bs {args.bs}')

    run(True, args, cbs=[StopAfter(1)])  # warm-up: first-call costs would otherwise fall on the first probe
    probe = {}
    for nw in args.workers:
        probe[nw] = run(False, args, nw, [StopAfter(args.probe_batches)])[1]
        print(f'probe num_workers={nw}: {probe[nw]:.2f} s for {args.probe_batches} training batches')
    nw = min(probe, key=probe.get)
    print(f'seed pipeline uses num_workers={nw}')

    res = {'seed': [], 'fast': []}
    for r in range(args.rounds):
        for name in list(res)[::1 if r % 2 == 0 else -1]:  # A B B A ...: neither always goes first
            setup, fit = run(name == 'fast', args, nw)
            res[name].append((setup, fit))
            print(f'round {r}  {name:4}: {setup + fit:7.2f} s  (setup {setup:5.2f} s, fit {fit:7.2f} s)')
    for what, t in (('end to end', sum), ('fit only', lambda o: o[1])):
        seed, fast = [t(o) for o in res['seed']], [t(o) for o in res['fast']]
        ratios = [a / b for a, b in zip(seed, fast, strict=True)]
        print(f"ratio seed/fast {what}: {statistics.median(ratios):.2f}x median (per round: "
              f"{', '.join(f'{r:.2f}x' for r in ratios)}), {min(seed) / min(fast):.2f}x best/best")

if __name__ == '__main__':
    main()
