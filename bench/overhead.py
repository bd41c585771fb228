"""The `Learner`'s cost over a hand-written PyTorch loop doing the same work, run in turns (A B B A ...).

Both train the same model on the same batches with AdamW and a one-cycle schedule, update a torcheval
accuracy and a weighted loss mean per batch (printed per epoch), keep every training loss (read back every
10 batches, as `ProgressCB` does) and record lr and beta1 per step. The Learner gets them from `DeviceCB`,
`MetricsCB`, `ProgressCB`, `BatchSchedCB(OneCycle)` and `RecorderCB(lr, mom)`.

- `seed`: the seed recipe (BatchNorm CNN, bs 1024) for one epoch of Fashion-MNIST from `get_dls(fast=True)`.
- `tiny`: one `nn.Linear(16, 4)` on batches of 16 random rows, where the per-batch dispatch dominates; on
  one thread (a second would only spin), so its CPU time is the time the work itself took.

Times are wall-clock and CPU (all threads of the process; unlike wall time, it leaves out time spent
descheduled while other jobs ran).

    python bench/overhead.py                  # both cases, on CPU
    python bench/overhead.py --quick          # a few batches (the smoke test)
    python bench/overhead.py --profile        # also cProfile the Learner on the tiny case
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from miniai import (
    BatchSchedCB,
    DeviceCB,
    GeneralRelu,
    MetricsCB,
    OneCycle,
    ProgressCB,
    RecorderCB,
    TrainLearner,
    get_dls,
    get_model,
    init_weights,
    rec_lr,
    rec_mom,
    set_seed,
)


def fit_learner(model: nn.Module, dls, lr: float, device: str) -> None:
    from torcheval.metrics import MulticlassAccuracy  # after miniai, which silences its import warning
    sched = partial(OneCycle, max_lr=lr, total_steps=len(dls.train))
    cbs = [DeviceCB(device), MetricsCB(accuracy=MulticlassAccuracy()), ProgressCB(), BatchSchedCB(sched),
           RecorderCB(lr=rec_lr, mom=rec_mom)]
    TrainLearner(model, dls, F.cross_entropy, lr=lr, cbs=cbs, opt_func=torch.optim.AdamW).fit(1)


def fit_by_hand(model: nn.Module, dls, lr: float, device: str) -> None:
    from torcheval.metrics import Mean, MulticlassAccuracy
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = OneCycle(opt, max_lr=lr, total_steps=len(dls.train))
    acc, mean = MulticlassAccuracy().to(device), Mean().to(device)
    recs, losses, pending = {'lr': [], 'mom': []}, [], []
    for train, dl in ((True, dls.train), (False, dls.valid)):
        model.train(train)
        acc.reset()
        mean.reset()
        start = time.perf_counter()
        with torch.set_grad_enabled(train):
            for xb, yb in dl:
                xb, yb = xb.to(device), yb.to(device)
                preds = model(xb)
                loss = F.cross_entropy(preds, yb)
                if train:
                    loss.backward()
                    opt.step()
                    pg = opt.param_groups[0]
                    recs['lr'].append(pg['lr'])
                    recs['mom'].append(pg['betas'][0])
                    opt.zero_grad()
                acc.update(preds.detach(), yb)
                mean.update(loss.detach(), weight=len(xb))
                if train:
                    pending.append(loss.detach())
                    if len(pending) >= 10:
                        losses += torch.stack(pending).float().cpu().tolist()
                        pending.clear()
                    sched.step()
        if pending:
            losses += torch.stack(pending).float().cpu().tolist()
            pending.clear()
        secs, split = time.perf_counter() - start, 'train' if train else 'eval'
        print(f'{acc.compute().item():8.3f}  {mean.compute().item():8.3f}  {split:>8}  {secs:8.2f}')


def seed_case(args) -> tuple[Callable[[], nn.Module], SimpleNamespace, float]:
    def model():
        set_seed(42)
        m = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), norm=nn.BatchNorm2d)
        return m.apply(partial(init_weights, leaky=0.1))
    n = 256 if args.quick else None
    dls = get_dls(bs=64 if args.quick else 1024, path=args.data, device=args.device, n_train=n, n_valid=n)
    return model, dls, 6e-2


def tiny_case(args) -> tuple[Callable[[], nn.Module], SimpleNamespace, float]:
    def model():
        set_seed(42)
        return nn.Linear(16, 4)
    g = torch.Generator().manual_seed(0)
    def batches(n: int) -> list:
        return [(torch.randn(16, 16, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(n)]
    n = 50 if args.quick else 2000
    return model, SimpleNamespace(train=batches(n), valid=batches(n // 4)), 1e-2


def bench(name: str, case, args) -> None:
    torch.set_num_threads(1 if name == 'tiny' else args.threads)
    fits = {'learner': fit_learner, 'by hand': fit_by_hand}
    warm = argparse.Namespace(**{**vars(args), 'quick': True})
    for fit in fits.values():  # warm-up: first-call costs would otherwise fall on the first run
        model, dls, lr = case(warm)
        fit(model(), dls, lr, args.device)
    wall: dict[str, list[float]] = {k: [] for k in fits}
    cpu: dict[str, list[float]] = {k: [] for k in fits}
    for r in range(args.rounds):
        for k, fit in list(fits.items())[::1 if r % 2 == 0 else -1]:  # A B B A ...: neither always first
            model, dls, lr = case(args)  # afresh, so both see the same batches in the same order
            n_batches = len(dls.train) + len(dls.valid)
            t, c = time.perf_counter(), time.process_time()
            fit(model(), dls, lr, args.device)
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
            print(f'{name} round {r}  {k:8}: {wall[k][-1]:8.3f} s wall, {cpu[k][-1]:8.3f} s cpu  '
                  f'({wall[k][-1] / n_batches * 1e6:9.1f} us/batch wall over {n_batches} batches)')
    for what, t in (('wall', wall), ('cpu', cpu)):
        a, b = t['learner'], t['by hand']
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        extra = [(x - y) / n_batches * 1e6 for x, y in zip(a, b, strict=True)]
        print(f"{name}: ratio learner/by hand ({what}): {statistics.median(ratios):.3f}x median (per round: "
              f"{', '.join(f'{r:.3f}x' for r in ratios)}), {min(a) / min(b):.3f}x best/best")
        print(f"{name}: learner cost ({what}): {statistics.median(extra):.1f} us/batch median (per round: "
              f"{', '.join(f'{e:.1f}' for e in extra)}), {(min(a) - min(b)) / n_batches * 1e6:.1f} best/best")
    if args.profile and name == 'tiny':
        model, dls, lr = case(args)
        with cProfile.Profile() as prof:
            fit_learner(model(), dls, lr, args.device)
        pstats.Stats(prof).sort_stats('tottime').print_stats(25)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='tiny run for the smoke test')
    p.add_argument('--data', default=None, help='Fashion-MNIST IDX folder (default: $MINIAI_DATA)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--rounds', type=int, default=6, help='rounds of A and B')
    p.add_argument('--cases', nargs='+', choices=['tiny', 'seed'], default=['tiny', 'seed'])
    p.add_argument('--profile', action='store_true', help='cProfile the Learner on the tiny case')
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 1
    args.threads = torch.get_num_threads()
    print(f'torch {torch.__version__}, {args.threads} threads (tiny: 1), device {args.device}')
    if sys.stdout.isatty():
        print('note: in a terminal ProgressCB also draws its bars, which the hand-written loop does not; for the '
              "README's like-for-like figures pipe the output: ... | cat")
    for name in args.cases:
        bench(name, {'tiny': tiny_case, 'seed': seed_case}[name], args)


if __name__ == '__main__':
    main()
