"""Datasets as whole tensors: loaded once, moved to the job's device, sliced into batches.

Images are float32 in [0, 1] with shape (n, channels, height, width); feature data sets
(``tishby``: 12 bits per pattern) have shape (n, features); labels are int64.

The loaders: ``digits``, ``tishby`` (made in code), MNIST and Fashion-MNIST (IDX files),
CIFAR-10/100 (torchvision's pickled batches, read here), ``image_folder`` (torchvision's
ImageFolder layout), ``arrays`` (one .npz); a user's ``_target_`` returns a :class:`Dataset`
that :func:`check_dataset` checks. :func:`check_fits` refuses a data set too large for where
it will live (docs/data.md).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import logging
import math
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from infoflow.errors import UserError

log = logging.getLogger(__name__)


class DataError(UserError, RuntimeError):
    """A data set could not be found or read; the message says where it looked and what to do."""


SPLITS = ("x_train", "y_train", "x_eval", "y_eval")
PROBE_SAMPLES = ("eval", "train", "all")  # probe.samples: what the estimator is fed


@dataclass(frozen=True)
class Dataset:
    """A train and an evaluation split held as whole tensors.

    ``source`` says where the data were actually read from (a folder, a function), for the
    record; it is not part of the content and not of ``fingerprint``.
    """

    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32
    y_train: torch.Tensor  # (N,) int64
    x_eval: torch.Tensor  # (M, C, H, W) float32
    y_eval: torch.Tensor  # (M,) int64
    source: str = ""
    # probe.samples=all joins both splits once per device, not at every evaluation
    _joined: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_eval.max())) + 1

    @property
    def nbytes(self) -> int:
        """Bytes the four tensors hold (what moving them to a device allocates there)."""
        return sum(getattr(self, k).element_size() * getattr(self, k).numel() for k in SPLITS)

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the four tensors' dtypes, shapes and bytes: equal for equal content.

        Computed on first access and kept on this object (a frozen dataclass still has a
        ``__dict__`` for ``cached_property``); the IDX loaders hand every job of a process the
        same object, so a data set is hashed once per process. SHA-256 rather than BLAKE2b:
        CPUs with SHA extensions hash it about twice as fast (docs/speed.md).
        """
        h = hashlib.sha256()
        for key in SPLITS:
            t = getattr(self, key).detach().cpu().contiguous()
            h.update(f"{key} {t.dtype} {tuple(t.shape)};".encode())
            h.update(t.view(torch.uint8).numpy() if t.numel() else b"")  # raw bytes, no copy
        return h.hexdigest()

    def probe_set(self, samples: str = "eval") -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and labels the MI estimator sees (``probe.samples``).

        ``eval``: the evaluation split; ``train``: the training split; ``all``: both, the
        evaluation split first (its rows ``[:len(y_eval)]`` are the evaluation split, so one
        pass gives the probes and the evaluation figures). The papers on the Tishby task
        estimate on all 4,096 patterns.
        """
        if samples == "eval":
            return self.x_eval, self.y_eval
        if samples == "train":
            return self.x_train, self.y_train
        if samples != "all":
            rule = f"must be one of {', '.join(PROBE_SAMPLES)}"
            raise ValueError(f"probe.samples {rule}, got {samples!r}")
        if "all" not in self._joined:
            self._joined["all"] = (
                torch.cat([self.x_eval, self.x_train]),  # (M + N, ...)
                torch.cat([self.y_eval, self.y_train]),  # (M + N,)
            )
        return self._joined["all"]

    def to(self, device: torch.device | str) -> Dataset:
        """This data set on ``device``: itself when already there, else a copy that keeps the
        fingerprint if it was computed (moving does not change the content)."""
        move = {k: getattr(self, k).to(device) for k in SPLITS}
        if all(move[k] is getattr(self, k) for k in SPLITS):
            return self
        moved = replace(self, **move)
        if "fingerprint" in self.__dict__:
            moved.__dict__["fingerprint"] = self.__dict__["fingerprint"]
        return moved


def _from_uint8(name: str, source: str, xtr, ytr, xte, yte) -> Dataset:
    def images(a: np.ndarray) -> torch.Tensor:  # (n, H, W) uint8 -> (n, 1, H, W) in [0, 1]
        return torch.from_numpy(a).unsqueeze(1).float().div_(255.0)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Dataset(name, images(xtr), labels(ytr), images(xte), labels(yte), source=source)


# ---------------------------------------------------------------------------------------------
# digits: scikit-learn's bundled 8x8 digits, works offline


DIGITS_SOURCE = "sklearn.datasets.load_digits"


def check_split(test_size: float, split_seed: int) -> None:
    """``data.test_size`` in (0, 1) and ``data.split_seed`` an integer >= 0, or a DataError."""
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)):
        raise DataError(f"data.test_size must be a number in (0, 1), got {test_size!r}")
    if not 0.0 < test_size < 1.0:
        raise DataError(f"data.test_size must be in (0, 1), got {test_size}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise DataError(f"data.split_seed must be an integer >= 0, got {split_seed!r}")


def _approximate_mode(counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class draws closest to ``counts / counts.sum() * n_draws``, ties broken by ``rng``
    (scikit-learn's private ``sklearn.utils.extmath._approximate_mode``, step for step)."""
    continuous = counts / counts.sum() * n_draws
    floored = np.floor(continuous)
    need = int(n_draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add = min(len(inds), need)
            floored[rng.choice(inds, size=add, replace=False)] += 1
            need -= add
            if need == 0:
                break
    return floored.astype(int)


def split_indices(
    n: int, test_size: float, seed: int, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of ``sklearn.model_selection.train_test_split(..., test_size,
    random_state=seed, stratify=stratify)``, drawn the same way without importing scikit-learn.

    Not a call to scikit-learn, for two reasons. Importing ``sklearn.model_selection`` (it
    pulls in SciPy) would add to the start of every job process many times what reading and
    splitting the digits takes; the split itself is a few NumPy calls. And a copy keeps the
    split, hence the data fingerprint, the training cache keys and every table, independent
    of the installed scikit-learn version: ``tests/test_data.py`` compares the two, so a
    scikit-learn that draws differently fails a test instead of silently changing results.

    Raises
    ------
    DataError
        when a stratified split cannot hold every class in both parts.
    """
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    rng = np.random.RandomState(seed)
    if stratify is None:
        perm = rng.permutation(n)
        return perm[n_test:], perm[:n_test]
    classes, y_idx, counts = np.unique(stratify, return_inverse=True, return_counts=True)
    if min(n_train, n_test) < len(classes) or counts.min() < 2:
        raise DataError(
            f"data.test_size must leave at least one sample of each of the {len(classes)} "
            f"classes in both splits of {n}, got {test_size} ({n_train} train, {n_test} test)"
        )
    by_class = np.split(np.argsort(y_idx, kind="stable"), np.cumsum(counts)[:-1])
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        members = by_class[i].take(rng.permutation(counts[i]), mode="clip")
        train.extend(members[: n_i[i]])
        test.extend(members[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits as (images (1797, 8, 8) float64 in 0..16, labels).

    Read from the CSV file that ships inside scikit-learn, found without importing it (see
    :func:`split_indices` for why); ``sklearn.datasets.load_digits`` if the file is not where
    it used to be.
    """
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is None or not csv.is_file():  # pragma: no cover - another scikit-learn layout
        from sklearn.datasets import load_digits as sk_load_digits

        bunch = sk_load_digits()
        return bunch.images, bunch.target
    table = np.loadtxt(csv, delimiter=",")  # (1797, 65): 64 pixels and the label
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def load_digits(test_size: float = 0.2, split_seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, pixels scaled to [0, 1], a fixed stratified split.

    Made once per process and split: a sweep's jobs share it (nothing writes to a data set).
    """
    check_split(test_size, split_seed)
    return _digits(float(test_size), split_seed)


@functools.cache
def _digits(test_size: float, split_seed: int) -> Dataset:
    images, target = digits_arrays()
    x = (images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    y = target.astype(np.int64)
    train, test = split_indices(len(y), test_size, split_seed, stratify=y)
    t = torch.from_numpy
    return Dataset("digits", t(x[train]), t(y[train]), t(x[test]), t(y[test]), source=DIGITS_SOURCE)


# ---------------------------------------------------------------------------------------------
# tishby: the 12-bit task of Shwartz-Ziv & Tishby (2017), generated (their file may not be shipped)

# The 12 bits are the vertices of an icosahedron: each vertex's five neighbours, and the six
# pairs of opposite vertices (each vertex's one non-neighbour at distance 3).
ICOSAHEDRON_NEIGHBOURS = (
    (1, 3, 5, 10, 11), (0, 2, 3, 4, 11), (1, 3, 4, 8, 9), (0, 1, 2, 8, 10),
    (1, 2, 6, 9, 11), (0, 6, 7, 10, 11), (4, 5, 7, 9, 11), (5, 6, 8, 9, 10),
    (2, 3, 7, 9, 10), (2, 4, 6, 7, 8), (0, 3, 5, 7, 8), (0, 1, 4, 5, 6),
)  # fmt: skip
ICOSAHEDRON_OPPOSITE = ((0, 9), (1, 7), (2, 5), (3, 6), (4, 10), (8, 11))


def tishby_patterns() -> tuple[np.ndarray, np.ndarray]:
    """The 4,096 patterns of Shwartz-Ziv & Tishby (2017) and their labels, generated.

    Row ``r`` of X is the 12-bit binary form of ``r``, most significant bit in column 0. With
    k = ones, e = neighbour pairs with both bits on, a = opposite pairs with both on and
    s = k(k-1)/2 - e - a (the remaining pairs of ones, at distance 2), the label is 1 exactly
    when ``23k + e - 5s - 8a >= 99``: 2,118 ones, p = 0.51709, H(Y) = 0.99916 bits. The rule
    was checked against all 4,096 labels of the authors' ``var_u.mat`` when it was derived;
    the labels are invariant under the icosahedron's 120 symmetries (they depend only on k, e,
    a).

    Returns
    -------
    X : ndarray of shape (4096, 12), int64, values 0/1
    y : ndarray of shape (4096,), int64, values 0/1
    """
    X = (np.arange(4096)[:, None] >> np.arange(11, -1, -1)) & 1  # (4096, 12), MSB first
    edges = np.array([(i, j) for i, nb in enumerate(ICOSAHEDRON_NEIGHBOURS) for j in nb if i < j])
    opposite = np.array(ICOSAHEDRON_OPPOSITE)
    k = X.sum(1)  # (4096,)
    e = (X[:, edges[:, 0]] & X[:, edges[:, 1]]).sum(1)  # (4096,) of 30 edges
    a = (X[:, opposite[:, 0]] & X[:, opposite[:, 1]]).sum(1)  # (4096,) of 6 pairs
    s = k * (k - 1) // 2 - e - a
    y = (23 * k + e - 5 * s - 8 * a >= 99).astype(np.int64)
    return X.astype(np.int64), y


def load_tishby(test_size: float = 0.2, split_seed: int = 0) -> Dataset:
    """The Tishby task as 12 float features (0/1) per pattern; a seeded random split.

    ``in_shape`` is (12,): fully connected models take it; there is no image shape, so
    ``model=cnn`` is refused. ``probe.samples=all`` estimates on all 4,096 patterns as the
    papers do.
    """
    check_split(test_size, split_seed)
    X, y = tishby_patterns()
    train, test = split_indices(len(y), test_size, split_seed)
    x = X.astype(np.float32)  # (4096, 12)
    t = torch.from_numpy
    return Dataset("tishby", t(x[train]), t(y[train]), t(x[test]), t(y[test]))


# ---------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_eval": "t10k-images-idx3-ubyte",
    "y_eval": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_CLASSES = 10  # MNIST and Fashion-MNIST: labels 0..9


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzipped) as used by MNIST into a NumPy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # unreadable, or a corrupt or truncated .gz
        raise DataError(f"{path} could not be read ({type(err).__name__}: {err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise DataError(f"{path}: header of {ndim} dimensions is cut short ({len(raw)} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
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


def check_idx(arrays: dict[str, np.ndarray], files: dict[str, Path], n_classes: int) -> None:
    """Refuse IDX arrays that do not make a data set: unsigned bytes, images (n, H, W) and labels
    (n,) with one label per image, both splits of one image shape, labels in 0..n_classes-1.
    Whole-array checks: no per-sample Python."""
    for key, a in arrays.items():
        if a.dtype != np.uint8:
            raise DataError(
                f"data.root: {files[key]} must hold unsigned bytes (IDX type 0x08), got {a.dtype}"
            )
        want = 3 if key.startswith("x") else 1
        if a.ndim != want:
            what = "images (n, height, width)" if want == 3 else "labels (n,)"
            raise DataError(
                f"data.root: {files[key]} must hold {want}-D {what}, got shape {a.shape}"
            )
        if len(a) == 0:
            raise DataError(f"data.root: {files[key]} must hold at least one sample, got 0")
    for split in ("train", "eval"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise DataError(
                f"data.root: {files[f'y_{split}']} must hold one label per image of "
                f"{files[f'x_{split}']} ({len(x)}), got {len(y)} labels"
            )
    if arrays["x_train"].shape[1:] != arrays["x_eval"].shape[1:]:
        raise DataError(
            f"data.root: {files['x_eval']} must hold images of the training shape "
            f"{arrays['x_train'].shape[1:]} (from {files['x_train']}), "
            f"got {arrays['x_eval'].shape[1:]}"
        )
    for key in ("y_train", "y_eval"):
        top = int(arrays[key].max())  # uint8: never below 0
        if top >= n_classes:
            raise DataError(
                f"data.root: {files[key]} must hold labels in 0..{n_classes - 1} "
                f"({n_classes} classes), got {top}"
            )


# In-process cache of decoded data sets read from files (IDX, CIFAR pickles, image folders,
# .npz): Hydra's basic launcher runs a sweep's jobs one after another in ONE process, and every
# job instantiates its data set; decoding Fashion-MNIST again would cost every job what the
# first paid (docs/speed.md), and sharing the object shares its fingerprint (hashed once). Keyed
# by each file's path, size and mtime (and the loader's settings), so a rewritten file is read
# again. Holds at most _CACHE_SIZE data sets (Fashion-MNIST: 220 MB of float32 each, CIFAR-10
# 737 MB).
_CACHE: dict[tuple, Dataset] = {}
_CACHE_SIZE = 2


def _remember(key: tuple, make: Callable[[], Dataset]) -> Dataset:
    """``make()`` once per ``key`` in this process (see ``_CACHE``)."""
    if key not in _CACHE:
        # make room first: the memory check of make() should not count a data set on its way out
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))  # oldest first
        _CACHE[key] = make()
    return _CACHE[key]


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def load_idx_folder(name: str, files: dict[str, Path], n_classes: int = IDX_CLASSES) -> Dataset:
    """The data set in the four IDX ``files``, checked (``check_idx``) and decoded once per
    process (see ``_CACHE``).

    Jobs of one process share the returned tensors: callers must not modify them in place
    (``Dataset.to`` and batch indexing copy; clone before editing, as the tests do).
    """

    def make() -> Dataset:
        try:
            arrays = {k: read_idx(p) for k, p in files.items()}
        except DataError as err:
            raise DataError(f"data.root: {err}") from None
        check_idx(arrays, files, n_classes)
        source = str(files["x_train"].parent)
        return _from_uint8(name, source, *(arrays[k] for k in IDX_FILES))

    return _remember((name, *((k, *_stat_key(p)) for k, p in files.items())), make)


DEFAULT_ROOT = "~/.cache/infoflow/data"
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
_STEMS = ", ".join(f"{s}[.gz]" for s in IDX_FILES.values())


def _root(root: str | None, download: bool) -> tuple[Path, str]:
    """``data.root`` (null: ``DEFAULT_ROOT``) as a path, and as the messages show it; checks
    ``data.download`` too."""
    if not isinstance(download, bool):
        raise DataError(f"data.download must be true or false, got {download!r}")
    # Hydra reads data.root=2024 as an int; a folder may have that name, a bool is a mistake
    folder_like = isinstance(root, (str, int, os.PathLike)) and not isinstance(root, bool)
    if root is not None and (not folder_like or not str(root).strip()):
        raise DataError(f"data.root must be a folder or null, got {root!r}")
    target = Path(os.path.expanduser(str(root if root is not None else DEFAULT_ROOT)))
    shown = repr(str(root)) if root is not None else f"null (the default, {target})"
    return target, shown


def _load_torchvision(
    name: str, tv_class: str, root: str | None, download: bool, defaults: tuple[str, ...]
) -> Dataset:
    """The data set from ``root`` (flat or ``<tv_class>/raw``), downloaded there if allowed.

    ``root=None`` searches ``DEFAULT_ROOT`` then ``defaults`` and downloads into
    ``DEFAULT_ROOT``; an explicit root is the only place searched and downloaded into.
    """
    target, shown = _root(root, download)
    places = [target, *(map(Path, defaults) if root is None else ())]
    candidates = [c for p in places for c in (p, p / tv_class / "raw")]
    try:
        if target.exists() and not target.is_dir():
            raise DataError(
                f"data.root must be a folder holding the {name} IDX files, got {shown}, "
                "which is a file"
            )
        for folder in candidates:
            files = find_idx(folder)
            if files is not None:
                return load_idx_folder(name, files)
    except OSError as err:  # e.g. a folder we may not list
        raise DataError(
            f"data.root must be a readable folder, got {shown} ({type(err).__name__}: {err})"
        ) from None
    looked = ", ".join(str(c) for c in candidates)
    rule = (
        f"data.root=null searches {', '.join(map(str, places))}"
        if root is None
        else "an explicit data.root is the only place searched"
    )
    if not download:
        raise DataError(
            f"data.root: no {name} IDX files in {looked} and data.download=false ({rule}). "
            f"Put {_STEMS} in data.root, or set data.download=true."
        )
    try:
        import torchvision.datasets as tvd

        getattr(tvd, tv_class)(str(target), train=True, download=True)
        getattr(tvd, tv_class)(str(target), train=False, download=True)
    except Exception as err:  # any download failure gets the same advice
        raise DataError(
            f"data.root: no {name} IDX files in {looked}, and the download failed "
            f"({type(err).__name__}: {' '.join(str(err).split())}). Put {_STEMS} in a folder "
            f"and set data.root to it (e.g. `apt-get install dataset-fashion-mnist` installs "
            f"Fashion-MNIST under {DEBIAN_FASHION_MNIST}), or run once with network."
        ) from err
    files = find_idx(target / tv_class / "raw")
    if files is None:
        raise DataError(f"data.root: download to {target / tv_class / 'raw'} left no IDX files")
    return load_idx_folder(name, files)


def load_mnist(root: str | None = None, download: bool = True) -> Dataset:
    """MNIST from the IDX files in ``root`` (flat, or torchvision's ``MNIST/raw``), else
    downloaded there with torchvision. ``root=None``: ``~/.cache/infoflow/data``."""
    return _load_torchvision("mnist", "MNIST", root, download, ())


def load_fashion_mnist(root: str | None = None, download: bool = True) -> Dataset:
    """Fashion-MNIST from the IDX files in ``root`` (flat, or torchvision's ``FashionMNIST/raw``),
    else downloaded there with torchvision. ``root=None`` searches ``~/.cache/infoflow/data``,
    then Debian's ``dataset-fashion-mnist`` folder, and downloads into the first."""
    return _load_torchvision(
        "fashion_mnist", "FashionMNIST", root, download, (DEBIAN_FASHION_MNIST,)
    )


# ---------------------------------------------------------------------------------------------
# sizes: a data set lives as whole tensors on the job's device, so it must fit there

LIMIT_ENV = "INFOFLOW_DATA_LIMIT_BYTES"  # overrides every limit below (tests, shared machines)
HEADROOM = 0.5  # the share of free memory a data set may take; the rest is the job's
_FIT_HINT = (
    "Use fewer samples (a subset written as one .npz for data=arrays, or fewer CIFAR batch "
    "files), a smaller data.image_size for data=image_folder, or a machine with more memory"
)


def _size(n: float) -> str:
    """Bytes in binary units for messages: ``1.50 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2): no limit


def _cgroup_room() -> int | None:
    """Bytes this process's memory cgroup still allows (limit - usage), None when unlimited
    or unknown. Slurm and containers confine jobs with cgroups, which ``/proc/meminfo`` (the
    whole machine's) does not show."""
    rel = ""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):  # cgroup v2: the process's own group
                rel = line[3:].strip().lstrip("/")
    except OSError:
        pass
    pairs = [
        (f"/sys/fs/cgroup/{rel}/memory.max", f"/sys/fs/cgroup/{rel}/memory.current"),
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ]
    for limit_file, usage_file in pairs:
        limit = _read_int(limit_file)
        if limit is not None and limit < 2**60:  # v1 writes "no limit" as ~2**63
            return max(limit - (_read_int(usage_file) or 0), 0)
    return None


def host_available() -> int | None:
    """Bytes of physical memory available to this process: ``MemAvailable`` of
    ``/proc/meminfo`` (free plus reclaimable cache; ``SC_AVPHYS_PAGES`` where there is no
    /proc), capped by the memory cgroup's room. None where neither is known."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    room = _cgroup_room()
    if room is not None:
        avail = room if avail is None else min(avail, room)
    return avail


def memory_limit(device: torch.device | str) -> tuple[int | None, str]:
    """The most bytes a data set may take on ``device`` and how that was found (for messages).

    ``INFOFLOW_DATA_LIMIT_BYTES`` wins when set. CUDA: :data:`HEADROOM` (half) of the free
    memory (``torch.cuda.mem_get_info``); the other half is left to the model, its gradients
    and optimizer state, the activations of a batch and the probe's buffers, which can take as
    much again on wide layers. CPU and MPS (whose memory is the host's): half the memory
    available to the process, the other half for the same and for the copies a loader makes
    while decoding (bytes, then float32). None: unknown, not checked.
    """
    device = torch.device(device)
    env = os.environ.get(LIMIT_ENV)
    if env is not None:
        if not env.strip().isdigit():
            raise DataError(f"{LIMIT_ENV} must be a number of bytes (an integer >= 0), got {env!r}")
        return int(env), f"set by {LIMIT_ENV}"
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        why = (
            f"half of the {_size(free)} free on {device} of its {_size(total)}; the other half "
            "is kept for the model, its activations and the probe's buffers"
        )
        return int(free * HEADROOM), why
    avail = host_available()
    if avail is None:
        return None, "unknown"
    why = (
        f"half of the {_size(avail)} of memory available to this process; the other half is "
        "kept for the model, the probe's activations and the copies made while loading"
    )
    return int(avail * HEADROOM), why


def check_fits(nbytes: int, device: torch.device | str, what: str, hint: str = "") -> None:
    """Refuse, before anything is loaded or moved, a data set of ``nbytes`` that cannot live as
    whole tensors on ``device`` (see :func:`memory_limit` for the limits).

    Parameters
    ----------
    nbytes : int
        The data set's size as tensors (:attr:`Dataset.nbytes`, or a loader's estimate from
        file headers before decoding).
    device : torch.device or str
        Where the tensors will live: ``cpu`` for a loader, the job's device before moving.
    what : str
        The data set as the message names it (a key and a file).
    hint : str
        What to do instead, when the caller knows better than the generic advice.

    Raises
    ------
    DataError
        naming the size, the limit, how the limit was found and what to do.
    """
    device = torch.device(device)
    limit, why = memory_limit(device)
    if limit is None or nbytes <= limit:
        return
    advice = hint or _FIT_HINT
    if device.type != "cpu":
        advice += ", or runtime.device=cpu (whole tensors in host memory)"
    raise DataError(
        f"{what} takes {_size(nbytes)} ({nbytes:,} bytes) as whole tensors on {device}, more "
        f"than the {_size(limit)} allowed there ({why}). {advice}; {LIMIT_ENV}=N sets the "
        "limit yourself."
    )


# ---------------------------------------------------------------------------------------------
# any Dataset: the contract a user's _target_ must keep


def _prefix(text: str) -> Callable[[str], str]:
    """``at`` of the checks below: names an array in messages, ``at("y_eval")`` is
    ``"<text>: y_eval"``."""
    return lambda key: f"{text}: {key}"


def _check_layout(shapes: dict[str, tuple[int, ...]], at: Callable[[str], str]) -> None:
    """Shapes of the four splits: x (n, ...) with at least one feature axis, y (n,), one label
    per sample, non-empty splits, one sample shape for both splits. ``at(key)`` names the
    array in messages."""
    for split in ("train", "eval"):
        xk, yk = f"x_{split}", f"y_{split}"
        x, y = shapes[xk], shapes[yk]
        if len(x) < 2:
            raise DataError(
                f"{at(xk)} must be shaped (n, features) or (n, channels, height, width), "
                f"got shape {x}"
            )
        if len(y) != 1:
            raise DataError(f"{at(yk)} must be shaped (n,) (one class index per sample), got {y}")
        if x[0] == 0:
            raise DataError(f"{at(xk)} must hold at least one sample, got shape {x}")
        if y[0] != x[0]:
            raise DataError(
                f"{at(yk)} must hold one label per sample of {at(xk)} ({x[0]}), got {y[0]}"
            )
    if shapes["x_train"][1:] != shapes["x_eval"][1:]:
        raise DataError(
            f"{at('x_eval')} must hold samples of the training shape {shapes['x_train'][1:]}, "
            f"got {shapes['x_eval'][1:]}"
        )


def _check_labels(y_train, y_eval, at: Callable[[str], str]) -> None:
    """Class indices 0..K-1 (NumPy or torch integers): none negative, at least two classes in
    the training split, no evaluation label beyond the training split's classes (K is taken
    from the training split)."""
    for key, y in (("y_train", y_train), ("y_eval", y_eval)):
        low = int(y.min())
        if low < 0:
            raise DataError(f"{at(key)} must hold class indices 0..K-1, got label {low}")
    top = int(y_train.max())
    n_present = len(np.unique(np.asarray(y_train)))
    if n_present < 2:
        raise DataError(
            f"{at('y_train')} must hold at least 2 classes (a classifier of one class learns "
            f"nothing), got only label {top}"
        )
    if int(y_eval.max()) > top:
        raise DataError(
            f"{at('y_eval')} must hold labels of the training split's classes 0..{top} "
            f"(from {at('y_train')}), got label {int(y_eval.max())}"
        )


def _check_finite(x: torch.Tensor, what: str) -> None:
    """No NaN or infinity in ``x``. A NaN or an infinity makes the sum non-finite, so a finite
    sum clears it in one reduction (CIFAR-10: 0.06 s against 2 s for ``isfinite().all()``);
    only a non-finite sum (or one that overflowed) looks element by element."""
    if bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all()):
        return
    bad = int((~torch.isfinite(x)).sum())
    raise DataError(f"{what} must hold finite values, got {bad} NaN or infinite")


def check_dataset(data: object, where: str) -> Dataset:
    """``data`` if it keeps the :class:`Dataset` contract, else a DataError naming ``where``
    (e.g. the ``data._target_`` that returned it). See docs/data.md.

    The contract: ``x_train`` and ``x_eval`` float32 tensors shaped (n, features) or (n, C, H,
    W), finite, one sample shape for both; ``y_train`` and ``y_eval`` int64 tensors (n,) of
    class indices, at least two classes in the training split and none in the evaluation split
    beyond them; every split non-empty; all four on one device; ``name`` a non-empty string,
    ``source`` a string. Checked once per object (whole-tensor checks, no per-sample Python).
    """
    if not isinstance(data, Dataset):
        raise DataError(
            f"{where} must return an infoflow.Dataset (x_train, y_train, x_eval, y_eval "
            f"tensors), got {type(data).__module__}.{type(data).__qualname__}"
        )
    if data.__dict__.get("_checked"):
        return data
    if not isinstance(data.name, str) or not data.name.strip():
        raise DataError(f"{where}: Dataset.name must be a non-empty string, got {data.name!r}")
    if not isinstance(data.source, str):
        raise DataError(f"{where}: Dataset.source must be a string, got {data.source!r}")

    at = _prefix(where)
    tensors = {k: getattr(data, k) for k in SPLITS}
    for key, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise DataError(f"{at(key)} must be a torch.Tensor, got {type(t).__name__}")
        want = torch.float32 if key.startswith("x") else torch.int64
        if t.dtype != want:
            how = ".float()" if want == torch.float32 else ".long()"
            raise DataError(f"{at(key)} must be {want} (convert with {how}), got {t.dtype}")
    devices = {str(t.device) for t in tensors.values()}
    if len(devices) > 1:
        raise DataError(f"{where}: the four tensors must be on one device, got {sorted(devices)}")
    _check_layout({k: tuple(t.shape) for k, t in tensors.items()}, at)
    for key in ("x_train", "x_eval"):
        _check_finite(tensors[key], at(key))
    _check_labels(tensors["y_train"].cpu(), tensors["y_eval"].cpu(), at)
    data.__dict__["_checked"] = True  # frozen dataclass: its __dict__ still takes a note
    return data


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: torchvision's folders of pickled batches, read here (any subset)

# name -> (torchvision class, folder, training files (None: data_batch_1..N), eval file,
#          label key, classes, archive)
CIFAR = {
    "cifar10": (
        "CIFAR10", "cifar-10-batches-py", None, "test_batch", "labels", 10,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "cifar100": (
        "CIFAR100", "cifar-100-python", ("train",), "test", "fine_labels", 100,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
}  # fmt: skip
CIFAR_PIXELS = 3 * 32 * 32  # a row of b"data": 1024 red, 1024 green, 1024 blue, row-major


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and NumPy arrays only: a CIFAR batch is a
    pickle, and a pickle may name any callable; these files may come from anywhere."""

    ALLOWED = frozenset({
        ("_codecs", "encode"),  # bytes in protocol 0-2 pickles
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    })  # fmt: skip

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR batch never holds"
            )
        return super().find_class(module, name)


def read_cifar_batch(path: Path, label_key: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch: images (n, 3, 32, 32) uint8 (channel planes, NCHW) and labels
    (n,) int64 in 0..n_classes-1. Python 2 pickles (the published files) and Python 3 ones
    (a user's subset) alike; keys may be bytes or str."""
    try:
        with open(path, "rb") as f:
            raw = _ArrayUnpickler(f, encoding="latin1").load()  # latin1: Python 2's numpy
    except Exception as err:  # unreadable, truncated, not a pickle, a refused global
        raise DataError(
            f"data.root: {path} is not a readable CIFAR batch ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(raw, dict):
        raise DataError(f"data.root: {path} must hold a dict, got {type(raw).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in raw.items()}
    for key in ("data", label_key):
        if key not in batch:
            raise DataError(
                f"data.root: {path} must hold the key {key!r}, got keys {sorted(map(str, batch))}"
            )
    images, labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != CIFAR_PIXELS:
        raise DataError(
            f"data.root: {path}: 'data' must be uint8 shaped (n, {CIFAR_PIXELS}), got "
            f"{images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"data.root: {path}: {label_key!r} must be a list of integers, got "
            f"{labels.dtype} {labels.shape}"
        )
    if len(labels) != len(images):
        raise DataError(
            f"data.root: {path}: {label_key!r} must hold one label per image ({len(images)}), "
            f"got {len(labels)}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)][0]
        raise DataError(
            f"data.root: {path}: {label_key!r} must hold labels in 0..{n_classes - 1}, got {bad}"
        )
    return images.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_files(folder: Path, name: str) -> dict[str, list[Path]] | None:
    """The training and evaluation batch files of ``name`` in ``folder``, or None if it holds
    none of them. CIFAR-10 takes data_batch_1..N, any N >= 1 (a subset), without gaps."""
    _, _, train_names, eval_name, *_ = CIFAR[name]
    if train_names is None:
        numbers = sorted(
            int(p.name.rsplit("_", 1)[1])
            for p in folder.glob("data_batch_*")
            if p.name.rsplit("_", 1)[1].isdigit()
        )
        train = [folder / f"data_batch_{i}" for i in numbers]
        if numbers and numbers != list(range(1, len(numbers) + 1)):
            missing = min(set(range(1, numbers[-1] + 1)) - set(numbers))
            raise DataError(
                f"data.root: {folder} holds data_batch_{numbers} but not data_batch_{missing}: "
                "the training batches must be data_batch_1..N without gaps"
            )
    else:
        train = [folder / n for n in train_names if (folder / n).is_file()]
    test = folder / eval_name
    if not train and not test.is_file():
        return None
    if not train or not test.is_file():
        want = "data_batch_1..N" if train_names is None else ", ".join(train_names)
        missing = want if not train else eval_name
        raise DataError(f"data.root: {folder} holds part of {name}: {missing} is missing")
    return {"train": train, "eval": [test]}


def _channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) standard deviation of uint8 images (n, C, H, W), on
    the [0, 1] scale, exactly: from each channel's 256-bin histogram (no float summation, so
    the same numbers on every machine). A constant channel gets std 1 (left unscaled)."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean, std = np.empty(images.shape[1]), np.empty(images.shape[1])
    t = torch.from_numpy(images)  # torch's bincount of bytes: ~5x NumPy's (CIFAR-10: 0.6 s)
    for c in range(images.shape[1]):
        counts = torch.bincount(t[:, c].reshape(-1), minlength=256).double().numpy()  # (256,)
        mean[c] = counts @ levels / counts.sum()
        std[c] = np.sqrt(counts @ (levels - mean[c]) ** 2 / counts.sum())
    std[std == 0] = 1.0
    return mean, std


def _images(a: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None) -> torch.Tensor:
    """uint8 (n, C, H, W) -> float32 in [0, 1], then ``(x - mean) / std`` per channel."""
    x = torch.from_numpy(a).float().div_(255.0)  # (n, C, H, W)
    if mean is not None:
        shape = (1, -1, 1, 1)
        x.sub_(torch.tensor(mean, dtype=torch.float32).view(shape))
        x.div_(torch.tensor(std, dtype=torch.float32).view(shape))
    return x


def _read_cifar(name: str, files: dict[str, list[Path]], normalize: bool) -> Dataset:
    _, _, _, _, label_key, n_classes, _ = CIFAR[name]
    every = [p for split in files.values() for p in split]

    def make() -> Dataset:
        # checked before reading, and only then: a cached data set already holds its memory.
        # A pickle holds 3,072 bytes per image and a little more: 4x its size is the float32
        estimate = sum(p.stat().st_size for p in every) * 4
        check_fits(estimate, "cpu", f"data={name} in {every[0].parent}", _FIT_HINT)
        split = {}
        for key, paths in files.items():
            parts = [read_cifar_batch(p, label_key, n_classes) for p in paths]
            split[key] = (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
            )
        mean, std = _channel_stats(split["train"][0]) if normalize else (None, None)
        at = _prefix(f"data.root: {every[0].parent}")
        shapes = {f"x_{k}": v[0].shape for k, v in split.items()}
        shapes.update({f"y_{k}": v[1].shape for k, v in split.items()})
        _check_layout(shapes, at)
        _check_labels(split["train"][1], split["eval"][1], at)
        t = torch.from_numpy
        return Dataset(
            name,
            _images(split["train"][0], mean, std), t(split["train"][1]),
            _images(split["eval"][0], mean, std), t(split["eval"][1]),
            source=str(every[0].parent),
        )  # fmt: skip

    return _remember((name, normalize, *(_stat_key(p) for p in every)), make)


def _load_cifar(name: str, root: str | None, download: bool, normalize: bool) -> Dataset:
    if not isinstance(normalize, bool):
        raise DataError(f"data.normalize must be true or false, got {normalize!r}")
    tv_class, folder, train_names, eval_name, _, _, archive = CIFAR[name]
    target, shown = _root(root, download)
    candidates = [target / folder, target]  # torchvision's layout, or the folder itself
    try:
        if target.exists() and not target.is_dir():
            raise DataError(f"data.root must be a folder holding {folder}/, got {shown}, a file")
        for place in candidates:
            files = _cifar_files(place, name) if place.is_dir() else None
            if files is not None:
                return _read_cifar(name, files, normalize)
    except OSError as err:
        raise DataError(
            f"data.root must be a readable folder, got {shown} ({type(err).__name__}: {err})"
        ) from None
    looked = " and ".join(str(c) for c in candidates)
    want = "data_batch_1..5" if train_names is None else ", ".join(train_names)
    todo = (
        f"Put torchvision's {folder}/ folder ({want} and {eval_name}, from {archive}; any number "
        f"of images) in data.root"
    )
    if not download:
        raise DataError(
            f"data.root: no {name} batches in {looked} and data.download=false. {todo}, or set "
            "data.download=true."
        )
    try:
        import torchvision.datasets as tvd

        getattr(tvd, tv_class)(str(target), train=True, download=True)
    except Exception as err:  # any download failure gets the same advice
        raise DataError(
            f"data.root: no {name} batches in {looked}, and the download failed "
            f"({type(err).__name__}: {' '.join(str(err).split())}). {todo}, or run once with "
            "network."
        ) from err
    files = _cifar_files(target / folder, name)
    if files is None:
        raise DataError(f"data.root: download to {target / folder} left no {name} batches")
    return _read_cifar(name, files, normalize)


def load_cifar10(
    root: str | None = None, download: bool = True, normalize: bool = False
) -> Dataset:
    """CIFAR-10 from torchvision's ``cifar-10-batches-py/`` folder under ``root`` (or ``root``
    itself), read here: ``data_batch_1..N`` (any N, any number of images: a subset works, no
    checksum asked) for training, ``test_batch`` for evaluation. Downloaded with torchvision
    into ``root`` when absent and ``download``. ``root=None``: ``~/.cache/infoflow/data``.

    Images float32 (n, 3, 32, 32) in [0, 1] (RGB planes, NCHW); with ``normalize``, minus the
    training split's per-channel mean, over its per-channel standard deviation, both splits.
    Decoded once per process (``_CACHE``).
    """
    return _load_cifar("cifar10", root, download, normalize)


def load_cifar100(
    root: str | None = None, download: bool = True, normalize: bool = False
) -> Dataset:
    """CIFAR-100 from torchvision's ``cifar-100-python/`` folder (``train``, ``test``) under
    ``root``, with its 100 fine labels; otherwise as :func:`load_cifar10`."""
    return _load_cifar("cifar100", root, download, normalize)


# ---------------------------------------------------------------------------------------------
# image_folder: torchvision's ImageFolder layout, decoded once per process

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
EVAL_FOLDERS = ("eval", "val")
_MODES = {1: "L", 3: "RGB"}  # data.channels -> PIL mode


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (any depth), sorted, hidden entries skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            Path(dirpath) / f
            for f in filenames
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return sorted(found)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _image_split_folders(root: Path) -> tuple[Path, Path]:
    train = root / "train"
    evals = [root / e for e in EVAL_FOLDERS if (root / e).is_dir()]
    if not train.is_dir() or len(evals) != 1:
        held = ", ".join(sorted(p.name + "/" for p in root.iterdir() if p.is_dir())) or "none"
        problem = "both eval/ and val/ (keep one)" if len(evals) > 1 else f"folders {held}"
        raise DataError(
            f"data.root {root} must hold train/ and one of eval/ or val/, each a folder per "
            f"class (torchvision's ImageFolder layout), got {problem}"
        )
    return train, evals[0]


def _image_listing(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Classes (the sorted training class folders) and each split's (file, class index)."""
    train, evaluation = _image_split_folders(root)
    classes = _class_dirs(train)
    if not classes:
        raise DataError(f"data.root: {train} must hold one folder per class, got none")
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in _class_dirs(evaluation) if c not in index]
    if unknown:
        raise DataError(
            f"data.root: {evaluation / unknown[0]} is a class the training split lacks "
            f"({train} has {', '.join(classes)}): every evaluation class needs training images"
        )
    splits = []
    for folder in (train, evaluation):
        items = []
        for c in _class_dirs(folder):
            files = _image_files(folder / c)
            if not files and folder is train:
                raise DataError(
                    f"data.root: {folder / c} must hold images ({', '.join(IMAGE_EXTENSIONS)}), "
                    "got none"
                )
            items += [(f, index[c]) for f in files]
        if not items:
            raise DataError(f"data.root: {folder} must hold at least one image, got none")
        splits.append(items)
    return classes, splits[0], splits[1]


def _decode_image(path: Path, mode: str, size: tuple[int, int] | None, fixed: bool) -> np.ndarray:
    """One image as uint8 (C, H, W) in ``mode``: resized to ``size`` (width, height) unless
    ``fixed`` (then it must already be that size)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if fixed and im.size != size:
                raise DataError(
                    f"data.image_size=null needs every image of one size, got {path} of "
                    f"{im.size[0]}x{im.size[1]} where the first is {size[0]}x{size[1]}: set "
                    "data.image_size to resize them to a square"
                )
            im = im.convert(mode)  # palette, alpha, 1-bit, CMYK -> RGB or L
            if im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)  # antialiased when shrinking
            a = np.asarray(im)  # (H, W) or (H, W, C) uint8
    except DataError:
        raise
    except Exception as err:  # not an image, truncated, unsupported
        raise DataError(
            f"data.root: {path} could not be decoded ({type(err).__name__}: {err})"
        ) from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W)


def _decode_all(items: list[tuple[Path, int]], channels: int, size, fixed: bool) -> np.ndarray:
    """Every image into one uint8 array (n, C, H, W), in order; a thread per core (Pillow
    releases the GIL while it decodes and resizes)."""
    from concurrent.futures import ThreadPoolExecutor

    out = np.empty((len(items), channels, size[1], size[0]), dtype=np.uint8)  # (n, C, H, W)

    def put(i: int) -> None:
        out[i] = _decode_image(items[i][0], _MODES[channels], size, fixed)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(items), 1024):  # in chunks: a bad file stops it soon
            list(pool.map(put, range(start, min(start + 1024, len(items)))))
    return out


def load_image_folder(
    root: str | None = None, image_size: int | None = None, channels: int = 3
) -> Dataset:
    """Images in torchvision's ``ImageFolder`` layout: ``root/train/<class>/*`` and
    ``root/eval/<class>/*`` (or ``val/``); files of any depth under a class folder, with the
    extensions of :data:`IMAGE_EXTENSIONS`.

    Classes are the training class folders, sorted by name (index 0 first, as torchvision's
    ``ImageFolder``); the evaluation split uses the same mapping and may lack classes but not
    add one. Every image is converted to RGB (``channels=3``) or grayscale (``channels=1``,
    ITU-R 601-2 luma), then resized to ``image_size`` x ``image_size`` (bilinear, antialiased;
    aspect ratio not kept), or, with ``image_size=None``, left as it is: all must then share
    one size. Float32 (n, C, H, W) in [0, 1].

    Decoded once per process, so a sweep's jobs share one object and its fingerprint: the
    process cache is keyed by the folder, the settings and the modification time of every
    class folder (a file added, removed or renamed in one changes it), which costs a stat per
    class, not per image.
    """
    if root is None or isinstance(root, bool) or not str(root).strip():
        raise DataError(
            "data.root must name a folder holding train/ and eval/ (or val/) folders of class "
            f"folders, got {root!r}"
        )
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise DataError(f"data.image_size must be an integer >= 1 or null, got {image_size!r}")
    if channels not in _MODES or isinstance(channels, bool):
        raise DataError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    folder = Path(os.path.expanduser(str(root))).resolve()
    if not folder.is_dir():
        raise DataError(f"data.root must be an existing folder, got {str(root)!r} ({folder})")
    try:
        splits = _image_split_folders(folder)
        stamp = tuple(_stat_key(split / c) for split in splits for c in _class_dirs(split))
    except OSError as err:
        raise DataError(
            f"data.root: {folder} could not be read ({type(err).__name__}: {err})"
        ) from None
    key = ("image_folder", str(folder), image_size, channels, stamp)
    return _remember(key, lambda: _read_image_folder(folder, image_size, channels))


def _read_image_folder(folder: Path, image_size: int | None, channels: int) -> Dataset:
    try:
        _classes, train, evaluation = _image_listing(folder)
    except OSError as err:
        raise DataError(
            f"data.root: {folder} could not be read ({type(err).__name__}: {err})"
        ) from None
    if image_size is None:
        from PIL import Image

        with Image.open(train[0][0]) as im:  # reads the header only
            size = im.size
    else:
        size = (image_size, image_size)
    n = len(train) + len(evaluation)
    check_fits(
        n * (channels * size[0] * size[1] * 4 + 8),
        "cpu",
        f"data=image_folder in {folder} ({n} images of {channels}x{size[1]}x{size[0]})",
        "Set a smaller data.image_size, use fewer images, or a machine with more memory",
    )
    log.info("data=image_folder: decoding %d images of %s once in this process", n, folder)
    fixed = image_size is None
    x = {
        k: _decode_all(items, channels, size, fixed)
        for k, items in (("train", train), ("eval", evaluation))
    }
    y = {
        k: np.array([c for _, c in items], dtype=np.int64)
        for k, items in (("train", train), ("eval", evaluation))
    }
    at = _prefix(f"data.root: {folder}")
    _check_labels(y["train"], y["eval"], at)
    t = torch.from_numpy
    return Dataset(
        "image_folder",
        _images(x["train"], None, None), t(y["train"]),
        _images(x["eval"], None, None), t(y["eval"]),
        source=str(folder),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# arrays: one .npz holding x_train, y_train, x_eval, y_eval


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in the .npz at ``path``, from the .npy headers inside
    the zip only (no array data read, compressed or not)."""
    import zipfile

    out = {}
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            if not member.endswith(".npy"):
                continue
            with z.open(member) as f:
                version = np.lib.format.read_magic(f)
                # 2.0 widens the header length; 3.0 only allows utf-8 in structured field
                # names, which ASCII headers (every plain array's) never hold
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read(f)
            out[member[: -len(".npy")]] = (tuple(shape), np.dtype(dtype))
    return out


def _check_npz_headers(path: Path, heads: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    at = _prefix(f"data.path {path}")
    missing = [k for k in SPLITS if k not in heads]
    if missing:
        raise DataError(
            f"data.path {path} must hold the arrays x_train, y_train, x_eval, y_eval "
            f"(np.savez(path, x_train=..., ...)); {', '.join(missing)} missing, it holds "
            f"{', '.join(sorted(heads)) or 'no arrays'}"
        )
    for key in ("x_train", "x_eval"):
        dtype = heads[key][1]
        if not (dtype == np.uint8 or dtype == np.bool_ or dtype.kind == "f"):
            raise DataError(
                f"{at(key)} must be float (used as is) or uint8 (divided by 255), got {dtype}: "
                "convert it with .astype(np.float32) on the scale you want"
            )
    for key in ("y_train", "y_eval"):
        dtype = heads[key][1]
        if dtype.kind not in "iu":
            raise DataError(
                f"{at(key)} must hold integer class indices 0..K-1, got dtype {dtype} "
                "(whole-number floats: .astype(np.int64); names: map them to indices)"
            )
    shapes = {k: heads[k][0] for k in SPLITS}
    _check_layout(shapes, at)
    x = shapes["x_train"]
    if len(x) == 4 and x[3] in (1, 3, 4) and x[1] not in (1, 3, 4):
        raise DataError(
            f"{at('x_train')} looks channel-last (n, height, width, channels) = {x}; images "
            "must be (n, channels, height, width): save x.transpose(0, 3, 1, 2)"
        )


def load_arrays(path: str | None = None) -> Dataset:
    """The data set in one ``.npz`` (``np.savez`` or ``np.savez_compressed``) at ``path``:
    ``x_train`` (n, ...) and ``x_eval`` (m, ...) float or uint8 (uint8 is divided by 255, bool
    taken as 0/1), one sample shape for both, (n, features) for fully connected models or
    (n, C, H, W) for convolutional ones; ``y_train`` (n,) and ``y_eval`` (m,) integer class
    indices 0..K-1 (K from the training split, at least 2). Shapes, dtypes and the size are
    checked from the file's headers before any array is read; values (NaN, labels) after.
    Read once per process (path, size and mtime key the process cache).
    """
    if path is None or isinstance(path, bool) or not str(path).strip():
        raise DataError(
            "data.path must name a .npz file holding x_train, y_train, x_eval, y_eval, "
            f"got {path!r}"
        )
    file = Path(os.path.expanduser(str(path))).resolve()
    if not file.is_file():
        raise DataError(f"data.path must be an existing .npz file, got {str(path)!r} ({file})")
    try:
        heads = npz_headers(file)
    except Exception as err:  # not a zip, truncated, a bad header
        raise DataError(
            f"data.path {file} is not a readable .npz ({type(err).__name__}: {err})"
        ) from None
    _check_npz_headers(file, heads)
    return _remember(("arrays", *_stat_key(file)), lambda: _read_arrays(file, heads))


def _read_arrays(file: Path, heads: dict[str, tuple[tuple[int, ...], np.dtype]]) -> Dataset:
    """The checked .npz read: its size checked against the host first (not when cached)."""
    nbytes = sum(
        int(np.prod(heads[k][0])) * (4 if k.startswith("x") else 8) for k in SPLITS
    )  # as float32 and int64
    check_fits(
        nbytes, "cpu", f"data.path {file}",
        "Save fewer samples (a subset) or fewer features, or use a machine with more memory",
    )  # fmt: skip
    at = _prefix(f"data.path {file}")
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in SPLITS}
    except Exception as err:  # object arrays, corrupt members
        raise DataError(
            f"data.path {file} could not be read ({type(err).__name__}: {err})"
        ) from None
    x = {}
    for key in ("x_train", "x_eval"):
        a = arrays[key]
        if a.dtype == np.uint8:
            x[key] = torch.from_numpy(a).float().div_(255.0)
            continue
        x[key] = torch.from_numpy(a.astype(np.float32, copy=False))  # bool -> 0/1
        _check_finite(x[key], at(key))
    _check_labels(arrays["y_train"], arrays["y_eval"], at)
    y = {k: torch.from_numpy(arrays[k].astype(np.int64)) for k in ("y_train", "y_eval")}
    return Dataset("arrays", x["x_train"], y["y_train"], x["x_eval"], y["y_eval"], source=str(file))


def batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """Yield index tensors of one shuffled epoch over ``n`` samples (last batch may be short)."""
    order = torch.randperm(n, generator=generator, device=generator.device).to(device)  # (n,)
    yield from order.split(batch_size)
