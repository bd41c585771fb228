"""Fashion-MNIST from its four original IDX files: a validating reader, the hub-compatible `DatasetDict`, the
course's `DataLoaders`, and `DeviceLoader`, a fast loader that keeps a whole split on the GPU (or CPU).

`datasets` and `torchvision` are imported inside the functions that need them, keeping `import miniai` light.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, default_collate

from .device import def_device
from .guards import is_whole

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

__all__ = ['DataError', 'MissingDataError', 'FMNIST_URL', 'FMNIST_CLASSES', 'FMNIST_MEAN', 'FMNIST_STD',
           'read_idx', 'fashion_mnist_dir', 'fashion_mnist_arrays', 'download_fashion_mnist', 'load_fashion_mnist',
           'collate_dict',
           'DataLoaders', 'DeviceLoader', 'get_dls']

FMNIST_URL = 'https://github.com/zalandoresearch/fashion-mnist#get-the-data'
# The hub's `fashion_mnist` class names, spelling included.
FMNIST_CLASSES = ['T - shirt / top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
                  'Bag', 'Ankle boot']
# Mean and (population) std of all 47M training pixels scaled to [0, 1].
FMNIST_MEAN, FMNIST_STD = 0.28604060, 0.35302424
# split -> (images file, labels file); each may be gzipped (`.gz`, as distributed) or plain.
_FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
          'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
_STEMS = [s for pair in _FILES.values() for s in pair]
_IDX_DTYPES = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}


class DataError(ValueError):
    """A data file is missing or corrupt; the message names the file and says how to get it."""


class MissingDataError(DataError, FileNotFoundError):
    """A data folder or file does not exist."""


def _how_to_get(folder: Path) -> str:
    names = ', '.join(f'{s}.gz' for s in _STEMS)
    return (f'Download the four Fashion-MNIST files ({names}) from {FMNIST_URL} into {folder}, '
            f'or set MINIAI_DATA (or pass `path`) to the folder that holds them.')


def _bad(path: Path, problem: str) -> DataError:
    return DataError(f'{path}: {problem}. {_how_to_get(path.parent)}')


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file, gzipped or plain (told apart by gzip's magic bytes, not by the name), into a
    native-endian array, checking its magic number, dtype code, dims and that the payload is exactly the size
    the header declares."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        raise MissingDataError(f'{path}: file not found. {_how_to_get(path.parent)}') from None
    except OSError as e:
        raise _bad(path, f'cannot be read ({e.strerror})') from e
    if not buf:
        raise _bad(path, 'empty file (0 bytes)')
    gzipped = buf[:2] == b'\x1f\x8b'
    if gzipped:  # gzip's magic, whatever the name says
        try:
            buf = gzip.decompress(buf)
        except (OSError, EOFError, zlib.error) as e:
            raise _bad(path, f'not a valid gzip stream ({e}); the download is corrupt or incomplete') from e
    if len(buf) < 4 or buf[:2] != b'\0\0' or buf[2] not in _IDX_DTYPES or buf[3] == 0:
        if path.suffix == '.gz' and not gzipped:  # e.g. an HTML error page saved under the file's name
            raise _bad(path, f'named .gz but not gzip-compressed, nor an IDX file (bad magic number 0x{buf[:4].hex()}; '
                       f'it starts with {buf[:16]!r}): likely a failed or partial download; download it again')
        raise _bad(path, f'not an IDX file (bad magic number 0x{buf[:4].hex()})')
    dtype, ndim = np.dtype(_IDX_DTYPES[buf[2]]), buf[3]
    start = 4 + 4 * ndim
    if len(buf) < start:
        raise _bad(path, f'truncated IDX header ({len(buf)} bytes)')
    dims = struct.unpack(f'>{ndim}I', buf[4:start])
    size = start + math.prod(dims) * dtype.itemsize
    if len(buf) != size:
        what = 'truncated' if len(buf) < size else 'has trailing data'
        raise _bad(path, f'{what}: {len(buf):,} bytes where its header (dims {dims}) says {size:,}')
    return np.frombuffer(buf, dtype, offset=start).reshape(dims).astype(dtype.newbyteorder('='))


def _find(folder: Path, stem: str) -> Path | None:
    return next((p for p in (folder / f'{stem}.gz', folder / stem) if p.is_file()), None)


def _cache_dir() -> Path:
    return Path.home() / '.cache' / 'miniai' / 'fashion-mnist'


def fashion_mnist_dir(path: str | os.PathLike | None = None) -> Path | None:
    """The folder with the four Fashion-MNIST IDX files: `path`, else $MINIAI_DATA, else
    ~/.cache/miniai/fashion-mnist. None when neither `path` nor $MINIAI_DATA is given and the cache folder
    lacks them (the caller then goes to the hub); a folder named by either that lacks a file raises."""
    src = '`path`, or --data'
    if path is None and os.environ.get('MINIAI_DATA'):
        path, src = os.environ['MINIAI_DATA'], '$MINIAI_DATA'
    if path is None:
        folder = _cache_dir()
        return folder if all(_find(folder, s) for s in _STEMS) else None
    folder = Path(path).expanduser()
    if folder.is_file():
        raise MissingDataError(f'{folder} (from {src}) is a file; give the folder that holds the four files. '
                               f'{_how_to_get(folder.parent)}')
    if not folder.is_dir():
        raise MissingDataError(f'{folder} (from {src}): no such folder. {_how_to_get(folder)}')
    missing = [f'{s}.gz' for s in _STEMS if _find(folder, s) is None]
    if missing:
        raise MissingDataError(f'{folder} (from {src}) lacks {", ".join(missing)}. {_how_to_get(folder)}')
    return folder


def _read_fmnist(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read and check all four files before returning anything: split -> (images [N,H,W], labels), uint8."""
    res = {}
    for split, pair in _FILES.items():
        xf, yf = (_find(folder, s) or folder / f'{s}.gz' for s in pair)
        x, y = read_idx(xf), read_idx(yf)
        if x.dtype != np.uint8 or x.ndim != 3:
            raise _bad(xf, f'expected uint8 images [N,H,W], got {x.dtype} {x.shape}')
        if y.dtype != np.uint8 or y.shape != x.shape[:1]:
            raise _bad(yf, f'expected {len(x)} uint8 labels to match {xf.name}, got {y.dtype} {y.shape}')
        if len(y) and y.max() >= len(FMNIST_CLASSES):
            raise _bad(yf, f'label {y.max()} out of range 0..9')
        res[split] = x, y
    if (len(res['train'][0]), len(res['test'][0])) == (10_000, 60_000):
        raise DataError(f"{folder}: the train-* files hold 10,000 images and the t10k-* files 60,000: they are "
                        "swapped. Swap them back: Fashion-MNIST's 60,000 training images go in the train-* files.")
    return res


def _write_idx(path: Path, a: np.ndarray) -> None:
    """Write uint8 array `a` as a gzipped IDX file, atomically (a temporary file renamed over `path`)."""
    header = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f'>{a.ndim}I', *a.shape)
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_bytes(gzip.compress(header + np.ascontiguousarray(a, np.uint8).tobytes()))
    os.replace(tmp, path)


def download_fashion_mnist() -> Path:
    """Fetch Fashion-MNIST from the Hugging Face hub (`fashion_mnist`) and write it to the cache folder,
    ~/.cache/miniai/fashion-mnist, as the four original IDX files, which later calls then read offline."""
    import datasets
    cache = _cache_dir()
    try:
        dd = datasets.load_dataset('fashion_mnist')
    except Exception as e:
        raise MissingDataError(f'Fashion-MNIST IDX files not found in {cache} and the hub failed '
                               f'({type(e).__name__}: {e}). {_how_to_get(cache)}') from e
    cache.mkdir(parents=True, exist_ok=True)
    for split, (xf, yf) in _FILES.items():
        ds = dd[split]
        _write_idx(cache / f'{xf}.gz', np.stack([np.asarray(im, np.uint8) for im in ds['image']]))
        _write_idx(cache / f'{yf}.gz', np.asarray(ds['label'], np.uint8))
    return cache


def fashion_mnist_arrays(path: str | os.PathLike | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """`{'train': (images, labels), 'test': ...}` straight from the IDX files in `fashion_mnist_dir(path)`
    (downloaded into the cache folder first when neither `path`, $MINIAI_DATA nor the cache has them):
    uint8 images [N,28,28] and int64 labels [N]."""
    arrays = _read_fmnist(fashion_mnist_dir(path) or download_fashion_mnist())
    return {split: (torch.from_numpy(x), torch.from_numpy(y).long()) for split, (x, y) in arrays.items()}


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))


def _png_bytes(x: np.ndarray) -> list[bytes]:
    """Encode uint8 images [N,H,W] as 8-bit grayscale PNGs. The deflate stream is *stored* (zlib level 0):
    valid, lossless PNG decoding to the same pixels as the hub's, and ~7x faster to build than compressed."""
    n, h, w = x.shape
    rows = np.zeros((n, h, w + 1), np.uint8)  # each scanline starts with its filter type, 0 (None)
    rows[:, :, 1:] = x
    head = b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))
    end = _chunk(b'IEND', b'')
    return [head + _chunk(b'IDAT', zlib.compress(r.tobytes(), 0)) + end for r in rows]


def _hf_split(x: np.ndarray, y: np.ndarray, split: str) -> Dataset:
    """An in-memory `Dataset` (no disk cache) with the hub's features, built as an Arrow table directly."""
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    feats = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=FMNIST_CLASSES)})
    image = pa.StructArray.from_arrays([pa.array(_png_bytes(x), pa.binary()), pa.nulls(len(x), pa.string())],
                                       names=['bytes', 'path'])
    table = pa.table({'image': image, 'label': pa.array(y.astype(np.int64))})
    return datasets.Dataset(InMemoryTable(table), info=datasets.DatasetInfo(features=feats), split=split)


def load_fashion_mnist(path: str | os.PathLike | None = None) -> DatasetDict:
    """Fashion-MNIST as a `DatasetDict` (`train` 60,000, `test` 10,000) with the hub's exact features,
    built in memory from the IDX files in `fashion_mnist_dir(path)` (downloaded into the cache folder first
    when neither `path`, $MINIAI_DATA nor the cache has them)."""
    import datasets

    arrays = _read_fmnist(fashion_mnist_dir(path) or download_fashion_mnist())
    return datasets.DatasetDict({split: _hf_split(x, y, split) for split, (x, y) in arrays.items()})


def _collate_get(keys: tuple[str, ...], b: list) -> tuple:
    d = default_collate(b)
    return tuple(d[k] for k in keys)


def collate_dict(ds: Dataset) -> Callable[[list], tuple]:
    """A collate function turning a list of dict items into a tuple of batched columns, in `ds.features`
    order, `(x,)` for one column (picklable, so it works with worker processes)."""
    return partial(_collate_get, tuple(ds.features))


class DataLoaders:
    """A training and a validation loader."""

    def __init__(self, train: Any, valid: Any):
        self.train, self.valid = train, valid

    @classmethod
    def from_dd(cls, dd: DatasetDict, batch_size: int, as_tuple: bool = True, drop_last: bool = False,
                **kwargs) -> DataLoaders:
        """Torch DataLoaders over `dd`'s `train` split (shuffled; `drop_last` applies to it only) and its
        `validation`/`valid`/`test` split; batches are `(x, y)` tuples if `as_tuple`, else dicts.
        `kwargs` (`num_workers`, `generator`, ...) go to both DataLoaders; the validation loader gets a generator
        of its own (seeded as `generator` was; without one, by a seed drawn from torch's RNG when built), so
        validation runs do not shift the training shuffles."""
        valid = next((k for k in ('validation', 'valid', 'test') if k in dd), None)
        if 'train' not in dd or valid is None:
            raise ValueError(f"DataLoaders.from_dd: needs a 'train' split and a 'validation', 'valid' or 'test' "
                             f"split; this DatasetDict has {list(dd)}. Rename its splits, or split one off with "
                             "dd = dd['train'].train_test_split(test_size=0.1) (its 'test' split serves).")
        collate = collate_dict(dd['train']) if as_tuple else default_collate
        return cls(DataLoader(dd['train'], batch_size, shuffle=True, drop_last=drop_last, collate_fn=collate,
                              **kwargs),
                   DataLoader(dd[valid], batch_size, collate_fn=collate,
                              **{**kwargs, 'generator': _reseeded(kwargs.get('generator'))}))


def _reseeded(g: torch.Generator | None) -> torch.Generator:
    """A new generator seeded as `g` was, or (for None) by a seed drawn from torch's RNG."""
    return torch.Generator().manual_seed(_drawn_seed() if g is None else g.initial_seed())


def _drawn_seed() -> int:
    """A seed drawn from torch's global RNG (as a DataLoader draws its base seed)."""
    return torch.empty((), dtype=torch.int64).random_().item()


def _check_seed(seed: Any) -> int:
    if not is_whole(seed):
        raise ValueError(f'seed must be a whole number >= 0 (got {seed!r}); None draws one from torch\'s RNG.')
    return int(seed)


_ORDER = 'SeedSequence((seed, epoch))'  # how `DeviceLoader` seeds each epoch's shuffle, in its state


def _epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s shuffle in a run seeded `seed`: both mixed by NumPy's `SeedSequence`, so
    runs seeded 0, 1, 2, ... get unrelated shuffles (with `seed + epoch`, seed 1 would replay seed 0's
    shuffles one epoch later)."""
    return int(np.random.SeedSequence((seed, epoch)).generate_state(1, np.uint64)[0])


class DeviceLoader:
    """Batches `(x [bs,1,H,W] float32, y int64)` from a whole split kept on `device` (`x`: images [N,H,W] of
    integer pixel values 0..255, e.g. uint8;
    `y`: integer labels, kept as int64): each batch is one gather by index plus `(x/255 - mean)/std` on the
    device; no per-item Python, no workers.

    With `shuffle`, epoch `e` (counted by `.epoch`, which each `iter` advances) uses the permutation drawn
    by a CPU `torch.Generator` seeded from `(seed, e)` by NumPy's `SeedSequence`; `seed=None` draws the seed
    from torch's global RNG when the loader is built, so `set_seed` beforehand makes runs reproducible. In a
    distributed run every process builds its loader with the same seed: rank `r` of `world_size` takes items
    `r, r+world_size, ...` of the epoch's order, so the ranks' shares are disjoint. A shuffled (training) order
    is first cut to a multiple of `world_size`, so all ranks run the same number of steps; an unshuffled
    (validation) one is not, so every item is seen once.
    A shuffled order's last batch of a single image (without `drop_last`) is joined to the batch before it:
    BatchNorm cannot train on one image. `tfm`, if given, maps each normalised `x` batch on the device (e.g.
    augmentation). `.n` is the number of items in the split (all ranks together)."""

    def __init__(self, x: Tensor, y: Tensor, bs: int = 1024, shuffle: bool = False, drop_last: bool = False,
                 mean: float = FMNIST_MEAN, std: float = FMNIST_STD,
                 tfm: Callable[[Tensor], Tensor] | None = None, device: str | torch.device | None = None,
                 seed: int | None = None, rank: int = 0, world_size: int = 1):
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise TypeError(f'DeviceLoader: x and y must be torch tensors, got {type(x).__name__} and '
                            f'{type(y).__name__}; for NumPy arrays pass torch.from_numpy(x), torch.from_numpy(y).')
        if x.dtype == torch.bool or x.dtype.is_floating_point or x.dtype.is_complex:
            raise ValueError(f'DeviceLoader: x must be integer pixel values 0..255 (batches are x/255, normalised), '
                             f'e.g. uint8; got {x.dtype}. For floats in 0..255 pass x.round().to(torch.uint8); for '
                             'floats in [0, 1], (x * 255).round().to(torch.uint8).')
        if x.dtype != torch.uint8 and x.numel() and not (0 <= (r := x.aminmax()).min and r.max <= 255):
            raise ValueError(f'DeviceLoader: x must be pixel values 0..255, but its values run from {r.min} to {r.max} '
                             f'({x.dtype}); scale them to 0..255 first (for int8 data read from bytes: '
                             'x.view(torch.uint8)).')
        if x.ndim != 3:
            raise ValueError(f'DeviceLoader: x must be one-channel images [N,H,W] (batches get the channel dim), got '
                             f'shape {tuple(x.shape)}; for [N,1,H,W] pass x.squeeze(1).')
        if y.dtype == torch.bool or y.dtype.is_floating_point or y.dtype.is_complex:
            raise ValueError(f'DeviceLoader: y must hold integer class labels, got {y.dtype}; pass y.long().')
        if len(x) != len(y):
            raise ValueError(f'{len(x)} images but {len(y)} labels')
        if not is_whole(bs, 1):
            raise ValueError(f'DeviceLoader: bs must be a whole number >= 1, got {bs!r}.')
        if not 0 <= rank < world_size:
            raise ValueError(f'need 0 <= rank < world_size, got rank={rank}, world_size={world_size}')
        self.device = torch.device(device or def_device)
        self.x, self.y = x.to(self.device), y.to(self.device, torch.int64)
        self.bs, self.shuffle, self.drop_last, self.tfm = bs, shuffle, drop_last, tfm
        self.mean, self.std, self.rank, self.world_size = mean, std, rank, world_size
        self.seed = int(torch.randint(2**62, ()).item()) if seed is None else _check_seed(seed)
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        return self.bs

    @property
    def n(self) -> int:
        return len(self.x)

    def _stop(self) -> int:
        return self.n - self.n % self.world_size if self.shuffle else self.n

    def __len__(self) -> int:
        n = len(range(self.rank, self._stop(), self.world_size))  # this rank's items
        if self.drop_last:
            return n // self.bs
        return math.ceil(n / self.bs) - (self.shuffle and n > self.bs and n % self.bs == 1)  # (a lone last image)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume the same shuffles: the seed, the epoch counter and how the shuffles
        are drawn (`order`: a resume by a loader that draws them otherwise is refused)."""
        return {'seed': self.seed, 'epoch': self.epoch, 'order': _ORDER}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if sd.get('order') != _ORDER:
            raise ValueError(f"DeviceLoader: this state was saved by an older miniai, whose shuffles were seeded with "
                             f"seed + epoch (now {_ORDER}), so the saved run's data order cannot be replayed. Load the "
                             "checkpoint with learn.load(path) and fit on, or resume with that miniai.")
        self.seed, self.epoch = _check_seed(sd['seed']), int(sd['epoch'])

    def indices(self, epoch: int) -> Tensor:
        """This rank's item order for `epoch`, on the CPU."""
        if self.shuffle:
            idx = torch.randperm(self.n, generator=torch.Generator().manual_seed(_epoch_seed(self.seed, epoch)))
        else:
            idx = torch.arange(self.n)
        return idx[:self._stop()][self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        idx = self.indices(self.epoch).to(self.device)
        self.epoch += 1
        # 0-dim tensors on the device, not Python numbers: CUDA turns division by a CPU scalar into a multiply
        # by its reciprocal, which can differ in the last bit from the CPU's (and the course path's) division.
        k255, mean, std = torch.tensor([255.0, self.mean, self.std], device=self.device)
        n_batches = len(self)
        end = n_batches * self.bs if self.drop_last else len(idx)  # the last batch's end: see `__len__`
        for i in range(0, n_batches * self.bs, self.bs):
            b = idx[i:end if i + self.bs >= n_batches * self.bs else i + self.bs]
            x = self.x[b].unsqueeze(1).float().div_(k255).sub_(mean).div_(std)
            yield (x if self.tfm is None else self.tfm(x)), self.y[b]


def _to_tensor_normed(mean: float, std: float, b: dict) -> dict:
    import torchvision.transforms.functional as TF

    b['image'] = [TF.to_tensor(o).sub_(mean).div_(std) for o in b['image']]
    return b


def get_dls(bs: int = 1024, path: str | os.PathLike | None = None, fast: bool = True,
            device: str | torch.device | None = None, num_workers: int = 0, mean: float = FMNIST_MEAN,
            std: float = FMNIST_STD, n_train: int | None = None, n_valid: int | None = None,
            seed: int | None = None, drop_last: bool = False, tfm: Callable[[Tensor], Tensor] | None = None,
            rank: int = 0, world_size: int = 1) -> DataLoaders:
    """Fashion-MNIST `DataLoaders` (train shuffled, valid = the test split) of normalised
    `(x [bs,1,28,28] float32, y int64)` batches, over the first `n_train`/`n_valid` items when given (the whole
    split if it holds fewer, as `miniai fit --limit-batches` relies on).

    `fast=True`: `DeviceLoader`s over the IDX arrays, kept on `device` (default `def_device`); `seed`, `tfm`
    (train only), `rank` and `world_size` are its options. `fast=False`: the course path
    (`load_fashion_mnist`, a per-item `TF.to_tensor` + normalise transform, `DataLoaders.from_dd` with
    `num_workers`), yielding CPU batches equal to the fast path's for the same items (but for a lone last
    training image, which only the fast path joins to the batch before); `seed` seeds its shuffle. An option of
    the other path is refused."""
    if hasattr(bs, '__getitem__') and hasattr(bs, '__len__') and not hasattr(bs, 'ndim'):  # get_dls(ds, ds, bs)
        raise TypeError('get_dls(bs, path, ...) makes Fashion-MNIST loaders; its first argument is the batch size, '
                        'not a dataset. For your own datasets: DataLoaders(DataLoader(train_ds, bs, shuffle=True), '
                        'DataLoader(valid_ds, bs * 2)), or DataLoaders.from_dd for a Hugging Face DatasetDict.')
    for name, v in (('bs', bs), ('n_train', n_train), ('n_valid', n_valid)):
        if v is not None and not is_whole(v, 1):
            raise ValueError(f'get_dls: {name} must be a positive whole number (got {v!r}).')
    if fast and num_workers:
        raise ValueError(f'get_dls: num_workers={num_workers} needs fast=False; the fast loaders gather batches on '
                         'the device, with no worker processes.')
    if not fast and device is not None and torch.device(device).type != 'cpu':
        raise ValueError(f"get_dls: device={str(device)!r} needs fast=True; the course path (fast=False) yields CPU "
                         "batches (DeviceCB moves them to the model's device).")
    if fast:
        (xt, yt), (xv, yv) = fashion_mnist_arrays(path).values()
        kw = dict(bs=bs, mean=mean, std=std, device=device, rank=rank, world_size=world_size)
        return DataLoaders(DeviceLoader(xt[:n_train], yt[:n_train], shuffle=True, drop_last=drop_last,
                                        tfm=tfm, seed=seed, **kw),
                           DeviceLoader(xv[:n_valid], yv[:n_valid], **kw))
    if tfm is not None or rank != 0 or world_size != 1:
        raise ValueError('`tfm`, `rank` and `world_size` need fast=True')
    dd = load_fashion_mnist(path)
    for split, n in (('train', n_train), ('test', n_valid)):
        if n is not None:
            dd[split] = dd[split].select(range(min(n, len(dd[split]))))
    g = None if seed is None else torch.Generator().manual_seed(_check_seed(seed))
    tdd = dd.with_transform(partial(_to_tensor_normed, mean, std))
    return DataLoaders.from_dd(tdd, bs, drop_last=drop_last, num_workers=num_workers, generator=g)
