"""The `miniai` command: `miniai fit` trains the seed recipe on Fashion-MNIST and writes its results."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import optim

from .distributed import get_world_size, is_main_process
from .learner import Callback, Learner
from .metrics import MetricsCB

__all__ = ['main', 'fit_command', 'OPTIMIZERS', 'SCHEDULES']

OPTIMIZERS = {'adamw': optim.AdamW, 'adam': optim.Adam, 'sgd': partial(optim.SGD, momentum=0.9),
              'rmsprop': optim.RMSprop, 'adagrad': optim.Adagrad, 'adadelta': optim.Adadelta, 'adamax': optim.Adamax}
SCHEDULES = ('onecycle', 'cosine', 'cyclic', 'none')
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')
# `miniai fit`'s defaults, filled in by `checked_args`: the parser leaves every option None unless it is given,
# so that `--resume` can tell what was given.
FIT_DEFAULTS = {'epochs': 5, 'opt': 'adamw', 'sched': 'onecycle', 'seed': 42, 'recipe': 'seed',
                'mixed_precision': False, 'channels_last': False}
DEVICE_TYPES = ('cpu', 'cuda', 'mps')


def make_sched(name: str, lr: float, total_steps: int):
    """The scheduler factory (taking the optimizer) for `--sched name`, or None for a constant lr."""
    from .schedulers import CosineAnnealing, CyclicLR, OneCycle, uses_momentum
    if name == 'onecycle':
        return lambda opt: OneCycle(opt, max_lr=lr, total_steps=total_steps, cycle_momentum=uses_momentum(opt))
    if name == 'cosine': return partial(CosineAnnealing, T_max=total_steps)
    if name == 'cyclic':  # the first article's triangle: one cycle from lr/6 up to lr and back
        return lambda opt: CyclicLR(opt, base_lr=lr / 6, max_lr=lr, step_size_up=max(1, total_steps // 2),
                                    cycle_momentum=uses_momentum(opt))
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='miniai', description='miniai: train Fashion-MNIST CNNs with scheduled lr.')
    sub = p.add_subparsers(dest='command', required=True)
    f = sub.add_parser('fit', help='train the seed recipe (BatchNorm CNN, AdamW, one-cycle 6e-2, bs 1024, 5 epochs)')
    f.add_argument('--epochs', type=int, help='number of epochs (default: 5)')
    f.add_argument('--lr', type=float, default=None,
                   help="(max) learning rate (default: the recipe's; seed: 6e-2)")
    f.add_argument('--bs', type=int, default=None, help="batch size (default: the recipe's; seed: 1024)")
    f.add_argument('--opt', choices=sorted(OPTIMIZERS), help='optimizer (default: adamw)')
    f.add_argument('--sched', choices=SCHEDULES, help='learning-rate schedule (default: onecycle)')
    f.add_argument('--wd', type=float, default=None,
                   help="weight decay (default: the optimizer's own: 0.01 for adamw, 0 for the others)")
    f.add_argument('--clip', type=float, default=None, metavar='MAX_NORM',
                   help="clip the gradients' total norm to MAX_NORM (default: no clipping)")
    f.add_argument('--data', default=None,
                   help='folder with the four Fashion-MNIST IDX files (default: $MINIAI_DATA, then the cache)')
    f.add_argument('--device', default=None, help='cuda, mps or cpu (default: the best available)')
    f.add_argument('--seed', type=int, help='random seed (default: 42)')
    f.add_argument('--patience', type=int, default=None, metavar='N',
                   help='stop early once the valid loss has not improved for N epochs in a row, keeping the best '
                        "epoch's checkpoint as checkpoint_best.pt (default: train every epoch)")
    f.add_argument('--out', default=None, help='output folder (default: runs/<timestamp>)')
    f.add_argument('--resume', default=None, metavar='DIR',
                   help="continue the run in DIR (its checkpoint.pt, with its args.json's options; only "
                        "--device and --data may differ)")
    f.add_argument('--limit-batches', type=int, default=None, metavar='N',
                   help='train on the first N*bs training images and validate on the first N*bs test images: '
                        'N batches an epoch (a quick smoke run)')
    from .recipes import RECIPES
    f.add_argument('--recipe', choices=list(RECIPES),
                   help='seed (the default): the BatchNorm CNN; best: a ResNet, augmentation, flip TTA; cpu: a wider '
                        'CNN with the same extras, for CPUs (miniai.recipes)')
    f.add_argument('--augment', action=argparse.BooleanOptionalAction, default=None,
                   help="batch augmentation, random crop and flip (default: the recipe's; best, cpu: yes; "
                        "on a recipe without one, --augment uses best's: 2 px of padding)")
    f.add_argument('--tta', action=argparse.BooleanOptionalAction, default=None,
                   help="flip test-time augmentation at validation (default: the recipe's; best, cpu: yes)")
    f.add_argument('--label-smoothing', type=float, default=None, metavar='EPS',
                   help="label smoothing of the cross-entropy loss (default: the recipe's; best, cpu: 0.1)")
    f.add_argument('--mixed-precision', action='store_true', default=None,
                   help='autocast to bf16 (fp16 with a grad scaler on GPUs without bf16) on CUDA; float32 elsewhere')
    f.add_argument('--channels-last', action='store_true', default=None, help='channels-last memory format')
    f.add_argument('--compile', nargs='?', const='default', default=None, choices=COMPILE_MODES,
                   help='torch.compile the model, in mode default (if no mode is given), reduce-overhead, ...')
    from .compare import add_compare_args
    add_compare_args(sub.add_parser('compare', help='compare optimizers over seeds (the second article)'))
    return p


class MetricsFileCB(Callback):
    """Writes `metrics`' rows, merged per epoch (`epoch_rows`), to the JSON file `path` after every epoch: an
    interrupted run keeps what it measured. Only the main process writes."""
    order = 5  # after `MetricsCB` has the epoch's row

    def __init__(self, path: Path, metrics: MetricsCB): self.path, self.metrics = path, metrics

    def after_epoch(self, learn: Learner) -> None:
        if learn.phase == learn.phases[-1] and is_main_process():
            tmp = self.path.with_name(f'.{self.path.name}.tmp')  # written whole, then renamed: never half a file
            rows = [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in r.items()}
                    for r in epoch_rows(self.metrics.history)]  # NaN and inf are not JSON: null
            tmp.write_text(json.dumps(rows, indent=2, allow_nan=False))
            os.replace(tmp, self.path)


def checked_args(args: argparse.Namespace) -> argparse.Namespace:
    """`miniai fit`'s options, with a resumed run's own and the recipe's defaults filled in; refuses bad ones."""
    from .recipes import RECIPES
    for k in ('out', 'resume'):
        if getattr(args, k): setattr(args, k, str(Path(getattr(args, k)).expanduser()))
    if args.data: args.data = str(Path(args.data).expanduser().resolve())  # args.json's works from any folder
    if args.resume:
        args = resume_args(args)
        if not (Path(args.resume) / 'checkpoint.pt').is_file():
            raise SystemExit(f'miniai fit --resume {args.resume}: no checkpoint.pt there: the run stopped before it '
                             'saved one (one is saved after every epoch, and on Ctrl-C). Start it again (the same '
                             '--out may be used).')
    elif args.out and (Path(args.out) / 'checkpoint.pt').exists():
        raise SystemExit(f'miniai fit: {args.out} already holds a run; continue it with `miniai fit --resume '
                         f'{args.out}`, or give another --out.')
    check_out(args.out, 'fit')
    for k, v in FIT_DEFAULTS.items():
        if getattr(args, k) is None: setattr(args, k, v)
    check_seed(args.seed, '--seed', 'fit')
    recipe = RECIPES[args.recipe]
    for k in ('bs', 'lr', 'label_smoothing', 'tta'):  # unset options take the recipe's values
        if getattr(args, k) is None: setattr(args, k, getattr(recipe, k))
    if args.augment is None: args.augment = recipe.augment is not None
    limit = 1 if args.limit_batches is None else args.limit_batches
    for flag, v in (('--epochs', args.epochs), ('--bs', args.bs), ('--limit-batches', limit),
                    ('--patience', 1 if args.patience is None else args.patience)):
        if v < 1: raise SystemExit(f'miniai fit: {flag} must be at least 1 (got {v}).')
    if not 0 < args.lr <= torch.finfo(torch.float32).max:  # (the weights' dtype takes it in each step)
        raise SystemExit(f'miniai fit: --lr must be positive and finite, at most {torch.finfo(torch.float32).max:.3g} '
                         f'(got {args.lr}).')
    if args.wd is not None and not 0 <= args.wd < math.inf:
        raise SystemExit(f'miniai fit: --wd must be 0 or more, and finite (got {args.wd}).')
    if args.clip is not None and not 0 < args.clip < math.inf:
        raise SystemExit(f'miniai fit: --clip must be positive and finite (got {args.clip}); leave it out for no '
                         'clipping.')
    if not 0 <= args.label_smoothing < 1:
        raise SystemExit(f'miniai fit: --label-smoothing must be in [0, 1) (got {args.label_smoothing}).')
    return args


def check_out(out: str | os.PathLike | None, command: str) -> None:
    """Refuse an `--out` folder that is a file, or under one (before anything trains)."""
    if out is None:
        return
    if file := next((p for p in (Path(out), *Path(out).parents) if p.exists() and not p.is_dir()), None):
        where = 'is a file' if file == Path(out) else f'is under {file}, which is a file'
        raise SystemExit(f'miniai {command}: --out {out} {where}; give a folder (made if missing).')


def check_seed(seed: int, flag: str, command: str) -> None:
    """Refuse a seed outside 0 to 2**32 - 1: torch's CPU generator keeps 32 bits of a seed, so seeds 2**32 apart
    would give the same weights."""
    if not 0 <= seed < 2**32:
        raise SystemExit(f'miniai {command}: {flag} must be a whole number from 0 to 2**32 - 1 (got {seed}): torch '
                         'keeps 32 bits of a seed.')


def checked_device(name: str | None, command: str = 'fit', saved_in: str | None = None,
                   resumed: str | None = None) -> torch.device:
    """The device `--device name` names (the best one there is if None), if miniai trains on its type and this
    machine has it. `command`, `saved_in` (the run folder whose args.json gave `name`) and `resumed` (the run
    folder `--resume` names, when `name` was given with it) are for the messages."""
    from .device import def_device
    try:
        device = torch.device(name or def_device)
    except (RuntimeError, ValueError) as e:
        raise SystemExit(f'miniai {command}: --device {name!r} is not a device torch knows ({e}); use cpu, cuda, '
                         'cuda:1 or mps.') from None
    if device.type not in DEVICE_TYPES:
        raise SystemExit(f'miniai {command}: --device {name}: miniai trains on cpu, cuda, cuda:N or mps only.')
    count = (torch.cuda.device_count() if device.type == 'cuda' else
             int(torch.backends.mps.is_available()) if device.type == 'mps' else 1)
    if (device.index or 0) >= count:
        own = resumed and json.loads((Path(resumed) / 'args.json').read_text()).get('device')  # None: the best
        fix = ('leave --device out to use the best device there is, or pass --device cpu' if not (saved_in or own)
               else f"leave --device out to resume on the run's own device, {own}, or pass --device cpu"
               if own and own != name else f'the run in {saved_in or resumed} was saved with --device {name}: resume '
               'it with --device cpu (or another device this machine has)')
        raise SystemExit(f'miniai {command}: --device {name}, but torch sees {count} {device.type} device(s) here; '
                         f'{fix}.')
    return device


def new_run_dir(distributed: bool = False, prefix: str = '') -> Path:
    """A new folder runs/<prefix><timestamp> (with -2, -3, ... if taken), made by the main process only; with
    `distributed`, every process gets its name."""
    out = None
    if is_main_process():
        base = Path('runs') / (prefix + time.strftime('%Y%m%d-%H%M%S'))
        base.parent.mkdir(parents=True, exist_ok=True)
        for i in itertools.count(1):
            out = base.with_name(base.name + (f'-{i}' if i > 1 else ''))
            with contextlib.suppress(FileExistsError):
                out.mkdir()  # atomic: of two runs started in the same second, one gets -2
                break
    if distributed:
        dist.broadcast_object_list(box := [out], src=0)
        out = box[0]
    return out


def fit_or_exit(learn: Learner, args: argparse.Namespace, ckpt: Path) -> None:
    """`learn.fit` for `miniai fit`: a NaN loss or Ctrl-C ends the command with a message (and exit code 130
    for Ctrl-C); a Ctrl-C at a batch end saves the checkpoint, one mid-batch keeps the last one."""
    from .checkpoint import FitInterrupted, load_checkpoint
    from .guards import NonFiniteLossError
    resume = f'continue with: {command_line(f"fit --resume {ckpt.parent}", get_world_size())}'
    saved = load_checkpoint(ckpt) if args.resume else {}
    done = (ckpt.parent / 'model.pt').exists()  # a run without its outputs (Ctrl-C at its end) resumes to write them
    if saved.get('should_stop') and done:
        raise SystemExit(f'miniai fit --resume {ckpt.parent}: that run stopped early (--patience {args.patience}), '
                         'so it has nothing left to train. To train longer, start a new run.')
    if saved and saved['epoch'] >= args.epochs and done:
        raise SystemExit(f'miniai fit --resume {ckpt.parent}: that run finished its {args.epochs} '
                         f'epoch{"s" * (args.epochs != 1)}, so it has nothing left to train. To train longer, start a '
                         'new run (with --epochs).')
    try:
        with warnings.catch_warnings():  # (the Python API's advice for such a run; here it only writes the outputs)
            warnings.filterwarnings('ignore', 'fit.*resume.*stopped early')
            learn.fit(args.epochs, resume=ckpt if args.resume else None)
    except NonFiniteLossError as e:
        raise SystemExit(f'miniai fit: {e}\nWith miniai fit: start a new run, with another --out, and a lower --lr '
                         f'(this run used {args.lr}); resuming this one would diverge the same way.') from None
    except FitInterrupted:  # between batches: the state is whole
        if is_main_process():
            try:
                learn.save(ckpt)
            except KeyboardInterrupt:  # a second Ctrl-C during the (atomic) save
                print(f'Interrupted again while saving: the last checkpoint, {ckpt}, is kept; {resume}'
                      if ckpt.is_file() else 'Interrupted again while saving: no checkpoint was saved yet')
                raise SystemExit(130) from None
            print(f'Interrupted: saved {ckpt}; {resume}')
        raise SystemExit(130) from None
    except KeyboardInterrupt:  # mid-batch (a second Ctrl-C, or a distributed run): a save would not resume exactly
        if is_main_process():
            kept = (f'the last checkpoint, {ckpt}, is kept; {resume}' if ckpt.is_file() else
                    'no checkpoint was saved yet (one is written after every epoch)')
            print(f'Interrupted mid-batch, so nothing was saved: {kept}')
        raise SystemExit(130) from None


def fit_command(args: argparse.Namespace) -> dict:
    """Train as `miniai fit` does; writes metrics.json, curves.png and model.pt to the output folder, and
    args.json and checkpoint.pt (after every epoch, and on Ctrl-C) for `--resume`."""
    from torcheval.metrics import MulticlassAccuracy

    from .accel import amp_dtype, speed_cbs
    from .callbacks import DeviceCB, GradClipCB
    from .checkpoint import CheckpointCB, InterruptCB
    from .data import get_dls
    from .distributed import DDPCB, get_rank, init_distributed
    from .early_stopping import EarlyStoppingCB
    from .learner import TrainLearner
    from .models import set_seed
    from .progress import ProgressCB
    from .recipes import RECIPES, FlipTTACB
    from .sched import BatchSchedCB, RecorderCB, rec_lr, rec_mom

    saved_device = args.resume and args.device is None  # the device comes from the run's args.json
    args = checked_args(args)
    recipe = RECIPES[args.recipe]
    distributed = init_distributed()  # under torchrun: join the group before anything goes on a GPU
    device = checked_device(args.device, saved_in=args.resume if saved_device else None,
                            resumed=None if saved_device else args.resume)
    if recipe.cpu_note and device.type == 'cpu' and is_main_process():
        warnings.warn(f'miniai fit --recipe {args.recipe} on the CPU: {recipe.cpu_note}', stacklevel=2)
    if args.mixed_precision and amp_dtype(device) is None and is_main_process():
        warnings.warn(f'miniai fit --mixed-precision does nothing on the {device.type}: autocast pays off on CUDA '
                      'GPUs; this run trains in float32.', stacklevel=2)
    set_seed(args.seed)  # the initial weights come from the seed alone, and so do the shuffles (`seed=`)
    model = recipe.model()
    n = args.limit_batches and args.limit_batches * args.bs
    augment = (recipe.augment or RECIPES['best'].augment) if args.augment else None
    dls = get_dls(bs=args.bs, path=args.data, device=device, n_train=n, n_valid=n, rank=get_rank(),
                  world_size=get_world_size(), tfm=augment, seed=args.seed)
    metrics, progress = MetricsCB(accuracy=MulticlassAccuracy()), ProgressCB()
    rec = RecorderCB(lr=rec_lr, mom=rec_mom)
    cbs = [DeviceCB(device), metrics, progress, rec, *([FlipTTACB()] if args.tta else []),
           *speed_cbs(args.mixed_precision, args.channels_last, args.compile or False)]
    sched = make_sched(args.sched, args.lr, args.epochs * len(dls.train))
    if sched: cbs.append(BatchSchedCB(sched))
    if args.clip: cbs.append(GradClipCB(args.clip))
    if args.patience: cbs.append(EarlyStoppingCB(patience=args.patience))
    if distributed: cbs.append(DDPCB())
    out = Path(args.out) if args.out else new_run_dir(distributed)
    ckpt = out / 'checkpoint.pt'
    best = CheckpointCB(ckpt, monitor='valid_loss' if args.patience else None)  # the best: checkpoint_best.pt
    cbs += [MetricsFileCB(out / 'metrics.json', metrics), best, InterruptCB()]
    loss_func = partial(F.cross_entropy, label_smoothing=args.label_smoothing)
    opt_func = OPTIMIZERS[args.opt] if args.wd is None else partial(OPTIMIZERS[args.opt], weight_decay=args.wd)
    learn = TrainLearner(model, dls, loss_func, lr=args.lr, cbs=cbs, opt_func=opt_func)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        (out / 'args.json').write_text(json.dumps({**vars(args), 'processes': get_world_size()}, indent=2))
    fit_or_exit(learn, args, ckpt)
    rows = epoch_rows(metrics.history)
    if is_main_process():
        save_curves(out / 'curves.png', progress.losses, [r['valid_loss'] for r in rows], len(dls.train),
                    rec.recs)
        torch.save(learn.model.state_dict(), out / 'model.pt')
        stopped = (f'stopped early after epoch {rows[-1]["epoch"]} (--patience {args.patience}). '
                   if learn.should_stop and rows[-1]['epoch'] < args.epochs - 1 else '')
        if args.patience and best.best is not None:
            stopped += f'The best valid loss, {best.best:.4f}, is in {best.best_path.name}. '

        print(f"{stopped}valid accuracy {rows[-1]['accuracy']:.4f}; "
              f"wrote metrics.json, curves.png, model.pt, checkpoint.pt and args.json to {out}")
    return {'out': out, 'rows': rows, 'learn': learn}


def command_line(rest: str, processes: int) -> str:
    """The `miniai` command line that runs `rest` in `processes` processes (`torchrun` for more than one)."""
    return f'torchrun --nproc_per_node {processes} -m miniai {rest}' if processes > 1 else f'miniai {rest}'


def resume_args(args: argparse.Namespace) -> argparse.Namespace:
    """The options of the run saved in `args.resume` (its args.json), but `--device` and `--data` if given."""
    from .recipes import RECIPES
    run, saved = Path(args.resume), Path(args.resume) / 'args.json'
    unset = vars(build_parser().parse_args(['fit']))  # all None: options newer than the saved run take defaults
    if given := [k for k, v in vars(args).items() if k not in ('command', 'resume', 'device', 'data')
                 and v is not None]:
        flags = ', '.join('--' + k.replace('_', '-') for k in given)
        raise SystemExit(f'miniai fit --resume {run}: continues that run with its own options (its args.json); '
                         f'only --device and --data may be given with it, not {flags}. To train with other '
                         'options, start a new run.')
    if run.is_file():
        raise SystemExit(f'miniai fit --resume {run}: that is a file; give the run folder that holds it, {run.parent}.')
    if not run.is_dir():
        raise SystemExit(f'miniai fit --resume {run}: no such folder; give the output folder of a `miniai fit` run '
                         '(runs/<timestamp> by default).')
    if not saved.is_file():
        raise SystemExit(f'miniai fit --resume {run}: no args.json there; give the output folder of a `miniai fit` '
                         'run.')
    try:
        opts = json.loads(saved.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f'miniai fit --resume {run}: {saved} is not valid JSON ({e}); it should hold the options '
                         'the run was started with.') from None
    if (n := opts.pop('processes', None)) is not None and n != get_world_size():  # (runs before it was kept: any)
        raise SystemExit(f'miniai fit --resume {run}: that run trained in {n} process{"es" * (n != 1)}, this one in '
                         f'{get_world_size()}, so the batches would not be those of the run. Resume it as it was '
                         f'launched: {command_line(f"fit --resume {run}", n)}')
    choices = {'recipe': RECIPES, 'opt': OPTIMIZERS, 'sched': SCHEDULES}
    if bad := [f'{k}={opts[k]!r}' for k, ok in choices.items() if opts.get(k) is not None and opts[k] not in ok]:
        raise SystemExit(f'miniai fit --resume {run}: {saved} has options this miniai does not know: '
                         f'{", ".join(bad)}.')
    keep = {k: getattr(args, k) for k in ('device', 'data') if getattr(args, k) is not None}
    return argparse.Namespace(**{**unset, **opts, **keep, 'resume': args.resume, 'out': args.resume})


def epoch_rows(history: list[dict]) -> list[dict]:
    """Merge `MetricsCB` rows (one train, one valid per epoch) into one dict per epoch."""
    rows: dict[int, dict] = {}
    for h in history:
        r = rows.setdefault(h['epoch'], {'epoch': h['epoch'], 'seconds': 0.})
        split = 'train' if h['train'] else 'valid'
        r[f'{split}_loss'] = h['loss']
        r['seconds'] += h['time']
        for k, v in h.items():
            if k not in ('loss', 'epoch', 'train', 'time'): r[k if split == 'valid' else f'train_{k}'] = v
    return list(rows.values())


def save_curves(path: Path, losses: list[float], valid_losses: list[float], n_batches: int,
                recs: dict[str, list[float]]) -> None:
    """Write loss (per training batch, valid per epoch), lr and beta1/momentum panels to a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 3, figsize=(14, 3.5))
    axs[0].plot(losses, label='train')
    axs[0].plot([(i + 1) * n_batches for i in range(len(valid_losses))], valid_losses, 'o-', label='valid')
    axs[0].set(title='loss', xlabel='batch')
    axs[0].legend()
    for ax, k, title in ((axs[1], 'lr', 'learning rate'), (axs[2], 'mom', 'momentum (beta1)')):
        ax.plot(recs[k])
        ax.set(title=title, xlabel='batch')
    if all(math.isnan(m) for m in recs['mom']):  # Adagrad, Adadelta
        axs[2].set_axis_off()
        axs[2].text(0.5, 0.5, 'this optimizer has no momentum', ha='center', va='center', transform=axs[2].transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None,
                  line: str | None = None) -> None:
    """Prints a warning as its category and message, without the source line (which means nothing at a shell)."""
    print(f'{category.__name__}: {message}', file=file or sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """`miniai fit ...` or `miniai compare ...`; errors in the data or a checkpoint print their message only,
    warnings their message."""
    from .checkpoint import CheckpointError
    from .data import DataError
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        _run(args, CheckpointError, DataError)


def _run(args: argparse.Namespace, *errors: type[Exception]) -> None:
    try:
        if args.command == 'fit': fit_command(args)
        if args.command == 'compare':
            from .compare import compare_command
            compare_command(args)
    except errors as e:
        raise SystemExit(f'miniai {args.command}: {e}') from None
