"""Cost of ``Dataset.fingerprint`` (the data content in the training cache key).

Side by side in one process, interleaved, each repetition on a fresh ``Dataset`` object (the
property is cached per object): the fingerprint as implemented (SHA-256 over the four tensors'
dtype, shape and bytes), the same bytes through BLAKE2b, and decoding the IDX files it fingerprints
(what every process pays anyway).

    python benchmarks/bench_fingerprint.py --reps 5

Needs the Fashion-MNIST IDX files (``apt-get install dataset-fashion-mnist``, or ``--root``);
digits ships with scikit-learn.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from infoflow.training.data import (
    DEBIAN_FASHION_MNIST,
    SPLITS,
    Dataset,
    find_idx,
    load_digits,
    load_fashion_mnist,
    read_idx,
)


def blake2b(data: Dataset) -> str:
    """The fingerprint's bytes through BLAKE2b, the alternative it was chosen over."""
    h = hashlib.blake2b()
    for key in SPLITS:
        t = getattr(data, key).contiguous()
        h.update(f"{key} {t.dtype} {tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


def seconds(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def fingerprint(data: Dataset) -> str:
    return data.fingerprint


def decode(files: dict) -> list:
    return [read_idx(f) for f in files.values()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=DEBIAN_FASHION_MNIST)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    sets = {"fashion_mnist": load_fashion_mnist(root=args.root, download=False)}
    sets["digits"] = load_digits()
    files = find_idx(Path(sets["fashion_mnist"].source))
    for name, data in sets.items():
        mb = sum(getattr(data, k).numel() * getattr(data, k).element_size() for k in SPLITS) / 1e6
        times: dict[str, list[float]] = {"sha256": [], "blake2b": [], "cached": [], "decode": []}
        for _ in range(args.reps):
            fresh = replace(data)  # a new object: nothing cached
            times["sha256"].append(seconds(fingerprint, fresh))
            times["cached"].append(seconds(fingerprint, fresh))
            times["blake2b"].append(seconds(blake2b, data))
            if name == "fashion_mnist" and files:
                times["decode"].append(seconds(decode, files))
        med = {k: statistics.median(v) for k, v in times.items() if v}
        line = (
            f"{name}: {mb:.1f} MB; fingerprint (SHA-256) {med['sha256'] * 1e3:.1f} ms, "
            f"BLAKE2b {med['blake2b'] * 1e3:.1f} ms ({med['blake2b'] / med['sha256']:.2f}x), "
            f"cached access {med['cached'] * 1e6:.1f} us"
        )
        if "decode" in med:
            line += f"; reading the IDX files {med['decode'] * 1e3:.0f} ms"
        print(line + f" (medians of {args.reps})")


if __name__ == "__main__":
    main()
