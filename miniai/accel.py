"""Speed options for the `Learner`: mixed precision, the channels-last memory format and `torch.compile`.

Each is a callback that works on its own or with the others (`speed_cbs` builds them from flags). On the CPU
they are harmless: `MixedPrecision()` is a no-op there unless asked for a dtype, channels-last only changes
strides, and `CompileCB` compiles for the CPU (slow to compile; pass `backend='eager'` to skip the codegen).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.parameter import is_lazy

from .callbacks import DeviceCB
from .device import model_device
from .learner import Callback, Learner, MomentumLearner

__all__ = ['amp_dtype', 'MixedPrecision', 'ChannelsLastCB', 'CompileCB', 'speed_cbs']


def amp_dtype(device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype worth using on `device`: bfloat16 on CUDA GPUs that have it, float16 on older
    ones, None (full float32) elsewhere: CPU autocast is correct but no faster on CPUs without bf16 units."""
    device = torch.device(device)
    if device.type != 'cuda':
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


class MixedPrecision(Callback):
    """Runs `predict` and `get_loss` under `torch.autocast`, as the course's `MixedPrecision(TrainCB)` does.

    Autocast is entered in `before_batch` and left in `after_loss` (or `cleanup_batch`, if the batch stops
    early), so the backward pass, the optimizer step and the metrics run outside it. `dtype=None` picks
    `amp_dtype` of the model's device (a no-op on the CPU). With float16 a `torch.amp.GradScaler` scales the
    loss: for the fit, the learner's `backward` and `step` become the scaler's (and `step` skips steps whose
    gradients overflowed), and `learn.grad_scaler` is the scaler (`GradClipCB` reads its scale). Gradients stay
    scaled until the step, so a batch cancelled after backward (gradient accumulation) adds up correctly; a
    `MomentumLearner`, which keeps gradients across steps, is refused. bfloat16 has float32's range and needs no
    scaler. The scaler's state (its scale) is in checkpoints and goes on into the next fit.
    """
    order = DeviceCB.order + 10

    def __init__(self, dtype: torch.dtype | None = None):
        if dtype not in (None, torch.float16, torch.bfloat16):
            raise ValueError(f'MixedPrecision: dtype must be torch.float16, torch.bfloat16 or None (the best for the '
                             f"model's device), got {dtype!r}.")
        self.dtype = dtype
        self.autocast: torch.autocast | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self._loaded: dict[str, Any] = {}  # the scaler's state between fits (ended or loaded by `learn.load`)

    def state_dict(self) -> dict[str, Any]:
        return {'scaler': self.scaler.state_dict()} if self.scaler is not None else self._loaded

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Into this fit's scaler (a resume); between fits (`learn.load`), kept for the next fit's scaler."""
        if sd and self.scaler is not None:
            self.scaler.load_state_dict(sd['scaler'])
        else:
            self._loaded = sd

    def before_fit(self, learn: Learner) -> None:
        dev = model_device(learn.model) or torch.device('cpu')
        self.device_type, self.fit_dtype = dev.type, self.dtype or amp_dtype(dev)
        if self.fit_dtype != torch.float16:
            return
        if isinstance(learn, MomentumLearner):
            raise TypeError('MixedPrecision with float16: a MomentumLearner keeps its gradients across steps, which '
                            "the grad scaler unscales in place at each step, so its momentum would be wrong. Use "
                            'MixedPrecision(torch.bfloat16), or a TrainLearner with optim.SGD(momentum=...).')
        self.scaler = torch.amp.GradScaler(self.device_type)
        if self._loaded:
            self.scaler.load_state_dict(self._loaded['scaler'])

        def step() -> None:
            self.scaler.step(learn.opt)
            self.scaler.update()
        learn.backward, learn.step = lambda: self.scaler.scale(learn.loss).backward(), step
        learn.grad_scaler = self.scaler

    def before_batch(self, learn: Learner) -> None:
        if self.fit_dtype is None:
            return
        self.autocast = torch.autocast(self.device_type, dtype=self.fit_dtype)
        self.autocast.__enter__()

    def after_loss(self, learn: Learner) -> None:
        if self.autocast is not None:
            self.autocast.__exit__(None, None, None)
            self.autocast = None

    cleanup_batch = after_loss

    def cleanup_fit(self, learn: Learner) -> None:
        if self.scaler is not None:
            del learn.backward, learn.step, learn.grad_scaler
            self._loaded, self.scaler = self.state_dict(), None


class ChannelsLastCB(Callback):
    """Puts the model's weights and every 4-d input batch in the `torch.channels_last` memory format,
    which cuDNN's convolutions (and tensor cores) prefer, especially under mixed precision. Batches that are not
    a tuple or list with a tensor first are left as they are (for the Learner's checks to name). A model with lazy
    layers is converted once its first batch has initialised them."""
    order = DeviceCB.order + 5  # after DeviceCB and BatchTransformCB

    def before_fit(self, learn: Learner) -> None:
        self.waiting = True
        self._convert(learn.model)

    def _convert(self, model: nn.Module) -> None:
        if not any(is_lazy(t) for t in (*model.parameters(), *model.buffers())):  # torch cannot convert those
            model.to(memory_format=torch.channels_last)
            self.waiting = False

    def before_batch(self, learn: Learner) -> None:
        if self.waiting:
            self._convert(learn.model)
        b = learn.batch
        if isinstance(b, (tuple, list)) and b and isinstance(b[0], torch.Tensor) and b[0].ndim == 4:
            learn.batch = (b[0].contiguous(memory_format=torch.channels_last), *b[1:])


class CompileCB(Callback):
    """Compiles `learn.model` in place with `nn.Module.compile` before the first fit.

    The model stays the same module, so `learn.model.state_dict()` keeps its keys (no `_orig_mod.` prefix)
    and saved weights load into an uncompiled model. `dynamic=False` compiles one graph per batch shape
    (a full and a last batch, for training and for validation) rather than shape-generic kernels. The other
    arguments go to `torch.compile`, e.g. `mode='max-autotune'`, or `backend='eager'` for a quick check.
    """
    order = DeviceCB.order + 20  # after the model is on its device and in its memory format

    def __init__(self, mode: str | None = None, dynamic: bool | None = False, **kwargs: Any):
        self.kwargs = dict(mode=mode, dynamic=dynamic, **kwargs)

    def before_fit(self, learn: Learner) -> None:
        model = learn.model.module if isinstance(learn.model, DistributedDataParallel) else learn.model
        if model._compiled_call_impl is None:  # under `DDPCB`, the module inside: compiled once, validated compiled
            model.compile(**self.kwargs)


def speed_cbs(mixed_precision: bool = False, channels_last: bool = False,
              compile: bool | str = False) -> list[Callback]:
    """The speed callbacks chosen by flags (as `miniai fit`'s): `compile` may name a `torch.compile` mode."""
    cbs: list[Callback] = []
    if mixed_precision:
        cbs.append(MixedPrecision())
    if channels_last:
        cbs.append(ChannelsLastCB())
    if compile:
        cbs.append(CompileCB(mode=None if compile is True or compile == 'default' else compile))
    return cbs
