"""Temporary: guard cost on CPU and CUDA, and resume bit-exactness on CUDA (deleted after use)."""
import statistics, sys, tempfile, time, contextlib, io
from pathlib import Path
from types import SimpleNamespace
import torch, torch.nn.functional as F
from torch import nn
sys.path.insert(0, 'tests')
from miniai.learner import TrainLearner
from miniai.models import get_model

def bench(model_fn, guard, batches, device, reps=5):
    ts = []
    for _ in range(reps):
        torch.manual_seed(0)
        learn = TrainLearner(model_fn().to(device), SimpleNamespace(train=batches, valid=batches[:1]),
                             F.cross_entropy, lr=0.01, nan_guard=guard)
        learn.fit(1, valid=False)  # warm up
        if device == 'cuda': torch.cuda.synchronize()
        t = time.perf_counter(); learn.fit(1, valid=False)
        if device == 'cuda': torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) / len(batches) * 1e6)
    return min(ts)

def compare(name, mf, batches, device):
    r = {g: [] for g in (True, False)}
    for _ in range(3):
        for g in (True, False): r[g].append(bench(mf, g, batches, device))
    on, off = min(r[True]), min(r[False])
    print(f'{device} {name}: guard on {on:.1f} us/batch, off {off:.1f} us/batch, cost {on-off:+.1f} us ({(on-off)/off:+.1%})')

torch.set_num_threads(1)
x, y = torch.randn(500, 32, 10), torch.randint(0, 2, (500, 32))
tiny = list(zip(x, y))
compare('Linear(10,2) bs32', lambda: nn.Linear(10, 2), tiny, 'cpu')
compare('Linear-BN-Linear bs32', lambda: nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)), tiny, 'cpu')
if torch.cuda.is_available():
    torch.set_num_threads(16)
    compare('Linear(10,2) bs32', lambda: nn.Linear(10, 2), [(a.cuda(), b.cuda()) for a, b in tiny], 'cuda')
    xs = torch.randn(100, 1024, 1, 28, 28, device='cuda'); ys = torch.randint(0, 10, (100, 1024), device='cuda')
    compare('seed CNN (BatchNorm) bs1024', lambda: get_model(norm=nn.BatchNorm2d), list(zip(xs, ys)), 'cuda')
    # resume bit-exactness on CUDA
    import test_checkpoint as T
    from miniai.callbacks import DeviceCB
    from miniai.checkpoint import CheckpointCB
    mk = T.make_learner
    T.make_learner = lambda sched='miniai', cbs=(), epochs=T.N_EPOCHS: mk(sched, [DeviceCB('cuda'), *cbs], epochs)
    for exc in (T.CancelFitException, KeyboardInterrupt):
        d = Path(tempfile.mkdtemp())
        with contextlib.redirect_stdout(io.StringIO()):
            torch.manual_seed(0); l = T.make_learner(cbs=[CheckpointCB(d), T.StopAfterEpoch(1, exc)])
            try: l.fit(T.N_EPOCHS)
            except KeyboardInterrupt: pass
            ref, res = T.reference(), T.resume(d, cbs=[CheckpointCB(d)])
        try: T.assert_same_run(ref, res); print('cuda resume after epoch, bit-identical:', exc.__name__)
        except AssertionError as e: print('cuda resume NOT identical', exc.__name__, e)
