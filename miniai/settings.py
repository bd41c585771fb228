"""The project's nbdev-style `settings.ini`, read through fastcore's `Config`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastcore.xtras import Config

__all__ = ['project_settings', 'repo_root']


def repo_root() -> Path:
    """The source checkout holding `settings.ini` (the folder above the package)."""
    return Path(__file__).resolve().parent.parent


def project_settings() -> Config:
    """The `[DEFAULT]` section of `settings.ini` as a fastcore `Config` (e.g. `['version']`, `.nbs_path`)."""
    from fastcore.xtras import Config
    return Config(repo_root(), 'settings.ini')
