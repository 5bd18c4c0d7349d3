"""Datasets as whole tensors: loaded once, moved to the job's device, sliced into batches.

Images are float32 in [0, 1] with shape (n, channels, height, width); labels are int64.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch


class DataError(RuntimeError):
    """A data set could not be found or read; the message says where it looked and what to do."""


@dataclass(frozen=True)
class Dataset:
    """A train and an evaluation split held as whole tensors."""

    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32
    y_train: torch.Tensor  # (N,) int64
    x_eval: torch.Tensor  # (M, C, H, W) float32
    y_eval: torch.Tensor  # (M,) int64

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_eval.max())) + 1

    def to(self, device: torch.device | str) -> Dataset:
        move = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_eval", "y_eval")}
        return replace(self, **move)


def _from_uint8(name: str, xtr, ytr, xte, yte) -> Dataset:
    def images(a: np.ndarray) -> torch.Tensor:  # (n, H, W) uint8 -> (n, 1, H, W) in [0, 1]
        return torch.from_numpy(a).unsqueeze(1).float().div_(255.0)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Dataset(name, images(xtr), labels(ytr), images(xte), labels(yte))


# ---------------------------------------------------------------------------------------------
# digits: scikit-learn's bundled 8x8 digits, works offline


def load_digits(test_size: float = 0.2, split_seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, pixels scaled to [0, 1], a fixed stratified split."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise ValueError(f"data.test_size must be in (0, 1), got {test_size}")
    bunch = sk_load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=split_seed
    )
    t = torch.from_numpy
    return Dataset("digits", t(xtr), t(ytr), t(xte), t(yte))


# ---------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_eval": "t10k-images-idx3-ubyte",
    "y_eval": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzipped) as used by MNIST into a NumPy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise DataError(f"{path}: header says shape {shape} but holds {len(raw) - offset} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape).copy()


def find_idx(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (plain or .gz), or None if any is missing."""
    found = {}
    for key, stem in IDX_FILES.items():
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                found[key] = folder / name
                break
        else:
            return None
    return found


# In-process cache of decoded IDX data sets: Hydra's basic launcher runs a sweep's jobs one after
# another in ONE process, and every job instantiates its data set; decoding Fashion-MNIST again
# costs about 0.5 s a job. Keyed by each file's path, size and mtime, so a rewritten file is
# read again. Holds at most _IDX_CACHE_SIZE data sets (Fashion-MNIST: 220 MB of float32 each).
_IDX_CACHE: dict[tuple, Dataset] = {}
_IDX_CACHE_SIZE = 2


def load_idx_folder(name: str, files: dict[str, Path]) -> Dataset:
    """The data set in the four IDX ``files``, decoded once per process (see ``_IDX_CACHE``).

    Jobs of one process share the returned tensors: callers must not modify them in place
    (``Dataset.to`` and batch indexing copy; clone before editing, as the tests do).
    """
    key = (name, *((k, str(p), p.stat().st_size, p.stat().st_mtime_ns) for k, p in files.items()))
    if key not in _IDX_CACHE:
        arrays = {k: read_idx(p) for k, p in files.items()}
        while len(_IDX_CACHE) >= _IDX_CACHE_SIZE:
            _IDX_CACHE.pop(next(iter(_IDX_CACHE)))  # oldest first
        _IDX_CACHE[key] = _from_uint8(name, *(arrays[k] for k in IDX_FILES))
    return _IDX_CACHE[key]


def _load_torchvision(
    name: str, tv_class: str, root: str, download: bool, extra_folders: tuple[str, ...]
) -> Dataset:
    root_path = Path(os.path.expanduser(str(root)))
    candidates = [root_path, root_path / tv_class / "raw", *map(Path, extra_folders)]
    for folder in candidates:
        files = find_idx(folder)
        if files is not None:
            return load_idx_folder(name, files)
    looked = ", ".join(str(c) for c in candidates)
    stems = ", ".join(f"{s}[.gz]" for s in IDX_FILES.values())
    if not download:
        raise DataError(
            f"data.root: no {name} IDX files in {looked} and data.download=false. "
            f"Put {stems} in data.root, or set data.download=true."
        )
    try:
        import torchvision.datasets as tvd

        getattr(tvd, tv_class)(str(root_path), train=True, download=True)
        getattr(tvd, tv_class)(str(root_path), train=False, download=True)
    except Exception as err:  # any download failure gets the same advice
        raise DataError(
            f"data.root: no {name} IDX files in {looked}, and the download failed "
            f"({type(err).__name__}: {err}). Put {stems} in one of those folders and set "
            f"data.root to it (e.g. `apt-get install dataset-fashion-mnist` installs "
            f"Fashion-MNIST under /usr/share/datasets/fashion-mnist), or run once with network."
        ) from err
    files = find_idx(root_path / tv_class / "raw")
    if files is None:
        raise DataError(f"data.root: download to {root_path / tv_class / 'raw'} left no IDX files")
    return load_idx_folder(name, files)


def load_mnist(root: str = "~/.cache/infoflow/data", download: bool = True) -> Dataset:
    """MNIST from IDX files in ``root`` (flat, or torchvision's ``MNIST/raw``), else downloaded
    with torchvision into ``root``."""
    return _load_torchvision("mnist", "MNIST", root, download, ())


DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def load_fashion_mnist(root: str = "~/.cache/infoflow/data", download: bool = True) -> Dataset:
    """Fashion-MNIST from IDX files in ``root`` (flat, or torchvision's ``FashionMNIST/raw``),
    then Debian's ``dataset-fashion-mnist`` folder, else downloaded with torchvision."""
    return _load_torchvision(
        "fashion_mnist", "FashionMNIST", root, download, (DEBIAN_FASHION_MNIST,)
    )


def batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """Yield index tensors of one shuffled epoch over ``n`` samples (last batch may be short)."""
    order = torch.randperm(n, generator=generator, device=generator.device).to(device)  # (n,)
    yield from order.split(batch_size)
