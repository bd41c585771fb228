"""Forward hooks on modules, and `ActivationStats`: the means, stds and histograms of layer activations."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from functools import partial

import torch
from torch import nn

from .learner import Callback, Learner

__all__ = ['Hook', 'Hooks', 'HooksCallback', 'ActivationStats', 'append_stats', 'get_hist', 'get_min']


def _check_module(m: object, who: str, what: str | None = None,
                  fix: str = 'hook the plain (unscripted) module instead, or leave it out') -> None:
    """Refuse `m` unless it is a module that takes hooks (not TorchScript); `what` names it, `fix` says what to do."""
    if not isinstance(m, nn.Module):
        raise TypeError(f'{who}: hooks go on modules; got {m!r} ({type(m).__name__}): pass the module itself, '
                        "e.g. model.fc or model.get_submodule('fc').")
    if isinstance(m, torch.jit.ScriptModule):
        what = what or f'the module {getattr(m, "original_name", type(m).__name__)}'
        raise TypeError(f'{who}: {what} is a TorchScript module (torch.jit.script or trace), which takes no hooks; '
                        f'{fix}.')


class Hook:
    """Registers `f(hook, module, inp, outp)` as a forward hook on `m`; `remove()` (or `with`) takes it off."""
    def __init__(self, m: nn.Module, f: Callable):
        _check_module(m, 'Hook')
        self.hook = m.register_forward_hook(partial(f, self))
    def remove(self) -> None: self.hook.remove()
    def __enter__(self) -> Hook: return self
    def __exit__(self, *args) -> None: self.remove()
    def __del__(self) -> None:
        if hasattr(self, 'hook'): self.remove()  # not if __init__ refused its module


def _unhooking(name: str) -> Callable:
    """`list.<name>`, which takes items out of the list, then taking off their modules the hooks it took out."""
    op = getattr(list, name)

    def method(self: Hooks, *args):
        before = list(self)
        res = op(self, *args)
        kept = {id(h) for h in self}
        for h in before:
            if id(h) not in kept: h.remove()
        return res
    return method


_remove_one = _unhooking('remove')


class Hooks(list):
    """A `Hook` on each of `ms`, removed together. A hook taken out of the list (`del`, `pop`, `clear`,
    `remove(hook)`, assignment over it) is taken off its module too."""
    def __init__(self, ms: Iterable[nn.Module], f: Callable):
        ms = list(ms)
        for m in ms: _check_module(m, 'Hooks')  # all first, so that a refusal leaves no hook behind
        super().__init__()
        try:
            for m in ms: self.append(Hook(m, f))
        except BaseException:  # a module that refused its hook anyway: take off those already on
            self.remove()
            raise
    def __enter__(self) -> Hooks: return self
    def __exit__(self, *args) -> None: self.remove()
    def __del__(self) -> None: self.remove()

    __delitem__, __setitem__, __imul__ = _unhooking('__delitem__'), _unhooking('__setitem__'), _unhooking('__imul__')
    pop, clear = _unhooking('pop'), _unhooking('clear')

    def remove(self, hook: Hook | None = None) -> None:
        """Without `hook`, takes every hook off its module (the list keeps them, and their stats); with one, takes
        it out of the list (as `list.remove`) and off its module."""
        if hook is None:
            for h in self: h.remove()
        else:
            _remove_one(self, hook)


def append_stats(hook: Hook, mod: nn.Module, inp: tuple, outp: torch.Tensor | tuple) -> None:
    """Hook function: keep in `hook.stats` the mean, the std, a 40-bin histogram of |activation| over [0, 10]
    (larger ones fall outside it) and the number of activations of each call (`HooksCallback` chooses training
    and/or validation batches); a module called twice in a forward (shared weights) records two entries a batch.
    Of an output that is a tuple (e.g. `nn.GRU`'s output and hidden state), the first item is taken."""
    if not hasattr(hook, 'stats'): hook.stats = ([], [], [], [])
    while isinstance(outp, (tuple, list)): outp = outp[0]
    acts = outp.detach().float()
    hook.stats[0].append(acts.mean())
    hook.stats[1].append(acts.std())
    hook.stats[2].append(acts.abs().histc(40, 0, 10))
    hook.stats[3].append(acts.numel())


def get_hist(h: Hook) -> torch.Tensor:
    """The histograms of a hook as an image: bins × batches, log scaled."""
    return torch.stack(h.stats[2]).t().float().log1p().cpu()


def get_min(h: Hook) -> torch.Tensor:
    """Per batch, the share of the activations that are 'dead': those in the histogram's lowest bin, |a| < 0.25,
    out of all the activations recorded (also those above the histogram's range)."""
    dead = torch.stack(h.stats[2])[:, 0].float().cpu()
    return dead / torch.tensor(h.stats[3], dtype=torch.float32)


class HooksCallback(Callback):
    """Hooks `hookfunc` onto the modules chosen by `mod_filter` for the fit (and always removes them after); a
    filter that picks no module, or a TorchScript module (which takes no hooks), is refused when the fit starts. A
    fit it records nothing in (validation only, with `on_train` alone) keeps the last fit's hooks and records."""
    def __init__(self, hookfunc: Callable, mod_filter: Callable[[nn.Module], bool] = lambda m: True,
                 on_train: bool = True, on_valid: bool = False, mods: Iterable[nn.Module] | None = None):
        self.hookfunc, self.mod_filter, self.on_train, self.on_valid = hookfunc, mod_filter, on_train, on_valid
        self.mods = None if mods is None else list(mods)  # a list: a generator would be empty from the 2nd fit
        if self.mods == []:
            raise ValueError('HooksCallback: mods is empty; give the modules to hook, or leave it out to hook '
                             'those mod_filter picks.')
        self.hooks = Hooks([], hookfunc)

    def before_fit(self, learn: Learner) -> None:
        if not (self.on_train and 'train' in learn.phases or self.on_valid and 'valid' in learn.phases):
            return  # nothing to record (e.g. validation only): the last fit's hooks and records are kept
        who = type(self).__name__
        mods = self.mods if self.mods is not None else [m for m in learn.model.modules() if self.mod_filter(m)]
        if not mods:
            raise ValueError(f'{who}: mod_filter picks none of the model\'s modules, so nothing would be hooked; '
                             'check the filter (e.g. the layer type it looks for) against the model.')
        names = {id(m): f'module {n!r} of the model' if n else 'the model' for n, m in learn.model.named_modules()}
        leave_out = ('leave it out of mods' if self.mods is not None else 'leave it out with mod_filter, e.g. '
                     'mod_filter=lambda m: not isinstance(m, torch.jit.ScriptModule)')
        for m in mods: _check_module(m, who, names.get(id(m)), f'{leave_out}, or use the plain (unscripted) module')
        self.hooks = Hooks(mods, self._hookfunc)
        for h, m in zip(self.hooks, mods): h.name = names.get(id(m), type(m).__name__)

    def _hookfunc(self, *args, **kwargs) -> None:
        training = args[1].training
        if (self.on_train and training) or (self.on_valid and not training): self.hookfunc(*args, **kwargs)

    def cleanup_fit(self, learn: Learner) -> None: self.hooks.remove()
    def __iter__(self): return iter(self.hooks)
    def __len__(self) -> int: return len(self.hooks)


class ActivationStats(HooksCallback):
    """Records activation statistics of the chosen modules (e.g. `fc.risinstance(GeneralRelu)`) in training batches
    and plots them; a validation-only fit records nothing and keeps the last training fit's. Each call of a module
    is an entry: one called twice in a forward (shared weights) has two entries a batch, interleaved."""
    def __init__(self, mod_filter: Callable[[nn.Module], bool] = lambda m: True):
        super().__init__(append_stats, mod_filter)

    def _recorded(self) -> list[tuple[int, Hook]]:
        """The hooks that recorded, with their positions; warns naming those that did not (raises if none did)."""
        done = [(i, h) for i, h in enumerate(self) if hasattr(h, 'stats')]
        if not done:
            raise ValueError('ActivationStats: no hooked module has recorded a batch, so there is nothing to plot; '
                             'fit with training batches first (a validation-only fit records none).')
        if skipped := [h.name for h in self if not hasattr(h, 'stats')]:
            warnings.warn(f'ActivationStats: not plotted, having recorded no batch (not called in training?): '
                          f'{", ".join(skipped)}; leave them out with mod_filter.', stacklevel=3)
        return done

    def color_dim(self, figsize: tuple[float, float] = (11, 5)) -> None:
        """Histogram of activations over time, one panel per hooked module (`plt.savefig` saves it)."""
        from .plot import get_grid, show_image
        done = self._recorded()
        _, axes = get_grid(len(done), figsize=figsize)
        for ax, (_, h) in zip(axes.flat, done):
            show_image(get_hist(h), ax, origin='lower')

    def dead_chart(self, figsize: tuple[float, float] = (11, 5)) -> None:
        """Share of 'dead' activations (|a| < 0.25: see `get_min`) over time, per hooked module (`plt.savefig`
        saves it)."""
        from .plot import get_grid
        done = self._recorded()
        _, axes = get_grid(len(done), figsize=figsize)
        for ax, (_, h) in zip(axes.flat, done):
            ax.plot(get_min(h))
            ax.set_ylim(0, 1)

    def plot_stats(self, figsize: tuple[float, float] = (10, 4)) -> None:
        """Mean and std of each hooked module's activations per batch, labelled by the module's position among the
        hooked ones (`plt.savefig` saves it)."""
        from .plot import subplots
        done = self._recorded()
        _, axs = subplots(1, 2, figsize=figsize)
        for _, h in done:
            for i in (0, 1): axs[i].plot(torch.stack(h.stats[i]).cpu())
        axs[0].set_title('Means')
        axs[1].set_title('Stdevs')
        axs[0].legend([i for i, _ in done])
