"""Forward hooks on modules, and `ActivationStats`: the means, stds and histograms of layer activations."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import torch
from torch import nn

from .learner import Callback, Learner

__all__ = ['Hook', 'Hooks', 'HooksCallback', 'ActivationStats', 'append_stats', 'get_hist', 'get_min']


def _check_module(m: object, who: str) -> None:
    if not isinstance(m, nn.Module):
        raise TypeError(f'{who}: hooks go on modules; got {m!r} ({type(m).__name__}): pass the module itself, '
                        "e.g. model.fc or model.get_submodule('fc').")


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
        super().__init__([Hook(m, f) for m in ms])
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
    """Hook function: keep the mean, std and a 40-bin histogram of |activation| of each batch (`HooksCallback`
    chooses training and/or validation batches). Of an output that is a tuple (e.g. `nn.GRU`'s output and hidden
    state), the first item is taken."""
    if not hasattr(hook, 'stats'): hook.stats = ([], [], [])
    while isinstance(outp, (tuple, list)): outp = outp[0]
    acts = outp.detach().float()
    hook.stats[0].append(acts.mean())
    hook.stats[1].append(acts.std())
    hook.stats[2].append(acts.abs().histc(40, 0, 10))


def get_hist(h: Hook) -> torch.Tensor:
    """The histograms of a hook as an image: bins × batches, log scaled."""
    return torch.stack(h.stats[2]).t().float().log1p().cpu()


def get_min(h: Hook) -> torch.Tensor:
    """Per batch, the share of activations in the lowest histogram bin (near zero: 'dead')."""
    h1 = torch.stack(h.stats[2]).t().float()
    return (h1[0] / h1.sum(0)).cpu()


class HooksCallback(Callback):
    """Hooks `hookfunc` onto the modules chosen by `mod_filter` for the fit (and always removes them after); a
    filter that picks no module is refused when the fit starts."""
    def __init__(self, hookfunc: Callable, mod_filter: Callable[[nn.Module], bool] = lambda m: True,
                 on_train: bool = True, on_valid: bool = False, mods: Iterable[nn.Module] | None = None):
        self.hookfunc, self.mod_filter, self.on_train, self.on_valid = hookfunc, mod_filter, on_train, on_valid
        self.mods = None if mods is None else list(mods)  # a list: a generator would be empty from the 2nd fit
        if self.mods == []:
            raise ValueError('HooksCallback: mods is empty; give the modules to hook, or leave it out to hook '
                             'those mod_filter picks.')
        self.hooks = Hooks([], hookfunc)

    def before_fit(self, learn: Learner) -> None:
        mods = self.mods if self.mods is not None else [m for m in learn.model.modules() if self.mod_filter(m)]
        if not mods:
            raise ValueError(f'{type(self).__name__}: mod_filter picks none of the model\'s modules, so nothing would '
                             'be hooked; check the filter (e.g. the layer type it looks for) against the model.')
        self.hooks = Hooks(mods, self._hookfunc)

    def _hookfunc(self, *args, **kwargs) -> None:
        training = args[1].training
        if (self.on_train and training) or (self.on_valid and not training): self.hookfunc(*args, **kwargs)

    def cleanup_fit(self, learn: Learner) -> None: self.hooks.remove()
    def __iter__(self): return iter(self.hooks)
    def __len__(self) -> int: return len(self.hooks)


class ActivationStats(HooksCallback):
    """Records activation statistics of the chosen modules (e.g. `fc.risinstance(GeneralRelu)`) and plots them."""
    def __init__(self, mod_filter: Callable[[nn.Module], bool] = lambda m: True):
        super().__init__(append_stats, mod_filter)

    def color_dim(self, figsize: tuple[float, float] = (11, 5)) -> None:
        """Histogram of activations over time, one panel per hooked module (`plt.savefig` saves it)."""
        from .plot import get_grid, show_image
        _, axes = get_grid(len(self), figsize=figsize)
        for ax, h in zip(axes.flat, self):
            show_image(get_hist(h), ax, origin='lower')

    def dead_chart(self, figsize: tuple[float, float] = (11, 5)) -> None:
        """Share of near-zero activations over time, per hooked module (`plt.savefig` saves it)."""
        from .plot import get_grid
        _, axes = get_grid(len(self), figsize=figsize)
        for ax, h in zip(axes.flatten(), self):
            ax.plot(get_min(h))
            ax.set_ylim(0, 1)

    def plot_stats(self, figsize: tuple[float, float] = (10, 4)) -> None:
        """Mean and std of each hooked module's activations per batch (`plt.savefig` saves it)."""
        from .plot import subplots
        _, axs = subplots(1, 2, figsize=figsize)
        for h in self:
            for i in (0, 1): axs[i].plot(torch.stack(h.stats[i]).cpu())
        axs[0].set_title('Means')
        axs[1].set_title('Stdevs')
        axs[0].legend(range(len(self)))
