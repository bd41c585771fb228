"""Where tensors live: the default device and moving (nested) batches to and from it."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Any

import torch
from torch import nn

__all__ = ['def_device', 'to_device', 'to_cpu', 'model_device']


def _best_device() -> str:
    if torch.cuda.is_available(): return 'cuda'
    if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available(): return 'mps'
    return 'cpu'


def_device = _best_device()


def to_device(x: Any, device: str | torch.device = def_device, non_blocking: bool = False) -> Any:
    """Move a tensor, or the tensors in a (nested) list, tuple or dict, to `device`."""
    if isinstance(x, torch.Tensor): return x.to(device, non_blocking=non_blocking)
    if isinstance(x, Mapping): return {k: to_device(v, device, non_blocking) for k, v in x.items()}
    if isinstance(x, (list, tuple)): return type(x)(to_device(o, device, non_blocking) for o in x)
    return x


def to_cpu(x: Any) -> Any:
    """Detach and move to the CPU (float16/bfloat16 become float32), through lists, tuples and dicts."""
    if isinstance(x, Mapping): return {k: to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)): return type(x)(to_cpu(o) for o in x)
    if not isinstance(x, torch.Tensor): return x
    res = x.detach().cpu()
    return res.float() if res.dtype in (torch.float16, torch.bfloat16) else res


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer (None if it has neither)."""
    t = next(chain(model.parameters(), model.buffers()), None)
    return None if t is None else t.device
