"""Training recipes for `miniai fit --recipe NAME`: `seed`, the course's BatchNorm CNN, and `best`, a ResNet.

The `best` recipe, and why each choice:

- Model (`resnet`): the course's `ResBlock`s (two `conv`s with BatchNorm and `GeneralRelu`; the shortcut is
  an average pool and a 1×1 conv where the shape changes): a stride-1 stem block at 28×28 with 5×5 kernels,
  then three stride-2 blocks (28 → 14 → 7 → 4) widening 64 → 512, global average pooling (a small head)
  and a linear layer with BatchNorm1d, as in the course. On an H100 a step is bound by Python, not the GPU
  (the 32 → 256 version took as long), so the width costs nothing there.
- Data: random crop (2 px reflect padding) and horizontal flip, drawn per image but done for the whole
  batch on the training device (`vision.BatchAugment` as the `DeviceLoader`'s `tfm`): no per-item Python.
  Batch size 256 (four times the seed's updates per epoch).
- Optimisation: AdamW (`--opt`), one-cycle to 1e-2 (`--sched`), label smoothing 0.1.
- Validation: flip test-time augmentation (`FlipTTACB`): logits averaged over each image and its mirror.

Augmentation pays off in longer runs: `--epochs 21` (55 s on one H100 with `--mixed-precision`) reached
0.9517. In 5 epochs it does not: there, no augmentation, no TTA, no label smoothing and bs 128 did best
(0.941): `--bs 128 --no-augment --no-tta --label-smoothing 0`. The flags `--augment/--no-augment`,
`--tta/--no-tta` and `--label-smoothing` override any recipe's choice.

The `cpu` recipe keeps `best`'s training (bs 256, AdamW, one-cycle, label smoothing, flip TTA) but swaps the
ResNet, which is ~7× slower per batch on two CPU cores even at 16 → 128 channels, for the seed's all-conv
stride-2 CNN widened to 16 → 256 channels (`wide_cnn`: about 7 s an epoch on 2 CPU cores), and augments more
gently (1 px padding: with 2 px the small model underfit, train accuracy no higher than valid). `--epochs 20` reached
0.9348 in 2.3 minutes on 2 CPU cores (8 minutes on a slower machine).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from torch import Tensor, nn

from .guards import is_whole
from .learner import Callback, Learner
from .models import GeneralRelu, conv, get_model, init_weights
from .vision import BatchAugment

__all__ = ['ResBlock', 'resnet', 'FlipTTACB', 'Recipe', 'RECIPES']

act_gr = partial(GeneralRelu, leak=0.1, sub=0.4)


def _conv_block(ni: int, nf: int, stride: int, ks: int, act: Callable[[], nn.Module],
                norm: Callable[[int], nn.Module]) -> nn.Sequential:
    return nn.Sequential(conv(ni, nf, ks, stride=1, act=act, norm=norm),
                         conv(nf, nf, ks, stride=stride, act=None, norm=norm))


class ResBlock(nn.Module):
    """The course's residual block: `act(convs(x) + idconv(pool(x)))`, pool and 1×1 conv only where needed;
    `stride` is 1 or 2."""
    def __init__(self, ni: int, nf: int, stride: int = 1, ks: int = 3, act: Callable[[], nn.Module] = act_gr,
                 norm: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        if not (is_whole(stride, 1) and stride <= 2):
            raise ValueError(f'ResBlock: stride is 1 or 2 (the shortcut pools by 2 where the stride is 2); '
                             f'got {stride!r}')
        self.convs = _conv_block(ni, nf, stride, ks, act, norm)
        self.idconv = nn.Identity() if ni == nf else conv(ni, nf, ks=1, stride=1, act=None, norm=norm)
        self.pool = nn.Identity() if stride == 1 else nn.AvgPool2d(2, ceil_mode=True)
        self.act = act()

    def forward(self, x: Tensor) -> Tensor: return self.act(self.convs(x) + self.idconv(self.pool(x)))


def resnet(nfs: Sequence[int] = (64, 128, 256, 512), act: Callable[[], nn.Module] = act_gr,
           norm: Callable[[int], nn.Module] = nn.BatchNorm2d, n_classes: int = 10) -> nn.Sequential:
    """A ResNet for 28×28 images: a 5×5 stem `ResBlock` to `nfs[0]`, stride-2 blocks through `nfs`, global
    average pool, linear + BatchNorm1d head; Kaiming-initialised for the leaky `GeneralRelu`."""
    layers = [ResBlock(1, nfs[0], ks=5, act=act, norm=norm)]
    layers += [ResBlock(nfs[i], nfs[i + 1], stride=2, act=act, norm=norm) for i in range(len(nfs) - 1)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(nfs[-1], n_classes, bias=False),
               nn.BatchNorm1d(n_classes)]
    return nn.Sequential(*layers).apply(partial(init_weights, leaky=0.1))


class FlipTTACB(Callback):
    """Flip test-time augmentation: at validation, `preds` becomes the mean of the logits of each image and
    of its horizontal mirror (the loss and metrics then use the mean)."""
    def after_predict(self, learn: Learner) -> None:
        if not learn.training:
            learn.preds = (learn.preds + learn.model(learn.batch[0].flip(-1))) / 2


def wide_cnn() -> nn.Module:
    """The `cpu` recipe's model: the seed CNN widened to 16 → 256 channels (no residual blocks, which cost ~7×
    as much per batch on a CPU)."""
    return get_model(act_gr, nfs=(1, 16, 32, 64, 128, 256), norm=nn.BatchNorm2d).apply(partial(init_weights, leaky=0.1))


def seed_model() -> nn.Module:
    """The seed recipe's model: the course's BatchNorm CNN with leaky `GeneralRelu`s."""
    return get_model(act_gr, norm=nn.BatchNorm2d).apply(partial(init_weights, leaky=0.1))


@dataclass
class Recipe:
    """What a recipe fixes: its model, default bs and lr, label smoothing, batch augmentation (a transform of
    the training batches, or None) and whether validation uses flip TTA. `miniai fit` flags override all but
    the model. `cpu_note`, if set, is what `miniai fit` warns when the recipe runs on a CPU."""
    model: Callable[[], nn.Module]
    bs: int
    lr: float
    label_smoothing: float = 0.
    augment: Callable[[Tensor], Tensor] | None = None
    tta: bool = False
    cpu_note: str | None = None


RECIPES = {
    'seed': Recipe(seed_model, bs=1024, lr=6e-2),
    'best': Recipe(resnet, bs=256, lr=1e-2, label_smoothing=0.1, augment=BatchAugment(pad=2), tta=True,
                   cpu_note='the best recipe\'s ResNet is made for a GPU: on 2 CPU cores one training batch of 256 '
                            'took 10 s (about 40 minutes an epoch). `--recipe cpu` trains the same way with a CNN '
                            'made for CPUs (0.935 after 20 epochs, 2.3 minutes on 2 cores).'),
}
RECIPES['cpu'] = replace(RECIPES['best'], model=wide_cnn, lr=2e-2, augment=BatchAugment(pad=1), cpu_note=None)
