"""data=cifar10/cifar100, image_folder, arrays and a user's Dataset: values, errors, sizes.

Every fixture is made here (CIFAR-format pickles, ImageFolder trees of PNGs, .npz files);
nothing needs the network.
"""

from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import infoflow.training.data as data_module
from infoflow.training.data import (
    LIMIT_ENV,
    DataError,
    Dataset,
    check_dataset,
    check_fits,
    host_available,
    load_arrays,
    load_cifar10,
    load_cifar100,
    load_image_folder,
    memory_limit,
)

# ---------------------------------------------------------------------------------------------
# fixtures


def write_batch(path: Path, images: np.ndarray, labels, label_key: str, protocol: int) -> None:
    """A CIFAR batch as the published files hold it: bytes keys, b"data" (n, 3072) uint8."""
    batch = {b"data": images, label_key.encode(): list(labels), b"batch_label": b"a batch"}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def write_cifar10(root: Path, per_batch=(60, 40), n_eval=30, seed=0, protocol=2) -> dict:
    """torchvision's cifar-10-batches-py/ with data_batch_1..N of ``per_batch`` images."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    made = {"train": [], "eval": []}
    for i, n in enumerate([*per_batch, n_eval]):
        images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        labels[:2] = (0, 1)  # at least two classes in every split
        name = f"data_batch_{i + 1}" if i < len(per_batch) else "test_batch"
        write_batch(folder / name, images, labels, "labels", protocol)
        made["train" if i < len(per_batch) else "eval"].append((images, labels))
    return {k: tuple(np.concatenate(p) for p in zip(*v)) for k, v in made.items()}


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def image_tree(root: Path, eval_name: str = "eval", size=(6, 4)) -> dict[str, np.ndarray]:
    """train/{cat,dog} and <eval_name>/{cat,dog} of RGB PNGs, (H, W) = ``size``, known pixels."""
    rng = np.random.default_rng(1)
    pixels = {}
    for rel in (
        "train/cat/a.png",
        "train/cat/b.png",
        "train/cat/sub/c.png",
        "train/dog/a.png",
        "train/dog/b.png",
        f"{eval_name}/cat/x.png",
        f"{eval_name}/dog/y.png",
    ):
        pixels[rel] = rng.integers(0, 256, (*size, 3), dtype=np.uint8)  # (H, W, 3)
        write_png(root / rel, pixels[rel])
    (root / "train" / "cat" / "notes.txt").write_text("not an image")  # skipped by extension
    return pixels


def write_npz(path: Path, n=50, m=20, shape=(6,), seed=0, compressed=False, **override) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.random((n, *shape)).astype(np.float32),
        "y_train": np.arange(n) % 3,
        "x_eval": rng.random((m, *shape)).astype(np.float32),
        "y_eval": np.arange(m) % 3,
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    """Each test reads its files itself; the process cache is tested on purpose below."""
    monkeypatch.setattr(data_module, "_CACHE", {})
    monkeypatch.delenv(LIMIT_ENV, raising=False)


# ---------------------------------------------------------------------------------------------
# CIFAR


def test_cifar10_reads_any_number_of_images_in_nchw(tmp_path):
    made = write_cifar10(tmp_path)
    data = load_cifar10(root=str(tmp_path), download=False)
    assert data.name == "cifar10" and data.source == str(tmp_path / "cifar-10-batches-py")
    assert data.x_train.shape == (100, 3, 32, 32) and data.x_eval.shape == (30, 3, 32, 32)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    images, labels = made["train"]
    # row layout: 1024 red, then 1024 green, then 1024 blue, each 32x32 row-major
    i, r, c = 73, 5, 17  # image 73 is in the second batch file
    for channel in range(3):
        want = images[i, channel * 1024 + 32 * r + c] / 255.0
        assert float(data.x_train[i, channel, r, c]) == pytest.approx(want, abs=1e-7)
    assert torch.equal(data.x_train, torch.from_numpy(images).float().div(255).view(-1, 3, 32, 32))
    assert data.y_train.tolist() == labels.tolist()
    assert data.y_eval.tolist() == made["eval"][1].tolist()
    # root may also be the batches folder itself; same content, same fingerprint
    itself = load_cifar10(root=str(tmp_path / "cifar-10-batches-py"), download=False)
    assert itself.fingerprint == data.fingerprint


def test_cifar100_fine_labels_and_a_python3_pickle(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = rng.integers(0, 256, (80, 3072), dtype=np.uint8)
    fine = np.arange(80) % 100 + 19  # up to 98
    # str keys, numpy int64 labels, the newest protocol: a user's own subset
    (folder / "train").write_bytes(
        pickle.dumps(
            {"data": train, "fine_labels": list(fine), "coarse_labels": [0] * 80}, protocol=5
        )
    )
    write_batch(folder / "test", train[:10], fine[:10], "fine_labels", protocol=4)
    data = load_cifar100(root=str(tmp_path), download=False)
    assert data.name == "cifar100" and data.y_train.tolist() == fine.tolist()
    assert data.n_classes == 99 and len(data.y_eval) == 10
    assert torch.equal(data.x_eval, data.x_train[:10])


def test_cifar_normalize_uses_the_training_split_statistics(tmp_path):
    made = write_cifar10(tmp_path, per_batch=(50,), n_eval=20)
    raw = load_cifar10(root=str(tmp_path), download=False)
    norm = load_cifar10(root=str(tmp_path), download=False, normalize=True)
    train = made["train"][0].reshape(-1, 3, 32, 32) / 255.0
    mean, std = train.mean(axis=(0, 2, 3)), train.std(axis=(0, 2, 3))
    want = (made["eval"][0].reshape(-1, 3, 32, 32) / 255.0 - mean[None, :, None, None]) / std[
        None, :, None, None
    ]
    assert np.allclose(norm.x_eval.numpy(), want, atol=1e-5)
    per_channel = norm.x_train.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(per_channel.std(1, unbiased=False), torch.ones(3), atol=1e-5)
    assert norm.fingerprint != raw.fingerprint and float(raw.x_train.min()) >= 0.0


def test_cifar_batches_must_not_have_gaps(tmp_path):
    write_cifar10(tmp_path, per_batch=(10, 10, 10))
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").unlink()
    with pytest.raises(DataError, match=r"not data_batch_2: the training batches must be "):
        load_cifar10(root=str(tmp_path), download=False)


def test_cifar_absent_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(DataError) as err:
        load_cifar10(root=str(tmp_path), download=False)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "data.download=false" in message
    assert "data_batch_1..5 and test_batch" in message and "cifar-10-python.tar.gz" in message

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading cifar-10-python.tar.gz: no network")

    # a stand-in torchvision: the real one takes seconds to import and would try the network
    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(CIFAR100=offline)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    with pytest.raises(DataError) as err:
        load_cifar100(root=str(tmp_path), download=True)
    message = str(err.value)
    assert "the download failed (RuntimeError: Error downloading" in message
    assert str(tmp_path / "cifar-100-python") in message and "run once with network" in message


def test_cifar_download_goes_to_the_root_and_is_read_there(tmp_path, monkeypatch):
    calls = []

    def download(root, train, download):  # what torchvision's CIFAR10 leaves behind
        calls.append((root, train, download))
        write_cifar10(Path(root), per_batch=(20,), n_eval=10)

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(CIFAR10=download)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    monkeypatch.setattr(data_module, "DEFAULT_ROOT", str(tmp_path / "home"))
    data = load_cifar10()  # root null: the default folder, downloaded into
    assert calls == [(str(tmp_path / "home"), True, True)]
    assert data.source == str(tmp_path / "home" / "cifar-10-batches-py") and len(data.y_eval) == 10


@pytest.mark.parametrize(
    "batch,rule",
    [
        ({b"data": np.zeros((4, 3072), np.uint8)}, r"must hold the key 'labels'"),
        (
            {b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4},
            r"'data' must be uint8 "
            r"shaped \(n, 3072\), got uint8 \(4, 3000\)",
        ),
        (
            {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]},
            r"'labels' must hold "
            r"one label per image \(4\), got 3",
        ),
        (
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]},
            r"'labels' must hold "
            r"labels in 0..9, got 10",
        ),
        ([1, 2], r"must hold a dict, got list"),
    ],
)
def test_bad_cifar_batches_name_the_file_and_the_rule(tmp_path, batch, rule):
    write_cifar10(tmp_path, per_batch=(10,))
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=rule) as err:
        load_cifar10(root=str(tmp_path), download=False)
    assert str(bad) in str(err.value)


def test_a_pickle_naming_other_callables_is_refused(tmp_path):
    write_cifar10(tmp_path, per_batch=(10,))
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    bad.write_bytes(pickle.dumps({b"data": os.getcwd}))  # would run os.getcwd on load
    with pytest.raises(DataError, match=r"it names posix.getcwd, which a CIFAR batch never holds"):
        load_cifar10(root=str(tmp_path), download=False)


# ---------------------------------------------------------------------------------------------
# image_folder


def test_image_folder_classes_pixels_and_order(tmp_path):
    pixels = image_tree(tmp_path)
    data = load_image_folder(root=str(tmp_path))
    assert data.name == "image_folder" and data.source == str(tmp_path.resolve())
    assert data.x_train.shape == (5, 3, 6, 4) and data.x_eval.shape == (2, 3, 6, 4)
    # classes sorted by name (cat 0, dog 1), files sorted by path within a class
    assert data.y_train.tolist() == [0, 0, 0, 1, 1] and data.y_eval.tolist() == [0, 1]
    order = [
        "train/cat/a.png",
        "train/cat/b.png",
        "train/cat/sub/c.png",
        "train/dog/a.png",
        "train/dog/b.png",
    ]
    for i, rel in enumerate(order):  # PNG is lossless: exact values, (H, W, C) -> (C, H, W)
        want = torch.from_numpy(pixels[rel]).permute(2, 0, 1).float() / 255
        assert torch.equal(data.x_train[i], want)
    assert data.x_train.is_contiguous()


def test_image_folder_resizes_converts_and_accepts_val(tmp_path):
    solid = np.zeros((10, 7, 3), np.uint8) + np.array([200, 100, 50], np.uint8)
    for rel in ("train/a/1.png", "train/b/2.png", "val/a/3.png"):
        write_png(tmp_path / rel, solid)
    gray = Image.fromarray(solid[..., 0]).convert("L")  # another mode: converted to RGB
    gray.save(tmp_path / "train" / "b" / "3.png")
    data = load_image_folder(root=str(tmp_path), image_size=4)
    assert data.x_train.shape == (3, 3, 4, 4) and data.x_eval.shape == (1, 3, 4, 4)
    assert data.x_train[0, :, 2, 3].mul(255).round().tolist() == [200, 100, 50]  # solid stays
    assert data.x_train[2].mul(255).round().unique().tolist() == [200]  # L -> RGB: 3 equal planes
    one = load_image_folder(root=str(tmp_path), image_size=4, channels=1)
    luma = np.asarray(Image.fromarray(solid).convert("L"))[0, 0]  # PIL's ITU-R 601-2 luma
    assert one.x_train.shape == (3, 1, 4, 4)
    assert round(float(one.x_train[0, 0, 0, 0]) * 255) == luma


@pytest.mark.parametrize(
    "make,rule",
    [
        (
            lambda r: write_png(r / "eval/bird/z.png", np.zeros((6, 4, 3), np.uint8)),
            r"eval/bird is a class the training split lacks \(.*train has cat, dog\)",
        ),
        (
            lambda r: write_png(r / "train/dog/big.png", np.zeros((5, 5, 3), np.uint8)),
            r"data.image_size=null needs every image of one size, got .*train/dog/big.png of 5x5 "
            r"where the first is 4x6",
        ),
        (lambda r: (r / "val").mkdir(), r"must hold train/ and one of eval/ or val/.*got both"),
        (
            lambda r: (r / "train/cat/d.png").write_bytes(b"not a png"),
            r"train/cat/d.png could not be decoded \(UnidentifiedImageError",
        ),
        (lambda r: (r / "train/fish").mkdir(), r"train/fish must hold images"),
    ],
)
def test_bad_image_folders_name_the_file_and_the_rule(tmp_path, make, rule):
    image_tree(tmp_path)
    make(tmp_path)
    with pytest.raises(DataError, match=rule):
        load_image_folder(root=str(tmp_path))


@pytest.mark.parametrize(
    "kwargs,rule",
    [
        ({"root": None}, r"data.root must name a folder holding train/ and eval/"),
        ({"image_size": 0}, r"data.image_size must be an integer >= 1 or null, got 0"),
        ({"channels": 4}, r"data.channels must be 1 \(grayscale\) or 3 \(RGB\), got 4"),
    ],
)
def test_image_folder_keys_are_checked(tmp_path, kwargs, rule):
    image_tree(tmp_path)
    with pytest.raises(DataError, match=rule):
        load_image_folder(**{"root": str(tmp_path), **kwargs})


def test_image_folder_is_decoded_once_per_process(tmp_path, monkeypatch):
    image_tree(tmp_path)
    decoded = []
    real = data_module._decode_image
    monkeypatch.setattr(
        data_module, "_decode_image", lambda p, *a: decoded.append(p) or real(p, *a)
    )
    a = load_image_folder(root=str(tmp_path))
    b = load_image_folder(root=str(tmp_path / "train" / ".."))  # same folder, other spelling
    assert b is a and len(decoded) == 7
    load_image_folder(root=str(tmp_path), image_size=3)  # other settings: decoded again
    assert len(decoded) == 14
    write_png(tmp_path / "train" / "dog" / "new.png", np.zeros((6, 4, 3), np.uint8))
    os.utime(tmp_path / "train" / "dog", ns=(1, 1))  # the folder changed: read again
    c = load_image_folder(root=str(tmp_path))
    assert c is not a and len(decoded) == 22 and len(c.y_train) == len(a.y_train) + 1


# ---------------------------------------------------------------------------------------------
# arrays


def test_arrays_values_dtypes_and_shapes(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (12, 3, 4, 5), dtype=np.uint8)
    write_npz(
        tmp_path / "img.npz",
        x_train=images,
        y_train=np.arange(12, dtype=np.int32) % 4,
        x_eval=images[:5],
        y_eval=np.arange(5, dtype=np.uint8) % 4,
        compressed=True,
    )
    data = load_arrays(str(tmp_path / "img.npz"))
    assert data.name == "arrays" and data.source == str(tmp_path / "img.npz")
    assert data.x_train.shape == (12, 3, 4, 5) and data.in_shape == (3, 4, 5)
    assert torch.equal(data.x_train, torch.from_numpy(images).float() / 255)  # uint8 / 255
    assert data.y_train.dtype == torch.int64 and data.y_eval.tolist() == [0, 1, 2, 3, 0]
    feats = write_npz(tmp_path / "f.npz", x_eval=rng.random((20, 6)))  # float64: to float32
    f = load_arrays(str(tmp_path / "f.npz"))
    assert f.x_eval.dtype == torch.float32 and f.in_shape == (6,) and f.n_classes == 3
    assert torch.equal(f.x_eval, torch.from_numpy(feats["x_eval"].astype(np.float32)))
    assert torch.equal(f.x_train, torch.from_numpy(feats["x_train"]))


@pytest.mark.parametrize(
    "override,rule",
    [
        (
            {"x_eval": None},
            r"must hold the arrays x_train, y_train, x_eval, y_eval .*x_eval "
            r"missing, it holds x_train, y_eval, y_train",
        ),
        (
            {"y_train": np.arange(50) % 3 + 0.5},
            r"y_train must hold integer class indices 0..K-1, "
            r"got dtype float64",
        ),
        (
            {"x_train": np.zeros((50, 6), np.int32)},
            r"x_train must be float .* or uint8 .*got int32",
        ),
        (
            {"y_train": np.arange(49) % 3},
            r"y_train must hold one label per sample of .*x_train "
            r"\(50\), got 49",
        ),
        (
            {"x_eval": np.zeros((20, 7))},
            r"x_eval must hold samples of the training shape \(6,\), "
            r"got \(7,\)",
        ),
        ({"y_eval": np.arange(20) % 3 - 1}, r"y_eval must hold class indices 0..K-1, got label -1"),
        (
            {"y_eval": np.arange(20) % 4},
            r"y_eval must hold labels of the training split's classes "
            r"0..2 .*got label 3",
        ),
        ({"y_train": np.zeros(50, np.int64)}, r"y_train must hold at least 2 classes"),
        ({"x_train": np.full((50, 6), np.nan)}, r"x_train must hold finite values, got 300 NaN"),
        (
            {"x_train": np.zeros((50, 8, 8, 3)), "x_eval": np.zeros((20, 8, 8, 3))},
            r"x_train looks channel-last .* save x.transpose\(0, 3, 1, 2\)",
        ),
        ({"y_train": np.zeros((50, 1), np.int64)}, r"y_train must be shaped \(n,\)"),
        (
            {"x_eval": np.zeros((0, 6)), "y_eval": np.zeros(0, np.int64)},
            r"x_eval must hold at least one sample",
        ),
        (
            {"x_train": np.zeros(50), "x_eval": np.zeros(20)},
            r"x_train must be shaped \(n, features\) or \(n, channels, height, width\)",
        ),
    ],
)
def test_bad_arrays_name_the_file_the_key_and_the_rule(tmp_path, override, rule):
    path = tmp_path / "bad.npz"
    write_npz(path, **override)
    with pytest.raises(DataError, match=rule) as err:
        load_arrays(str(path))
    assert f"data.path {path}" in str(err.value)


def test_arrays_path_must_be_a_readable_npz(tmp_path):
    with pytest.raises(DataError, match=r"data.path must name a .npz file .*got None"):
        load_arrays(None)
    with pytest.raises(DataError, match=r"data.path must be an existing .npz file, got 'nope.npz'"):
        load_arrays("nope.npz")
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(DataError, match=r"x.npz is not a readable .npz \(BadZipFile"):
        load_arrays(str(tmp_path / "x.npz"))


def test_arrays_are_read_once_per_process(tmp_path, monkeypatch):
    write_npz(tmp_path / "d.npz")
    a = load_arrays(str(tmp_path / "d.npz"))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("read a second time"))
    assert load_arrays(str(tmp_path / "d.npz")) is a


# ---------------------------------------------------------------------------------------------
# sizes


def test_oversized_data_is_refused_before_reading(tmp_path, monkeypatch):
    write_npz(tmp_path / "d.npz")  # 50 x 6 + 20 x 6 float32 and 70 int64 labels: 2,240 bytes
    image_tree(tmp_path / "img")
    write_cifar10(tmp_path / "c", per_batch=(10,), n_eval=10)
    monkeypatch.setenv(LIMIT_ENV, "1000")
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("read before the size check"))
    monkeypatch.setattr(data_module, "_decode_image", lambda *a: pytest.fail("decoded"))
    monkeypatch.setattr(data_module, "read_cifar_batch", lambda *a: pytest.fail("unpickled"))
    with pytest.raises(DataError) as err:
        load_arrays(str(tmp_path / "d.npz"))
    message = str(err.value)
    assert f"data.path {tmp_path / 'd.npz'} takes 2.19 KiB (2,240 bytes)" in message
    assert "more than the 1000 B allowed there (set by INFOFLOW_DATA_LIMIT_BYTES)" in message
    assert "Save fewer samples (a subset)" in message
    with pytest.raises(
        DataError, match=r"7 images of 3x6x4\) takes .* Set a smaller data.image_size"
    ):
        load_image_folder(root=str(tmp_path / "img"))
    with pytest.raises(DataError, match=r"data=cifar10 in .* takes .* more than the 1000 B"):
        load_cifar10(root=str(tmp_path / "c"), download=False)


def test_device_limit_is_half_the_free_memory(monkeypatch):
    gib = 1024**3
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * gib, 80 * gib))
    cuda = torch.device("cuda")
    check_fits(4 * gib, cuda, "data=cifar10")  # fits under 5 GiB: silent
    with pytest.raises(DataError) as err:
        check_fits(6 * gib, cuda, "data=cifar10")
    message = str(err.value)
    assert "data=cifar10 takes 6.00 GiB (6,442,450,944 bytes) as whole tensors on cuda" in message
    assert "more than the 5.00 GiB allowed there (half of the 10.00 GiB free on cuda" in message
    assert "or runtime.device=cpu" in message
    assert memory_limit("cpu")[0] == host_available() // 2 > 0  # this machine's memory is known
    monkeypatch.setenv(LIMIT_ENV, "lots")
    with pytest.raises(DataError, match=r"INFOFLOW_DATA_LIMIT_BYTES must be a number of bytes"):
        check_fits(1, "cpu", "x")


def test_host_memory_is_capped_by_the_memory_cgroup(monkeypatch):
    gib = 1024**3
    files = {  # cgroup v1, as in a container or a Slurm job: limit 4 GiB, 1 GiB used
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": 4 * gib,
        "/sys/fs/cgroup/memory/memory.usage_in_bytes": gib,
    }
    monkeypatch.setattr(data_module, "_read_int", files.get)
    assert data_module._cgroup_room() == 3 * gib
    files["/sys/fs/cgroup/memory/memory.limit_in_bytes"] = 2**63 - 4096  # v1's "no limit"
    assert data_module._cgroup_room() is None
    monkeypatch.setattr(data_module, "_cgroup_room", lambda: 1000)
    assert host_available() == 1000


def test_nbytes_counts_the_four_tensors():
    data = Dataset(
        "t",
        torch.zeros(4, 3),
        torch.zeros(4, dtype=torch.int64),
        torch.zeros(2, 3),
        torch.zeros(2, dtype=torch.int64),
    )
    assert data.nbytes == (12 + 6) * 4 + (4 + 2) * 8


# ---------------------------------------------------------------------------------------------
# a user's Dataset


def good_dataset() -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(
        "mine",
        torch.rand(8, 1, 2, 2, generator=g),
        torch.arange(8) % 2,
        torch.rand(4, 1, 2, 2, generator=g),
        torch.arange(4) % 2,
        source="mine.py",
    )


@pytest.mark.parametrize(
    "change,rule",
    [
        (
            {"x_train": torch.rand(8, 4, dtype=torch.float64)},
            r"x_train must be torch.float32 "
            r"\(convert with .float\(\)\), got torch.float64",
        ),
        ({"y_eval": torch.arange(4, dtype=torch.int32) % 2}, r"y_eval must be torch.int64"),
        ({"y_train": torch.arange(7) % 2}, r"y_train must hold one label per sample"),
        (
            {"y_train": torch.arange(8) % 2 - 1},
            r"y_train must hold class indices 0..K-1, got label -1",
        ),
        ({"x_eval": torch.full((4, 1, 2, 2), float("inf"))}, r"x_eval must hold finite values"),
        ({"x_eval": torch.rand(4, 1, 2, 3)}, r"x_eval must hold samples of the training shape"),
        ({"x_train": np.zeros((8, 4))}, r"x_train must be a torch.Tensor, got ndarray"),
        ({"name": ""}, r"Dataset.name must be a non-empty string"),
    ],
)
def test_check_dataset_names_where_and_the_rule(change, rule):
    fields = {k: getattr(good_dataset(), k) for k in ("name", *data_module.SPLITS, "source")}
    bad = Dataset(**{**fields, **change})
    with pytest.raises(DataError, match=rule) as err:
        check_dataset(bad, "data._target_ mymod.load")
    assert str(err.value).startswith("data._target_ mymod.load")


def test_check_dataset_passes_a_good_one_once():
    data = good_dataset()
    assert check_dataset(data, "x") is data and data.__dict__["_checked"]
    with pytest.raises(DataError, match=r"mymod.load must return an infoflow.Dataset .*got "):
        check_dataset({"x_train": 1}, "data._target_ mymod.load")


# ---------------------------------------------------------------------------------------------
# end to end: each format through the CLI keeps the table, probe.samples and the cache


def only_table(root: Path) -> pd.DataFrame:
    (table,) = root.glob("**/mi.parquet")
    return pd.read_parquet(table)


def test_cli_arrays_with_probe_samples_all(cli, tmp_path):
    write_npz(tmp_path / "d.npz", n=60, m=24)
    proc = cli(
        "data=arrays",
        f"data.path={tmp_path / 'd.npz'}",
        "model=mlp1",
        "model.hidden=[8]",
        "trainer.epochs=1",
        "probe.samples=all",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr
    df = only_table(tmp_path / "run")
    assert (df.data == "arrays").all() and (df.data_source == str(tmp_path / "d.npz")).all()
    assert sorted(df.epoch) == [0, 1] and (df.n_samples == 84).all()  # both splits


def test_cli_cifar10_with_cnn_and_the_training_cache(cli, tmp_path):
    write_cifar10(tmp_path / "c", per_batch=(64,), n_eval=32)
    proc = cli(
        "data=cifar10",
        f"data.root={tmp_path / 'c'}",
        "data.download=false",
        "model=cnn",
        "model.channels=2",
        "trainer.epochs=1",
        f"runtime.cache.dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr
    df = only_table(tmp_path / "run")
    assert (df.data == "cifar10").all() and (df.n_samples == 32).all()
    assert (df.data_source == str(tmp_path / "c" / "cifar-10-batches-py")).all()
    assert sorted(set(df.epoch)) == [0, 1] and df.I_XT.notna().all()
    assert any((tmp_path / "cache").rglob("*")), "the training cache kept nothing"


def test_cli_image_folder(cli, tmp_path):
    image_tree(tmp_path / "img")
    proc = cli(
        "data=image_folder",
        f"data.root={tmp_path / 'img'}",
        "data.image_size=5",
        "model=mlp1",
        "model.hidden=[4]",
        "trainer.epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr
    df = only_table(tmp_path / "run")
    assert (df.data == "image_folder").all() and (df.n_samples == 2).all()
    assert (df.data_source == str((tmp_path / "img").resolve())).all()
