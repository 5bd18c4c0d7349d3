import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import infoflow.training.data as data_module
from infoflow.training.data import (
    DEBIAN_FASHION_MNIST,
    DataError,
    Dataset,
    batches,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    read_idx,
)

IDX_TYPES = {"uint8": (0x08, np.uint8), "int16": (0x0B, ">i2")}


def write_idx(path: Path, array: np.ndarray, gz: bool = False, dtype: str = "uint8") -> None:
    """Write ``array`` as an IDX file, the format of MNIST (unsigned bytes unless ``dtype``)."""
    code, np_dtype = IDX_TYPES[dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    raw = header + np.asarray(array).astype(np_dtype).tobytes()
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


@pytest.mark.parametrize(
    "test_size, seed, stratified",
    [(0.2, 0, True), (0.2, 1, True), (0.3, 7, True), (0.05, 3, True), (0.2, 0, False),
     (0.33, 5, False)],
)  # fmt: skip
def test_splits_and_digits_are_scikit_learns_without_importing_it(test_size, seed, stratified):
    """The digits and the splits are read and drawn without scikit-learn (its import costs
    about 2 s of every job's start), and are exactly what scikit-learn gives."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images, target = data_module.digits_arrays()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(target, bunch.target)
    y = bunch.target
    strata = y if stratified else None
    ref_train, ref_test = train_test_split(
        np.arange(len(y)), test_size=test_size, random_state=seed, stratify=strata
    )
    train, test = data_module.split_indices(len(y), test_size, seed, strata)
    np.testing.assert_array_equal(train, ref_train)
    np.testing.assert_array_equal(test, ref_test)


@pytest.mark.parametrize("counts", [(2, 2, 2), (3, 3, 3, 5, 5, 7), (2, 9, 4, 4, 13), (50, 2)])
@pytest.mark.parametrize("test_size", [0.25, 0.4, 0.5])
def test_stratified_splits_break_ties_as_scikit_learn_does(counts, test_size):
    """Small uneven classes: many classes tie for the rounded-off draws, which the seeded
    generator breaks; the copy must draw the same numbers in the same order."""
    from sklearn.model_selection import train_test_split

    y = np.random.RandomState(len(counts)).permutation(np.repeat(np.arange(len(counts)), counts))
    for seed in range(5):
        try:
            ref = train_test_split(
                np.arange(len(y)), test_size=test_size, random_state=seed, stratify=y
            )
        except ValueError:  # a split that cannot hold every class: ours refuses it too
            with pytest.raises(DataError, match="at least one sample of each"):
                data_module.split_indices(len(y), test_size, seed, y)
            continue
        for got, want in zip(data_module.split_indices(len(y), test_size, seed, y), ref):
            np.testing.assert_array_equal(got, want)


def test_loading_digits_and_tishby_imports_no_scikit_learn():
    code = (
        "import sys; from infoflow.training.data import load_digits, load_tishby; load_digits(); "
        "load_tishby(); assert 'sklearn' not in sys.modules, 'sklearn imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"test_size": 1.5}, r"data.test_size must be in \(0, 1\), got 1.5"),
        ({"test_size": "half"}, r"data.test_size must be a number in \(0, 1\), got 'half'"),
        ({"test_size": 0.001}, r"data.test_size must leave at least one sample of each of the 10"),
        ({"split_seed": -1}, r"data.split_seed must be an integer >= 0, got -1"),
    ],
)
def test_digits_bad_keys_are_data_errors(kwargs, message):
    with pytest.raises(DataError, match=message) as err:
        load_digits(**kwargs)
    assert "\n" not in str(err.value)


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
def test_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "DEFAULT_ROOT", str(tmp_path))  # empty: Debian's is next
    data = load_fashion_mnist(root=None, download=False)
    assert data.source == DEBIAN_FASHION_MNIST
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_eval.shape == (10000, 1, 28, 28)
    assert data.n_classes == 10
    assert torch.bincount(data.y_eval).tolist() == [1000] * 10
    assert 0.0 == float(data.x_train.min()) and float(data.x_train.max()) == 1.0


# ---------------------------------------------------------------------------------------------
# fingerprint and source


def tiny_dataset(seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(12, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (12,), generator=g)
    return Dataset("tiny", x[:8], y[:8], x[8:], y[8:])  # positional, as other loaders build it


def test_fingerprint_follows_the_content():
    a, b = tiny_dataset(), tiny_dataset()
    assert a is not b and a.fingerprint == b.fingerprint
    assert len(a.fingerprint) == 64 and int(a.fingerprint, 16) >= 0  # hex SHA-256
    assert a.source == "" and b.name == "tiny"
    assert tiny_dataset(seed=1).fingerprint != a.fingerprint
    pixel = a.x_eval.clone()
    pixel[3, 0, 2, 1] += 1 / 255
    label = a.y_train.clone()
    label[5] = (label[5] + 1) % 3
    for changed in (
        Dataset("tiny", a.x_train, a.y_train, pixel, a.y_eval),
        Dataset("tiny", a.x_train, label, a.x_eval, a.y_eval),
        Dataset("tiny", a.x_train.reshape(8, 1, 2, 8), a.y_train, a.x_eval.reshape(4, 1, 2, 8),
                a.y_eval),  # same bytes, other shape
        Dataset("tiny", a.x_train.double(), a.y_train, a.x_eval.double(), a.y_eval),
        Dataset("tiny", a.x_eval, a.y_eval, a.x_train, a.y_train),  # splits swapped
    ):  # fmt: skip
        assert changed.fingerprint != a.fingerprint
    # the name and the source are labels, not content
    assert Dataset("other", *[getattr(a, k) for k in data_module.SPLITS], source="x").fingerprint \
        == a.fingerprint  # fmt: skip


def counting_sha256(monkeypatch) -> list:
    calls = []
    real = hashlib.sha256

    def sha256(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(data_module.hashlib, "sha256", sha256)
    return calls


def test_fingerprint_is_computed_once_per_object_and_kept_by_to(monkeypatch):
    calls = counting_sha256(monkeypatch)
    a = tiny_dataset()
    first = a.fingerprint
    assert a.fingerprint == first and a.fingerprint is first and len(calls) == 1
    assert a.to("cpu") is a  # already there: the same object, the same cached fingerprint
    moved = a.to("meta")  # a device without data: the fingerprint can only have been carried
    assert moved.x_train.device.type == "meta" and moved.fingerprint == first
    assert len(calls) == 1


def test_idx_loads_share_one_object_and_hash_once(tmp_path, monkeypatch):
    write_tiny_mnist(tmp_path, gz=True)
    calls = counting_sha256(monkeypatch)
    fingerprints = {load_mnist(root=str(tmp_path), download=False).fingerprint for _ in range(3)}
    assert len(fingerprints) == 1 and len(calls) == 1


def test_idx_fingerprint_changes_with_one_label_and_not_with_the_folder(tmp_path):
    arrays = write_tiny_mnist(tmp_path / "a", gz=False)
    write_tiny_mnist(tmp_path / "b" / "MNIST" / "raw", gz=True)  # same arrays, other layout
    a = load_mnist(root=str(tmp_path / "a"), download=False)
    b = load_mnist(root=str(tmp_path / "b"), download=False)
    assert a.source == str(tmp_path / "a") and b.source == str(tmp_path / "b" / "MNIST" / "raw")
    assert a.fingerprint == b.fingerprint
    labels = arrays["t10k-labels-idx1-ubyte"].copy()
    labels[0] = (labels[0] + 1) % 10
    write_idx(tmp_path / "a" / "t10k-labels-idx1-ubyte", labels)  # size unchanged: mtime differs
    os.utime(tmp_path / "a" / "t10k-labels-idx1-ubyte", ns=(1, 1))
    c = load_mnist(root=str(tmp_path / "a"), download=False)
    assert c.y_eval[0] == labels[0] and c.fingerprint != a.fingerprint


def test_digits_records_its_source_and_a_stable_fingerprint():
    a, b = load_digits(), load_digits()
    assert a.source == "sklearn.datasets.load_digits"
    assert a.fingerprint == b.fingerprint != load_digits(split_seed=1).fingerprint


# ---------------------------------------------------------------------------------------------
# data.root: null searches the default places; an explicit root is the only place


@pytest.fixture
def debian(tmp_path, monkeypatch):
    """A stand-in for Debian's Fashion-MNIST folder and an empty default root."""
    folder = tmp_path / "debian"
    write_tiny_mnist(folder, gz=True, seed=7)
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", str(folder))
    monkeypatch.setattr(data_module, "DEFAULT_ROOT", str(tmp_path / "home-cache"), raising=False)
    return folder


def test_explicit_root_without_data_is_an_error_not_a_fallback(tmp_path, debian):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as err:
        load_fashion_mnist(root=str(empty), download=False)
    msg = str(err.value)
    assert "data.root" in msg and str(empty) in msg and "only place searched" in msg
    assert str(debian) not in msg and "\n" not in msg


def test_root_that_is_a_file_is_an_error(tmp_path, debian):
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    for download in (False, True):
        with pytest.raises(DataError) as err:
            load_fashion_mnist(root=str(passwd), download=download)
        msg = str(err.value)
        assert msg.startswith("data.root must be a folder") and str(passwd) in msg
        assert "which is a file" in msg and "\n" not in msg


def test_null_root_searches_the_default_then_debian(tmp_path, debian):
    data = load_fashion_mnist(root=None, download=False)
    assert data.source == str(debian) and len(data.y_train) == 20
    home = tmp_path / "home-cache" / "FashionMNIST" / "raw"
    write_tiny_mnist(home, gz=False, n_train=6)
    data = load_fashion_mnist(root=None, download=False)
    assert data.source == str(home) and len(data.y_train) == 6  # the default comes first


def test_null_root_without_data_names_every_place(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "DEFAULT_ROOT", str(tmp_path / "home"))
    with pytest.raises(DataError) as err:
        load_mnist(root=None, download=False)
    msg = str(err.value)
    assert "data.root=null searches" in msg and str(tmp_path / "home") in msg
    assert str(tmp_path / "home" / "MNIST" / "raw") in msg and "data.download=false" in msg


def fake_download(calls: list):
    """A torchvision data set class that 'downloads' tiny IDX files into <root>/<Class>/raw."""

    def FashionMNIST(root, train, download):  # torchvision's class name
        calls.append(root)
        write_tiny_mnist(Path(root) / "FashionMNIST" / "raw", gz=True, n_train=4, seed=3)

    return FashionMNIST


@pytest.mark.parametrize("explicit", [True, False])
def test_download_goes_to_the_root_searched(tmp_path, debian, monkeypatch, explicit):
    import torchvision.datasets as tvd

    calls = []
    monkeypatch.setattr(tvd, "FashionMNIST", fake_download(calls))
    if explicit:
        root = tmp_path / "mine"
        data = load_fashion_mnist(root=str(root), download=True)
    else:  # null: Debian's copy is found before any download
        root = tmp_path / "home-cache"
        data = load_fashion_mnist(root=None, download=True)
    if explicit:
        assert calls == [str(root)] * 2 and len(data.y_train) == 4
        assert data.source == str(root / "FashionMNIST" / "raw")
    else:
        assert calls == [] and data.source == str(debian)


def test_bad_root_and_download_values(tmp_path):
    for root in ("", True, ["a"]):
        with pytest.raises(DataError, match=r"data.root must be a folder or null"):
            load_mnist(root=root, download=False)
    with pytest.raises(DataError, match=r"data.download must be true or false, got 'yes'"):
        load_mnist(root=str(tmp_path), download="yes")


def test_failed_download_message_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading\nline two\n  line three")

    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(DataError) as err:
        load_mnist(root=str(tmp_path), download=True)
    msg = str(err.value)
    assert "\n" not in msg and "Error downloading line two line three" in msg


# ---------------------------------------------------------------------------------------------
# IDX files that do not make a data set


def broken(folder: Path, **replace) -> None:
    """Tiny MNIST files in ``folder`` with some arrays replaced (by file stem)."""
    write_tiny_mnist(folder, gz=False)
    for stem, (array, dtype) in replace.items():
        write_idx(folder / stem.replace("_", "-"), array, dtype=dtype)


U8 = "uint8"


@pytest.mark.parametrize(
    "replace, file, message",
    [
        ({"train_labels_idx1_ubyte": (np.zeros(400), U8),
          "train_images_idx3_ubyte": (np.zeros((512, 28, 28)), U8)},
         "train-labels-idx1-ubyte", "must hold one label per image of .*train-images-idx3-ubyte "
         r"\(512\), got 400 labels"),
        ({"t10k_images_idx3_ubyte": (np.zeros((10, 28, 27)), U8)},
         "t10k-images-idx3-ubyte", r"must hold images of the training shape \(28, 28\) .*got "
         r"\(28, 27\)"),
        ({"t10k_images_idx3_ubyte": (np.zeros((10, 784)), U8)},
         "t10k-images-idx3-ubyte", r"must hold 3-D images \(n, height, width\), got shape "
         r"\(10, 784\)"),
        ({"train_labels_idx1_ubyte": (np.zeros((20, 1)), U8)},
         "train-labels-idx1-ubyte", r"must hold 1-D labels \(n,\), got shape \(20, 1\)"),
        ({"t10k_labels_idx1_ubyte": (np.r_[np.zeros(9), 255], U8)},
         "t10k-labels-idx1-ubyte", r"must hold labels in 0..9 \(10 classes\), got 255"),
        ({"train_labels_idx1_ubyte": (np.r_[np.zeros(19), 10], U8)},
         "train-labels-idx1-ubyte", r"must hold labels in 0..9 \(10 classes\), got 10"),
        ({"train_images_idx3_ubyte": (np.zeros((20, 28, 28)), "int16")},
         "train-images-idx3-ubyte", r"must hold unsigned bytes \(IDX type 0x08\), got >i2"),
        ({"train_images_idx3_ubyte": (np.zeros((0, 28, 28)), U8),
          "train_labels_idx1_ubyte": (np.zeros(0), U8)},
         "train-images-idx3-ubyte", "must hold at least one sample, got 0"),
    ],
)  # fmt: skip
def test_inconsistent_idx_files_are_data_errors(tmp_path, replace, file, message):
    broken(tmp_path, **replace)
    with pytest.raises(DataError, match=message) as err:
        load_mnist(root=str(tmp_path), download=False)
    msg = str(err.value)
    assert msg.startswith(f"data.root: {tmp_path / file} ") and "\n" not in msg


def test_corrupt_idx_files_name_the_key_and_file(tmp_path):
    write_tiny_mnist(tmp_path, gz=True)
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:40])  # a cut-off download
    with pytest.raises(DataError) as err:
        load_mnist(root=str(tmp_path), download=False)
    assert str(err.value).startswith(f"data.root: {gz} could not be read (EOFError")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="header of 3 dimensions is cut short"):
        read_idx(tmp_path / "short")


def test_fingerprint_benchmark_runs(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    write_tiny_mnist(tmp_path / "idx", gz=True)
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "bench_fingerprint.py"), "--reps", "2",
         "--root", str(tmp_path / "idx")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("fashion_mnist: 0.1 MB; fingerprint (SHA-256) ")
    assert "reading the IDX files" in lines[0] and lines[1].startswith("digits: 0.5 MB")
