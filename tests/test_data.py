import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from infoflow.data import (
    DEBIAN_FASHION_MNIST,
    DataError,
    batches,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    read_idx,
)


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """Write ``array`` (uint8) as an IDX file, the format of MNIST."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def write_tiny_mnist(folder: Path, gz: bool, n_train: int = 20, n_eval: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_eval, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_eval),
    }
    for name, a in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), a, gz=gz)
    return arrays


def test_digits_split_is_fixed_stratified_and_scaled():
    a, b = load_digits(), load_digits()
    assert len(a.y_train) == 1437 and len(a.y_eval) == 360
    assert a.in_shape == (1, 8, 8) and a.n_classes == 10
    assert torch.equal(a.x_eval, b.x_eval)
    assert 0.0 <= float(a.x_train.min()) and float(a.x_train.max()) == 1.0
    counts = torch.bincount(a.y_eval, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class


def test_digits_bad_test_size():
    with pytest.raises(ValueError, match=r"data.test_size must be in \(0, 1\), got 1.5"):
        load_digits(test_size=1.5)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loader_reads_tiny_idx_files(tmp_path, gz):
    arrays = write_tiny_mnist(tmp_path, gz=gz)
    data = load_mnist(root=str(tmp_path), download=False)
    assert data.x_train.shape == (20, 1, 28, 28) and data.x_eval.shape == (10, 1, 28, 28)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.float32) / 255)
    assert torch.equal(data.x_train[:, 0], expected)
    assert data.y_eval.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_mnist_loader_finds_torchvision_layout(tmp_path):
    write_tiny_mnist(tmp_path / "MNIST" / "raw", gz=False)
    assert len(load_mnist(root=str(tmp_path), download=False).y_train) == 20


def test_missing_files_without_download_say_where_and_what(tmp_path):
    with pytest.raises(DataError) as err:
        load_mnist(root=str(tmp_path), download=False)
    msg = str(err.value)
    assert "data.root" in msg and str(tmp_path) in msg and "train-images-idx3-ubyte" in msg


def test_failed_download_says_where_it_looked(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(DataError, match="download failed") as err:
        load_mnist(root=str(tmp_path), download=True)
    assert str(tmp_path) in str(err.value) and "Error downloading" in str(err.value)


def test_read_idx_rejects_foreign_file(tmp_path):
    bad = tmp_path / "x"
    bad.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)


def test_read_idx_rejects_truncated_file(tmp_path):
    p = tmp_path / "t"
    write_idx(p, np.zeros((4, 3, 3), np.uint8))
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(DataError, match="header says shape"):
        read_idx(p)


def test_batches_cover_every_sample_once_and_follow_the_seed():
    g = torch.Generator().manual_seed(0)
    parts = list(batches(10, 4, g, torch.device("cpu")))
    assert [len(p) for p in parts] == [4, 4, 2]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    again = list(batches(10, 4, torch.Generator().manual_seed(0), torch.device("cpu")))
    assert all(torch.equal(a, b) for a, b in zip(parts, again))


@pytest.mark.skipif(
    not os.path.isdir(DEBIAN_FASHION_MNIST), reason="apt-get install dataset-fashion-mnist"
)
def test_fashion_mnist_from_debian_package(tmp_path):
    data = load_fashion_mnist(root=str(tmp_path), download=False)  # empty root: falls back
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_eval.shape == (10000, 1, 28, 28)
    assert data.n_classes == 10
    assert torch.bincount(data.y_eval).tolist() == [1000] * 10
    assert 0.0 == float(data.x_train.min()) and float(data.x_train.max()) == 1.0
