"""Shared test fixtures."""

import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

FMNIST_FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz',
                't10k-labels-idx1-ubyte.gz')


@pytest.fixture(autouse=True)
def close_figures():
    """Closes the figures a test drew (`lr_find` plots, as fastai's does), so that they do not pile up."""
    yield
    if 'matplotlib.pyplot' in sys.modules:
        sys.modules['matplotlib.pyplot'].close('all')


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


@pytest.fixture
def tiny_fmnist(tmp_path) -> Path:
    """A folder of tiny random Fashion-MNIST-shaped IDX files (64 training, 32 test images) in `tmp_path`."""
    rng = np.random.default_rng(0)
    for stem, n in (('train', 64), ('t10k', 32)):
        x, y = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
        header = struct.pack('>4I', 0x803, n, 28, 28)
        (tmp_path / f'{stem}-images-idx3-ubyte').write_bytes(header + x.tobytes())
        (tmp_path / f'{stem}-labels-idx1-ubyte').write_bytes(struct.pack('>2I', 0x801, n) + y.tobytes())
    return tmp_path
