"""Shared test fixtures."""

import os
from pathlib import Path

import pytest

FMNIST_FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz',
                't10k-labels-idx1-ubyte.gz')


@pytest.fixture(scope='session')
def fmnist_dir() -> Path:
    """The folder with the real Fashion-MNIST IDX files: $MINIAI_DATA if set, else <repo>/../shared/data/
    fashion-mnist; skips the test when the four files are not there."""
    default = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'fashion-mnist'
    folder = Path(os.environ.get('MINIAI_DATA') or default)
    missing = [f for f in FMNIST_FILES if not (folder / f).is_file()]
    if missing:
        pytest.skip(f'Fashion-MNIST IDX files not found in {folder} (missing {", ".join(missing)}); '
                    f'set MINIAI_DATA to the folder that holds them')
    return folder


@pytest.fixture
def one_thread():
    """Run the test on one torch thread: tiny models train fastest so, and do not fight other processes for
    the cores (on a busy machine two threads made BatchNorm ~100x slower)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
