"""Datasets as whole tensors: loaded once, moved to the job's device, sliced into batches.

Images are float32 in [0, 1] with shape (n, channels, height, width); feature data sets
(``tishby``: 12 bits per pattern) have shape (n, features); labels are int64.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import math
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from infoflow.errors import UserError


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


# In-process cache of decoded IDX data sets: Hydra's basic launcher runs a sweep's jobs one after
# another in ONE process, and every job instantiates its data set; decoding Fashion-MNIST again
# would cost every job what the first paid (docs/speed.md), and sharing the object shares its
# fingerprint (hashed once). Keyed by
# each file's path, size and mtime, so a rewritten file is read again. Holds at most
# _IDX_CACHE_SIZE data sets (Fashion-MNIST: 220 MB of float32 each).
_IDX_CACHE: dict[tuple, Dataset] = {}
_IDX_CACHE_SIZE = 2


def load_idx_folder(name: str, files: dict[str, Path], n_classes: int = IDX_CLASSES) -> Dataset:
    """The data set in the four IDX ``files``, checked (``check_idx``) and decoded once per
    process (see ``_IDX_CACHE``).

    Jobs of one process share the returned tensors: callers must not modify them in place
    (``Dataset.to`` and batch indexing copy; clone before editing, as the tests do).
    """
    key = (name, *((k, str(p), p.stat().st_size, p.stat().st_mtime_ns) for k, p in files.items()))
    if key not in _IDX_CACHE:
        try:
            arrays = {k: read_idx(p) for k, p in files.items()}
        except DataError as err:
            raise DataError(f"data.root: {err}") from None
        check_idx(arrays, files, n_classes)
        source = str(files["x_train"].parent)
        while len(_IDX_CACHE) >= _IDX_CACHE_SIZE:
            _IDX_CACHE.pop(next(iter(_IDX_CACHE)))  # oldest first
        _IDX_CACHE[key] = _from_uint8(name, source, *(arrays[k] for k in IDX_FILES))
    return _IDX_CACHE[key]


DEFAULT_ROOT = "~/.cache/infoflow/data"
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
_STEMS = ", ".join(f"{s}[.gz]" for s in IDX_FILES.values())


def _load_torchvision(
    name: str, tv_class: str, root: str | None, download: bool, defaults: tuple[str, ...]
) -> Dataset:
    """The data set from ``root`` (flat or ``<tv_class>/raw``), downloaded there if allowed.

    ``root=None`` searches ``DEFAULT_ROOT`` then ``defaults`` and downloads into
    ``DEFAULT_ROOT``; an explicit root is the only place searched and downloaded into.
    """
    if not isinstance(download, bool):
        raise DataError(f"data.download must be true or false, got {download!r}")
    # Hydra reads data.root=2024 as an int; a folder may have that name, a bool is a mistake
    folder_like = isinstance(root, (str, int, os.PathLike)) and not isinstance(root, bool)
    if root is not None and (not folder_like or not str(root).strip()):
        raise DataError(f"data.root must be a folder or null, got {root!r}")
    target = Path(os.path.expanduser(str(root if root is not None else DEFAULT_ROOT)))
    shown = repr(str(root)) if root is not None else f"null (the default, {target})"
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


def batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """Yield index tensors of one shuffled epoch over ``n`` samples (last batch may be short)."""
    order = torch.randperm(n, generator=generator, device=generator.device).to(device)  # (n,)
    yield from order.split(batch_size)
