"""Tests for miniai.data (Fashion-MNIST from IDX files, loaders) and miniai.plot."""

import gzip
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from miniai.data import (
    FMNIST_URL,
    DataError,
    DataLoaders,
    DeviceLoader,
    MissingDataError,
    fashion_mnist_arrays,
    fashion_mnist_dir,
    get_dls,
    load_fashion_mnist,
    read_idx,
)
from miniai.plot import get_grid, show_image, show_images

HUB_NAMES = ['T - shirt / top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
             'Ankle boot']
FILES = {'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
         'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')}
IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def write_idx(path: Path, arr: np.ndarray) -> Path:
    """Write `arr` as an IDX file, gzipped when `path` ends in .gz."""
    arr = np.asarray(arr)
    data = (bytes([0, 0, IDX_CODES[arr.dtype], arr.ndim]) + struct.pack(f'>{arr.ndim}I', *arr.shape)
            + arr.astype(arr.dtype.newbyteorder('>')).tobytes())
    path.write_bytes(gzip.compress(data) if path.suffix == '.gz' else data)
    return path


def write_fmnist(folder: Path, n_train: int = 6, n_test: int = 4, seed: int = 0) -> Path:
    """A tiny but valid Fashion-MNIST folder: random 28x28 images, labels 0..9."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for (xf, yf), n in zip(FILES.values(), (n_train, n_test), strict=True):
        write_idx(folder / xf, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / yf, np.arange(n, dtype=np.uint8) % 10)
    return folder


@pytest.fixture(scope='module')
def arrays(fmnist_dir):
    return fashion_mnist_arrays(fmnist_dir)


@pytest.fixture(scope='module')
def dd(fmnist_dir):
    return load_fashion_mnist(fmnist_dir)


@pytest.fixture
def no_local_data(tmp_path, monkeypatch):
    """No $MINIAI_DATA and an empty home, so no local folder holds the files."""
    monkeypatch.delenv('MINIAI_DATA', raising=False)
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))


# --- the real files ---

def test_arrays_from_shared_folder(arrays):
    (xt, yt), (xv, yv) = arrays['train'], arrays['test']
    assert xt.shape == (60000, 28, 28) and xv.shape == (10000, 28, 28)
    assert xt.dtype == xv.dtype == torch.uint8 and yt.dtype == yv.dtype == torch.int64
    assert torch.bincount(yt).tolist() == [6000] * 10
    assert torch.bincount(yv).tolist() == [1000] * 10
    assert yt[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert yv[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


def test_read_idx_header(fmnist_dir):
    y = read_idx(fmnist_dir / 't10k-labels-idx1-ubyte.gz')
    assert y.shape == (10000,) and y.dtype == np.uint8


def test_load_fashion_mnist_matches_hub_features_and_idx(dd, arrays):
    from datasets import ClassLabel, Features, Image

    assert dd['train'].features == dd['test'].features == Features(
        {'image': Image(), 'label': ClassLabel(names=HUB_NAMES)})
    assert (len(dd['train']), len(dd['test'])) == (60000, 10000)
    assert dd['train'].cache_files == []  # built in memory, nothing written to disk
    for split, i in (('train', 0), ('train', 59999), ('test', 0), ('test', 9999)):
        item = dd[split][i]
        assert item['image'].mode == 'L' and item['image'].format == 'PNG'
        np.testing.assert_array_equal(np.array(item['image']), arrays[split][0][i].numpy())
        assert item['label'] == arrays[split][1][i].item()
    np.testing.assert_array_equal(np.asarray(dd['train']['label'][:]), arrays['train'][1].numpy())
    assert dd['train'].features['label'].int2str(9) == 'Ankle boot'


# --- errors on missing or corrupt files ---

def _truncate_payload(p: Path):
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-1]))


def _trailing_data(p: Path):
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()) + b'\0'))


def _bad_magic(p: Path):
    p.write_bytes(gzip.compress(b'\x00\x01\x08\x01' + gzip.decompress(p.read_bytes())[4:]))


def _bad_dtype(p: Path):
    p.write_bytes(gzip.compress(b'\x00\x00\x07\x01' + gzip.decompress(p.read_bytes())[4:]))


CORRUPTIONS = {
    'missing file': Path.unlink,
    'truncated payload': _truncate_payload,
    'trailing data': _trailing_data,
    'gzip cut short': lambda p: p.write_bytes(p.read_bytes()[:-12]),
    'not gzip': lambda p: p.write_bytes(b'\x1f\x8b<html>404 Not Found</html>'),
    'bad magic': _bad_magic,
    'bad dtype code': _bad_dtype,
}


@pytest.mark.parametrize('case', CORRUPTIONS)
@pytest.mark.parametrize('name', ['t10k-labels-idx1-ubyte.gz', 'train-images-idx3-ubyte.gz'])
def test_bad_file_raises_naming_it(tmp_path, case, name):
    folder = write_fmnist(tmp_path / 'fm')
    CORRUPTIONS[case](folder / name)
    for load in (fashion_mnist_arrays, load_fashion_mnist):
        with pytest.raises(DataError) as e:
            load(folder)
        msg = str(e.value)
        assert name in msg and FMNIST_URL in msg and 'MINIAI_DATA' in msg
    if case == 'missing file':
        assert isinstance(e.value, FileNotFoundError)


def test_missing_folder_raises(tmp_path):
    with pytest.raises(MissingDataError, match='nowhere.*no such folder'):
        fashion_mnist_arrays(tmp_path / 'nowhere')


def test_read_idx_round_trips_dtypes_and_plain_files(tmp_path):
    for dt in IDX_CODES:
        a = (np.arange(24) - 5).astype(dt).reshape(2, 3, 4)
        for name in ('a.gz', 'a'):
            b = read_idx(write_idx(tmp_path / name, a))
            assert b.dtype == dt and b.dtype.isnative
            np.testing.assert_array_equal(a, b)
    with pytest.raises(MissingDataError, match='nope.gz'):
        read_idx(tmp_path / 'nope.gz')


def test_read_idx_goes_by_the_bytes_not_the_name(tmp_path):
    a = np.arange(6, dtype=np.uint8)
    write_idx(tmp_path / 'a', a).rename(tmp_path / 'plain.gz')  # decompressed, but named .gz
    np.testing.assert_array_equal(read_idx(tmp_path / 'plain.gz'), a)
    (tmp_path / 'empty.gz').write_bytes(b'')
    with pytest.raises(DataError, match=r'empty.gz: empty file \(0 bytes\)'):
        read_idx(tmp_path / 'empty.gz')


def test_a_gz_file_that_is_neither_gzip_nor_idx_is_called_a_failed_download(tmp_path):
    p = tmp_path / 'train-images-idx3-ubyte.gz'
    p.write_bytes(b'<html><body>502 Bad Gateway</body></html>')
    with pytest.raises(DataError, match=r'train-images-idx3-ubyte.gz: named .gz but not gzip-compressed, nor an IDX '
                                        r'file \(bad magic number 0x3c68746d.*failed or partial download; download '
                                        r'it again'):
        read_idx(p)
    (tmp_path / 'plain').write_bytes(p.read_bytes())  # not named .gz: just the bad magic
    with pytest.raises(DataError, match=r'plain: not an IDX file') as e:
        read_idx(tmp_path / 'plain')
    assert 'gzip' not in str(e.value)


def test_train_and_test_files_swapped_are_refused(tmp_path):
    for (xf, yf), n in zip(FILES.values(), (10_000, 60_000), strict=True):  # Fashion-MNIST's sizes, swapped
        write_idx(tmp_path / xf, np.zeros((n, 28, 28), np.uint8))
        write_idx(tmp_path / yf, np.zeros(n, np.uint8))
    with pytest.raises(DataError, match='the train-. files hold 10,000 images and the t10k-. files 60,000: they are '
                                        'swapped'):
        fashion_mnist_arrays(tmp_path)


def test_inconsistent_files_raise(tmp_path):
    folder = write_fmnist(tmp_path / 'fm', n_train=6)
    write_idx(folder / 'train-labels-idx1-ubyte.gz', np.zeros(5, np.uint8))
    with pytest.raises(DataError, match='train-labels-idx1-ubyte.gz.*6 uint8 labels'):
        fashion_mnist_arrays(folder)
    write_idx(folder / 'train-labels-idx1-ubyte.gz', np.full(6, 10, np.uint8))
    with pytest.raises(DataError, match='train-labels-idx1-ubyte.gz.*out of range'):
        fashion_mnist_arrays(folder)


def test_dir_resolution_order(tmp_path, monkeypatch):
    arg, env = write_fmnist(tmp_path / 'arg', n_train=1), write_fmnist(tmp_path / 'env', n_train=2)
    cache = write_fmnist(tmp_path / 'home/.cache/miniai/fashion-mnist', n_train=3)
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    monkeypatch.delenv('MINIAI_DATA', raising=False)
    n_train = lambda path=None: len(fashion_mnist_arrays(path)['train'][1])
    assert fashion_mnist_dir() == cache and n_train() == 3
    monkeypatch.setenv('MINIAI_DATA', str(env))
    assert fashion_mnist_dir() == env and n_train() == 2
    assert fashion_mnist_dir(arg) == arg and n_train(arg) == 1
    # a folder asked for but lacking the files raises, rather than falling back
    with pytest.raises(MissingDataError, match=r'\$MINIAI_DATA'):
        monkeypatch.setenv('MINIAI_DATA', str(tmp_path / 'empty'))
        fashion_mnist_dir()
    (env / 't10k-images-idx3-ubyte.gz').unlink()
    with pytest.raises(MissingDataError, match='lacks t10k-images-idx3-ubyte.gz'):
        fashion_mnist_dir(env)
    monkeypatch.delenv('MINIAI_DATA')
    shutil.rmtree(cache)
    assert fashion_mnist_dir() is None


def test_hub_is_the_fallback_and_its_failure_is_clear(no_local_data, monkeypatch):
    import datasets

    def offline(name):
        raise ConnectionError("Couldn't reach 'fashion_mnist' on the Hub")
    monkeypatch.setattr(datasets, 'load_dataset', offline)
    for load in (load_fashion_mnist, fashion_mnist_arrays, lambda: get_dls(bs=4, device='cpu')):
        with pytest.raises(MissingDataError, match='MINIAI_DATA') as e:
            load()
        assert isinstance(e.value.__cause__, ConnectionError) and "Couldn't reach" in str(e.value)


def test_the_hub_download_is_cached_as_idx_files(no_local_data, tmp_path, monkeypatch):
    """Online, every loader gets the data from the hub once, kept in the cache folder as the four IDX files."""
    import datasets
    hub = load_fashion_mnist(write_fmnist(tmp_path / 'hub', n_train=6, n_test=4))  # the hub's features
    calls = []
    monkeypatch.setattr(datasets, 'load_dataset', lambda name: calls.append(name) or hub)
    dls = get_dls(bs=4, device='cpu')
    assert calls == ['fashion_mnist'] and (dls.train.n, dls.valid.n) == (6, 4)
    cache = tmp_path / 'home/.cache/miniai/fashion-mnist'
    assert fashion_mnist_dir() == cache and sorted(p.name for p in cache.iterdir()) == sorted(sum(FILES.values(), ()))
    expected = fashion_mnist_arrays(tmp_path / 'hub')
    for split, (x, y) in fashion_mnist_arrays().items():  # read from the cache: no second download
        assert torch.equal(x, expected[split][0]) and torch.equal(y, expected[split][1])
    assert load_fashion_mnist()['train'].features == hub['train'].features and calls == ['fashion_mnist']


# --- loaders ---

def test_get_dls_shapes_dtypes_normalisation(fmnist_dir):
    dls = get_dls(bs=1024, path=fmnist_dir, device='cpu')
    assert (len(dls.train), len(dls.valid)) == (59, 10)
    assert (dls.train.n, dls.train.bs, dls.train.batch_size) == (60000, 1024, 1024)
    n, s, ss = 0, 0.0, 0.0
    for x, y in dls.train:
        assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        n, s, ss = n + x.numel(), s + x.sum().item(), ss + x.square().sum().item()
    assert n == 60000 * 784
    mean = s / n
    assert abs(mean) < 1e-4 and abs((ss / n - mean**2) ** 0.5 - 1) < 1e-4
    x, y = next(iter(dls.valid))
    assert x.shape == (1024, 1, 28, 28) and y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


def test_fast_path_equals_course_path(fmnist_dir):
    kw = dict(bs=100, path=fmnist_dir, n_train=300, n_valid=200)
    course, fast = get_dls(fast=False, **kw), get_dls(device='cpu', **kw)
    assert len(course.valid) == len(fast.valid) == 2 and len(course.train) == len(fast.train) == 3
    for (xc, yc), (xf, yf) in zip(course.valid, fast.valid, strict=True):
        assert torch.equal(xc, xf) and torch.equal(yc, yf)
    # train batches are shuffled differently; compare the epochs as sets of items, sorted by a projection
    epoch = lambda dl: [torch.cat(t) for t in zip(*dl, strict=True)]
    (xc, yc), (xf, yf) = epoch(course.train), epoch(fast.train)
    proj = torch.randn(784, dtype=torch.float64)
    ic, jf = (xc.flatten(1).double() @ proj).argsort(), (xf.flatten(1).double() @ proj).argsort()
    assert torch.equal(xc[ic], xf[jf]) and torch.equal(yc[ic], yf[jf])


def test_course_path_rejects_fast_only_options():
    with pytest.raises(ValueError, match='fast=True'):
        get_dls(fast=False, tfm=lambda x: x)
    with pytest.raises(ValueError, match='fast=True'):
        get_dls(fast=False, rank=1, world_size=2)


def test_from_dd_tuples_dicts_drop_last_and_seed(tmp_path):
    dd = load_fashion_mnist(write_fmnist(tmp_path / 'fm', n_train=10, n_test=5))
    tdd = dd.with_transform(lambda b: {'image': [torch.tensor(np.array(o)) for o in b['image']],
                                       'label': b['label']})
    dls = DataLoaders.from_dd(tdd, 4, drop_last=True)
    assert (len(dls.train), len(dls.valid)) == (2, 2)  # drop_last is for the training set only
    x, y = next(iter(dls.valid))
    assert x.shape == (4, 28, 28) and y.tolist() == [0, 1, 2, 3]
    b = next(iter(DataLoaders.from_dd(tdd, 4, as_tuple=False).valid))
    assert set(b) == {'image', 'label'}
    seeded = lambda: DataLoaders.from_dd(tdd, 4, generator=torch.Generator().manual_seed(1)).train
    labels = lambda: [y.tolist() for _, y in seeded()]
    assert labels() == labels() and sorted(sum(labels(), [])) == list(range(10))


def _ids(dl) -> list[int]:
    return torch.cat([y for _, y in dl]).tolist()


def _synthetic(n: int, **kwargs) -> DeviceLoader:
    x = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)
    return DeviceLoader(x, torch.arange(n), device='cpu', **kwargs)  # y = the item's index


def test_shuffle_is_seeded_and_changes_each_epoch():
    dl = _synthetic(1000, bs=64, shuffle=True, seed=0)
    e0, e1 = _ids(dl), _ids(dl)
    assert sorted(e0) == sorted(e1) == list(range(1000)) and e0 != e1 and dl.epoch == 2
    assert _ids(_synthetic(1000, bs=64, shuffle=True, seed=0)) == e0
    assert _ids(_synthetic(1000, bs=64, shuffle=True, seed=1)) != e0
    torch.manual_seed(42)  # what set_seed does: seed=None draws the loader's seed from torch's global RNG
    a = _synthetic(1000, bs=64, shuffle=True)
    torch.manual_seed(42)
    assert _ids(_synthetic(1000, bs=64, shuffle=True)) == _ids(a)
    assert _ids(_synthetic(100, bs=64)) == list(range(100))  # no shuffle: in order


def test_neighbouring_seeds_do_not_share_shuffles():
    """Seeds 0, 1, 2 (a seed sweep) get unrelated orders: seed 1 must not replay seed 0's epochs later."""
    loaders = [_synthetic(200, bs=50, shuffle=True, seed=s) for s in range(3)]
    orders = [tuple(_ids(dl)) for dl in loaders for _ in range(3)]
    assert len(set(orders)) == len(orders)


@pytest.mark.parametrize('seed', [-1, 1.5, True, '3'])
def test_bad_seed_is_refused(seed):
    with pytest.raises(ValueError, match='seed must be a whole number >= 0'):
        _synthetic(10, shuffle=True, seed=seed)


def test_get_dls_seed_reproducible(fmnist_dir):
    first = lambda: next(iter(get_dls(bs=64, path=fmnist_dir, device='cpu', seed=3, n_train=500).train))
    (x1, y1), (x2, y2) = first(), first()
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.mark.parametrize('drop_last', [False, True])
def test_len_matches_batches(drop_last):
    dl = _synthetic(1000, bs=64, shuffle=True, seed=0, drop_last=drop_last)
    sizes = [len(y) for _, y in dl]
    assert len(dl) == len(sizes) == (15 if drop_last else 16)
    assert sizes == [64] * 15 + ([] if drop_last else [40])


def test_a_lone_last_training_image_joins_the_batch_before():
    """BatchNorm cannot train on a batch of one image: a shuffled order's last such batch joins the one before."""
    dl = _synthetic(129, bs=64, shuffle=True, seed=0)
    assert len(dl) == 2 and [len(y) for _, y in dl] == [64, 65] and sorted(_ids(dl)) == list(range(129))
    assert [len(y) for _, y in _synthetic(129, bs=64)] == [64, 64, 1]  # validation: kept as it is
    assert [len(y) for _, y in _synthetic(130, bs=64, shuffle=True, seed=0)] == [64, 64, 2]
    assert [len(y) for _, y in _synthetic(1, bs=64, shuffle=True, seed=0)] == [1]
    shards = [_synthetic(259, bs=64, shuffle=True, seed=0, rank=r, world_size=2) for r in range(2)]  # 129 each
    assert [[len(y) for _, y in s] for s in shards] == [[64, 65]] * 2
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(784), torch.nn.Linear(784, 129))
    from miniai import DataLoaders, TrainLearner
    learn = TrainLearner(model, DataLoaders(dl, _synthetic(8, bs=64)), torch.nn.functional.cross_entropy)
    learn.fit(1)  # BatchNorm trains on every batch
    assert learn.train_iter == 2


@pytest.mark.parametrize('n', [1000, 1001])
def test_shards_are_disjoint_and_cover_the_epoch(n):
    shards = [_synthetic(n, bs=64, shuffle=True, seed=7, rank=r, world_size=2) for r in range(2)]
    for _ in range(2):  # two epochs: a new permutation, still split disjointly
        a, b = (_ids(s) for s in shards)
        assert len(a) == len(b) == n // 2 and not set(a) & set(b)
        assert len(set(a) | set(b)) == n - n % 2
    assert [len(s) for s in shards] == [8, 8]
    whole = _synthetic(n, bs=64, shuffle=True, seed=7)
    order = whole.indices(0)[:n - n % 2].tolist()
    assert shards[0].indices(0).tolist() == order[0::2] and shards[1].indices(0).tolist() == order[1::2]
    # unshuffled (validation): every item once, shares may differ by one
    a, b = (_ids(_synthetic(n, bs=64, rank=r, world_size=2)) for r in range(2))
    assert a == list(range(0, n, 2)) and b == list(range(1, n, 2))
    for r in range(2):
        dl = _synthetic(n, bs=100, rank=r, world_size=2)
        assert len(dl) == len(list(dl)) == math.ceil(len(range(r, n, 2)) / 100)
    with pytest.raises(ValueError, match='rank'):
        _synthetic(10, rank=2, world_size=2)


def test_tfm_applies_to_train_batches_only(fmnist_dir):
    kw = dict(bs=64, path=fmnist_dir, device='cpu', seed=0, n_train=128, n_valid=64)
    plain, flipped = get_dls(**kw), get_dls(tfm=lambda x: x.flip(-1), **kw)
    assert torch.equal(next(iter(flipped.train))[0], next(iter(plain.train))[0].flip(-1))
    assert torch.equal(next(iter(flipped.valid))[0], next(iter(plain.valid))[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_device_loader_on_cuda_matches_cpu():
    x, y = torch.randint(0, 256, (500, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (500,))
    gpu, cpu = (DeviceLoader(x, y, bs=128, shuffle=True, seed=0, device=d) for d in ('cuda', 'cpu'))
    assert gpu.x.is_cuda
    for (xg, yg), (xc, yc) in zip(gpu, cpu, strict=True):
        assert xg.is_cuda and yg.is_cuda
        assert torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)  # bitwise, like the course path


# --- plotting and imports ---

def test_show_images():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    ims = [torch.randn(1, 28, 28), torch.randint(0, 256, (28, 28), dtype=torch.uint8), torch.rand(3, 8, 8),
           torch.rand(8, 8, dtype=torch.bfloat16), np.zeros((5, 5))] * 2
    assert show_images(ims, titles=[str(i) for i in range(9)]) is None  # a notebook shows the figure once
    fig = plt.gcf()
    assert len(fig.axes) == 12  # a 3x4 grid holds 10
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 10 and shown[0].get_title() == '0' and shown[9].get_title() == ''
    show_images(ims, nrows=2)
    assert len(plt.gcf().axes) == 10
    show_images(torch.rand(6, 1, 4, 4), ncols=4)
    assert len(plt.gcf().axes) == 8
    fig, axs = get_grid(4)
    assert axs.shape == (2, 2) and show_image(ims[0], ax=axs[0, 0], title='t') is axs[0, 0]
    plt.close('all')


def test_from_dd_batches_are_tuples_with_one_column_too(tmp_path):
    dd = load_fashion_mnist(write_fmnist(tmp_path / 'fm', n_train=4, n_test=2)).remove_columns('label')
    dls = DataLoaders.from_dd(dd.with_format('torch'), 2)
    x, = next(iter(dls.valid))  # (x,), not a bare tensor
    assert isinstance(x, torch.Tensor) and len(x) == 2


def test_from_dd_names_the_missing_split(tmp_path):
    dd = load_fashion_mnist(write_fmnist(tmp_path / 'fm', n_train=10, n_test=5))
    dd['eval'] = dd.pop('test')
    with pytest.raises(ValueError, match=r"'validation', 'valid' or 'test' split; this DatasetDict has "
                                         r"\['train', 'eval'\].*train_test_split"):
        DataLoaders.from_dd(dd, 4)


@pytest.mark.parametrize('kw', [dict(bs=0), dict(bs=-1), dict(bs=2.5), dict(n_train=-5), dict(n_valid=0)])
def test_get_dls_refuses_sizes_that_are_not_positive_whole_numbers(kw):
    name, v = next(iter(kw.items()))
    with pytest.raises(ValueError, match=rf'get_dls: {name} must be a positive whole number \(got {v}\)'):
        get_dls(**kw)


def test_get_dls_called_the_courses_way_with_datasets_says_what_it_is():
    ds = TensorDataset(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match=r'its first argument is the batch size, not a dataset.*DataLoaders\('):
        get_dls(ds, ds, 64)
    with pytest.raises(ValueError, match='bs must be a positive whole number'):  # a tensor is no dataset
        get_dls(torch.tensor(0))


def test_get_dls_takes_numpy_integers(tmp_path):
    dls = get_dls(bs=np.int64(4), n_train=np.int32(6), path=write_fmnist(tmp_path / 'fm'), device='cpu')
    assert (len(dls.train), dls.train.n) == (2, 6)


def test_a_file_given_as_the_data_folder(tmp_path):
    (tmp_path / 'MD5SUMS').write_text('')
    with pytest.raises(MissingDataError, match='MD5SUMS .* is a file; give the folder that holds the four files'):
        fashion_mnist_dir(tmp_path / 'MD5SUMS')


def test_device_loader_refuses_inputs_it_would_batch_wrongly():
    x, y = torch.randint(0, 256, (8, 4, 4), dtype=torch.uint8), torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError, match=r'x must be integer pixel values 0..255 .*got torch.float32.*'
                                         r'x\.round\(\)\.to\(torch\.uint8\).*\(x \* 255\)\.round\(\)'):
        DeviceLoader(x.float() / 255, y, device='cpu')  # already in [0,1]: would be divided by 255 again
    with pytest.raises(TypeError, match=r'torch tensors, got ndarray and Tensor; .*torch\.from_numpy\(x\)'):
        DeviceLoader(x.numpy(), y, device='cpu')
    for bad, seen in ((x.int() * 257, r'\d+ to \d+ \(torch.int32\)'),
                      (x.to(torch.int8), r'-\d+ to \d+ \(torch.int8\).*view')):
        with pytest.raises(ValueError, match=f'x must be pixel values 0..255, but its values run from {seen}'):
            DeviceLoader(bad, y, device='cpu')  # 16-bit images; bytes read as int8
    xb, _ = next(iter(DeviceLoader(x.long(), y, bs=8, device='cpu')))  # any integer dtype: the same batches
    assert torch.equal(xb, next(iter(DeviceLoader(x, y, bs=8, device='cpu')))[0])
    with pytest.raises(ValueError, match=r'one-channel images \[N,H,W\].*\(8, 1, 4, 4\).*x\.squeeze\(1\)'):
        DeviceLoader(x[:, None], y, device='cpu')  # would give 5-d batches
    for bs in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match=rf'bs must be a whole number >= 1, got {bs}'):
            DeviceLoader(x, y, bs=bs, device='cpu')
    with pytest.raises(ValueError, match=r'y must hold integer class labels, got torch.float32; pass y.long\(\)'):
        DeviceLoader(x, y.float(), device='cpu')
    _, yb = next(iter(DeviceLoader(x, y.to(torch.uint8), bs=8, device='cpu')))  # as read_idx gives them
    assert yb.dtype == torch.int64


def test_a_loader_state_from_before_the_seedsequence_shuffles_is_refused(tmp_path):
    """Checkpoints of older miniai hold {'seed', 'epoch'} with shuffles seeded seed + epoch: replaying them
    with today's shuffles would train other items, so resume refuses (naming the keys) and the loader says why."""
    import torch.nn.functional as F
    from torch import nn

    from miniai import CheckpointError, DataLoaders, TrainLearner
    x, y = torch.randint(0, 256, (32, 4, 4), dtype=torch.uint8), torch.randint(0, 2, (32,))
    dl = lambda: DeviceLoader(x, y, bs=8, shuffle=True, seed=3, device='cpu')
    with pytest.raises(ValueError, match=r'saved by an older miniai, whose shuffles were seeded with seed \+ '
                                         r'epoch .*learn\.load\(path\) and fit on'):
        dl().load_state_dict({'seed': 3, 'epoch': 1})
    learn = lambda: TrainLearner(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), DataLoaders(dl(), dl()),
                                 F.cross_entropy, lr=0.1)
    first = learn()
    first.fit(1)
    ck = torch.load(first.save(tmp_path / 'ck.pt'), weights_only=False)
    for sd in ck['start']['dls'].values():  # (an end-of-fit checkpoint: no `rng_now`)
        del sd['order']  # as an older miniai saved it
    torch.save(ck, tmp_path / 'old.pt')
    with pytest.raises(CheckpointError, match=r"state_dict with \['epoch', 'order', 'seed'\].*kept a "
                                              r"state_dict with \['epoch', 'seed'\]"):
        learn().fit(2, resume=tmp_path / 'old.pt')


def test_from_dd_validation_does_not_shift_training_shuffles(tmp_path):
    path = write_fmnist(tmp_path / 'fm', n_train=20, n_test=10)
    a, b = (get_dls(bs=5, path=path, fast=False, seed=0) for _ in range(2))
    assert a.valid.generator is not a.train.generator
    assert a.valid.generator.initial_seed() == a.train.generator.initial_seed() == 0
    labels = lambda dl: [y.tolist() for _, y in dl]
    ea = [labels(a.train), labels(a.train)]
    eb = [labels(b.train), labels(b.valid), labels(b.train)]  # a validation pass between the epochs
    assert ea == [eb[0], eb[2]]
    state = torch.get_rng_state()
    labels(b.valid)
    assert torch.equal(torch.get_rng_state(), state)  # nor do they draw from torch's global RNG


def test_from_dd_without_a_seed_gives_validation_a_generator_drawn_once_from_torchs_rng(tmp_path):
    path = write_fmnist(tmp_path / 'fm', n_train=10, n_test=10)
    labels = lambda dl: [y.tolist() for _, y in dl]

    def epochs(validate: bool) -> list:
        torch.manual_seed(0)
        dls = get_dls(bs=5, path=path, fast=False)
        assert dls.train.generator is None and dls.valid.generator is not None
        e1 = labels(dls.train)
        state = torch.get_rng_state()
        if validate: labels(dls.valid)
        assert torch.equal(torch.get_rng_state(), state)  # a validation pass draws nothing from torch's RNG
        return [e1, labels(dls.train)]
    assert epochs(False) == epochs(True)


def test_get_dls_refuses_options_it_would_ignore(tmp_path):
    path = write_fmnist(tmp_path / 'fm', n_train=20, n_test=10)
    with pytest.raises(ValueError, match='num_workers=4 needs fast=False'):
        get_dls(path=path, num_workers=4, device='cpu')
    with pytest.raises(ValueError, match=r"device='cuda' needs fast=True; the course path .* CPU batches"):
        get_dls(path=path, fast=False, device='cuda')
    for fast in (True, False):  # more items than a split holds: all of them (`miniai fit --limit-batches`)
        dls = get_dls(path=path, fast=fast, n_train=21, n_valid=11, device='cpu')
        assert [len(dl.dataset) if not fast else dl.n for dl in (dls.train, dls.valid)] == [20, 10]
