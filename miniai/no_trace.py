"""`no_trace`: run something on a `Learner` (an LR range test, predictions) and put back all it changed."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import is_lazy

from .learner import Callback, Learner, copy_state, loader_generators, put_param_groups, run_all

__all__ = ['no_trace']


def _loader_state(dl) -> tuple:
    """What running a loader can change: its `state_dict()`, its own generators, its epoch count and shard
    (`DeviceLoader`, which `DDPCB` shards in place), and whether its persistent workers were started yet."""
    sd = copy.deepcopy(dl.state_dict()) if callable(getattr(dl, 'state_dict', None)) else None
    gens = [(g, g.get_state()) for g in loader_generators(dl)]
    shard = (dl.rank, dl.world_size) if hasattr(dl, 'world_size') else None
    unstarted = getattr(dl, 'persistent_workers', False) and getattr(dl, '_iterator', None) is None
    return dl, sd, gens, getattr(dl, 'epoch', None), shard, unstarted


def _set_loader_state(dl, sd, gens, epoch, shard, unstarted) -> None:
    if sd is not None:
        dl.load_state_dict(sd)
    for g, s in gens:
        g.set_state(s)
    if epoch is not None:
        dl.epoch = epoch
    if shard is not None:
        dl.rank, dl.world_size = shard
    if unstarted:  # workers started in the block, whose RNGs moved on: the next epoch starts them as it would have
        dl._iterator = None


def _restore_all(steps: Iterable[Callable[[], object]], error: BaseException | None = None) -> None:
    """Runs every step (see `run_all`); their errors become notes on `error`, the block's, being raised."""
    run_all([('', step) for step in steps], error, lambda _, e: f'no_trace: restoring also failed with {e!r}')


def _module_state(m: torch.nn.Module) -> tuple:
    """What `no_trace` puts back in module `m`: its children and its parameter and buffer objects, with the
    parameters' data (device, dtype) and the non-persistent buffers' values (which `load_state_dict` skips)."""
    datas = {n: p.data for n, p in m._parameters.items() if p is not None}
    values = {n: b.clone() for n, b in m._buffers.items() if b is not None and n in m._non_persistent_buffers_set}
    return m, dict(m._modules), dict(m._parameters), datas, dict(m._buffers), values


def _put_module(m: torch.nn.Module, children: dict, params: dict, datas: dict, bufs: dict, values: dict) -> None:
    """Puts back what `_module_state` saved, whatever the block replaced, reshaped or moved."""
    if isinstance(m, torch.jit.ScriptModule):  # its containers take items, not clear() or update()
        for now, old in ((m._parameters, params), (m._buffers, bufs)):
            for n, t in old.items():
                if now[n] is not t: now[n] = t
    else:
        for now, old in ((m._modules, children), (m._parameters, params), (m._buffers, bufs)):
            now.clear()
            now.update(old)
    for n, data in datas.items():
        params[n].data = data
    with torch.no_grad():
        for n, v in values.items():
            bufs[n].copy_(v)


def _lazy_state(m: torch.nn.Module) -> tuple:
    """What a lazy layer's first batch changes (its class, attributes and hooks, and its tensors' classes), saved
    before the block to put the layer back uninitialised."""
    hooks = (m._forward_pre_hooks, m._forward_pre_hooks_with_kwargs, m._load_state_dict_pre_hooks)
    tensors = [(t, type(t)) for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
    return m, type(m), dict(vars(m)), [(h, dict(h)) for h in hooks], tensors


def _put_lazy(m: torch.nn.Module, cls: type, attrs: dict, hooks: list, tensors: list) -> None:
    """Puts back what `_lazy_state` saved: the layer waits for its first batch again."""
    for t, kind in tensors:
        t.__class__ = kind
    m.__class__ = cls
    vars(m).clear()
    vars(m).update(attrs)
    for h, saved in hooks:
        h.clear()
        h.update(saved)


def _restore_cbs(learn: Learner, cbs: list[Callback], running: list[tuple[Callback, dict]]) -> None:
    for cb in list(learn.cbs):
        learn.remove_cb(cb)
    for cb in cbs:  # all of them again, in their old order
        learn.add_cb(cb)
    for cb, sd in running:  # e.g. `ProgressCB.losses`: the last fit's, not the block's
        cb.load_state_dict(sd)


def _restore_model(model: torch.nn.Module, grads: list[torch.Tensor | None], modes: list[bool]) -> None:
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = g
    for m, t in zip(model.modules(), modes, strict=True):
        m.training = t


def _restore_opt(opt: torch.optim.Optimizer | None, opt_sd: dict | None) -> None:
    if opt is not None:  # keeping the param-group dicts, which callbacks may hold
        pgs = opt.param_groups
        opt.load_state_dict(opt_sd)
        for old, new in zip(pgs, opt.param_groups, strict=True):
            old.clear()
            old.update(new)
        put_param_groups(opt, pgs)


def _restore_attrs(learn: Learner, attrs: dict) -> None:
    vars(learn).clear()  # the Learner's attributes (`opt` too, None if it was), none added
    vars(learn).update(attrs)


def _restore_rngs(rngs: tuple) -> None:
    random.setstate(rngs[0])
    np.random.set_state(rngs[1])
    torch.set_rng_state(rngs[2])
    if rngs[3] is not None:
        torch.cuda.set_rng_state_all(rngs[3])


@contextmanager
def no_trace(learn: Learner, paused: Callable[[Callback], bool], loaders: Iterable = ()) -> Iterator[None]:
    """Takes the callbacks for which `paused(cb)` is true off `learn` for the block; afterwards puts back the
    callbacks (in their order, with the state of those that ran), weights, buffers (non-persistent ones too),
    gradients, training modes, device and dtype, optimizer, the Learner's attributes, the positions of its loaders
    and of `loaders`, and the RNGs, also if the block raises. Lazy layers not yet initialised are put back so.
    `learn.save` writes nothing in the block. Forward hooks on the model run in it, as in any forward."""
    model, opt, cbs, attrs = learn.model, learn.opt, list(learn.cbs), dict(vars(learn))
    weights = {k: v if is_lazy(v) else v.clone() for k, v in model.state_dict().items()}
    mods = [_module_state(m) for m in model.modules()]  # put back as they are: the block may replace them
    lazy = [_lazy_state(m) for m in model.modules() if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    opt_sd = None if opt is None else copy.deepcopy(opt.state_dict())
    own = [dl for k in ('train', 'valid') if (dl := getattr(learn.dls, k, None)) is not None]
    loaders = [_loader_state(dl) for dl in {id(dl): dl for dl in (*own, *loaders)}.values()]
    cuda = torch.cuda.is_available()
    rngs = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
            torch.cuda.get_rng_state_all() if cuda else None)
    for cb in cbs:
        if paused(cb):
            learn.remove_cb(cb)
    running = [(cb, copy_state(cb.state_dict())) for cb in learn.cbs if callable(getattr(cb, 'state_dict', None))]
    steps = [partial(_restore_cbs, learn, cbs, running),
             *(partial(_put_module, *state) for state in mods),
             *(partial(_put_lazy, *state) for state in lazy),
             partial(model.load_state_dict, weights),
             partial(_restore_model, model, grads, modes), partial(_restore_opt, opt, opt_sd),
             partial(_restore_attrs, learn, attrs),
             *(partial(_set_loader_state, *state) for state in loaders),
             partial(_restore_rngs, rngs)]
    learn._no_trace = True  # `learn.save` writes nothing in the block
    try:
        yield
    except BaseException as e:
        _restore_all(steps, e)  # the block's error goes on, with any failure to restore as a note
        raise
    _restore_all(steps)
