"""renyi and sliced on a wide layer against a torchvision resnet18 training epoch (issue 23).

A CIFAR ResNet probes layers of tens of thousands of units (a CIFAR-style ResNet-18's first
stage: 64 x 32 x 32 = 65,536). This measures, at the estimators' defaults, one estimate of a
(10,000 x 65,536) float32 layer on CIFAR-sized inputs (10,000 x 3 x 32 x 32, ten labels):

* its wall and CPU time, the first evaluation of a job (X's side computed, memo cleared) and
  a later one (X's side reused), best of ``--repeat``;
* its peak memory above the baseline: ``ru_maxrss`` of a fresh process after the estimate
  minus before it (the layer, X and Y already made in place, one small warm-up estimate run,
  so the libraries' own start-up is not counted; tracemalloc cannot see torch's memory);
* a torchvision ``resnet18(num_classes=10)`` training epoch in the same process: SGD
  (lr 0.1, momentum 0.9), batch 128, on ``--epoch-images`` random 3 x 32 x 32 images after one
  untimed warm-up step, scaled linearly to CIFAR-10's 50,000 training images.

Each estimator runs in its own process (a peak is a process's high-water mark). The layer:
``relu`` (default), a post-ReLU map with structure, ``relu(H W + 0.5 E - 0.2)`` with H the
inputs through a random 3,072 x 32 map, W random 32 x units and E Gaussian noise: about 60% of
its values are 0; or ``gaussian``, i.i.d. N(0, 1) values.

    python benchmarks/bench_wide.py                       # renyi, sliced: 10,000 x 65,536
    python benchmarks/bench_wide.py --estimators binning,renyi,sliced --repeat 3
    python benchmarks/bench_wide.py --calibrate           # the rates of estimators/cost.py

Prints a table (date, machine, torch threads) whose shares are the estimate over the scaled
epoch, in wall time and in CPU time (this process, all threads).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

import torch

CIFAR_TRAIN = 50_000


def _rss_peak_mb() -> float:
    """This process's peak resident memory so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_inputs(n: int, units: int, kind: str, seed: int = 0):
    """X (n, 3, 32, 32), Y (n,) in 0..9 and a float32 layer T (n, units), made in place (no
    temporary of the layer's size, so the baseline's high-water mark is the layer itself)."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn((n, 3, 32, 32), generator=gen)
    Y = torch.randint(0, 10, (n,), generator=gen)
    T = torch.randn((n, units), generator=gen)  # (n, units)
    if kind == "relu":
        H = X.flatten(1) @ torch.randn((3 * 32 * 32, 32), generator=gen) / math.sqrt(3072)
        W = torch.randn((32, units), generator=gen) / math.sqrt(32)
        for rows, h in zip(T.split(256), H.split(256)):  # blocks: addmm_ makes a temporary
            rows.mul_(0.5).addmm_(h, W).sub_(0.2).relu_()  # (256, units) in place
    return X, Y, T


def zero_share(T: torch.Tensor) -> float:
    """The share of exact zeros in T, counted in row blocks (no temporary of T's size)."""
    return sum(int((rows == 0).sum()) for rows in T.split(256)) / T.numel()


def _timed(f, *args, **kwargs) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    f(*args, **kwargs)
    return time.perf_counter() - w0, time.process_time() - c0


def epoch_subset(images: int, batch: int) -> tuple[float, float]:
    """(wall, CPU) seconds of a resnet18 training pass over ``images`` random CIFAR images."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn((images, 3, 32, 32))
    y = torch.randint(0, 10, (images,))
    model.train()

    def step(idx: torch.Tensor) -> None:
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(torch.arange(batch))  # warm-up: first-call allocations and kernel selection

    def epoch() -> None:
        for idx in torch.randperm(images).split(batch):
            step(idx)

    return _timed(epoch)


def child(args: argparse.Namespace) -> None:
    """One estimator in this fresh process: its time and peak memory, then the epoch."""
    from infoflow import estimators
    from infoflow.estimators import _memo

    est = functools.partial(getattr(estimators, args.child), **json.loads(args.params))
    X, Y, T = make_inputs(args.n, args.units, args.layer)
    small = make_inputs(300, 64, "relu", seed=1)
    est(small[2], small[0], small[1])  # warm-up on a small layer: libraries' start-up
    _memo.clear()
    rss_before, peak_before = _rss_now_mb(), _rss_peak_mb()
    first = _timed(est, T, X, Y)
    later = [_timed(est, T, X, Y) for _ in range(args.repeat)]
    peak_after = _rss_peak_mb()
    out = est(T, X, Y)
    zeros = zero_share(T)
    epoch = epoch_subset(args.epoch_images, args.batch)
    print(
        json.dumps(
            {
                "estimator": args.child,
                "first": first,
                "later": min(later),
                "rss_before": rss_before,
                "peak_before": peak_before,
                "peak_after": peak_after,
                "epoch": epoch,
                "zeros": zeros,
                "I_XT": out["I_XT"],
                "I_TY": out["I_TY"],
            }
        )
    )


def run(args: argparse.Namespace) -> None:
    scale = CIFAR_TRAIN / args.epoch_images
    print(
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} torch "
        f"threads, load average {os.getloadavg()[0]:.1f}\n"
        f"layer: {args.n:,} x {args.units:,} float32 ({args.layer}), "
        f"{args.n * args.units * 4 / 2**30:.2f} GiB; X: {args.n:,} x 3 x 32 x 32; "
        f"epoch: resnet18 on {args.epoch_images:,} images, batch {args.batch}, x {scale:.2f} "
        f"for {CIFAR_TRAIN:,}\n"
    )
    print(
        "| estimator (defaults) | first: wall / CPU | later: wall / CPU | peak - baseline "
        "| epoch (scaled): wall / CPU | share, first: wall / CPU | share, later: wall / CPU |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.estimators.split(","):
        cmd = [sys.executable, __file__, "--child", name, "--n", str(args.n)]
        cmd += ["--units", str(args.units), "--layer", args.layer, "--repeat", str(args.repeat)]
        cmd += ["--epoch-images", str(args.epoch_images), "--batch", str(args.batch)]
        cmd += ["--params", args.params]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"| {name} | failed (exit {proc.returncode}): {proc.stderr[-300:]!r} |")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        ew, ec = (t * scale for t in r["epoch"])
        peak = r["peak_after"] - max(r["peak_before"], r["rss_before"])
        (fw, fc), (lw, lc) = r["first"], r["later"]
        print(
            f"| {name} | {fw:.2f} s / {fc:.2f} s | {lw:.2f} s / {lc:.2f} s | {peak:,.0f} MiB "
            f"| {ew:.0f} s / {ec:.0f} s | {fw / ew:.1%} / {fc / ec:.1%} "
            f"| {lw / ew:.1%} / {lc / ec:.1%} |",
            flush=True,
        )
        print(
            f"  ({name}: I_XT {r['I_XT']:.4f}, I_TY {r['I_TY']:.4f} bits; layer {r['zeros']:.0%}"
            f" zeros; baseline {r['rss_before']:,.0f} MiB resident, high-water "
            f"{r['peak_before']:,.0f} MiB)",
            flush=True,
        )


def _best(repeat: int, f, *args, **kwargs) -> float:
    """The least CPU time (this process, all threads) of ``repeat`` calls: on the shared
    machine wall times moved 3x with other jobs' load, CPU times far less; on an idle machine
    the wall time is at most the CPU time (with one thread: about equal)."""
    return min(_timed(f, *args, **kwargs)[1] for _ in range(repeat))


def calibrate(repeat: int = 3) -> None:
    """The rates of ``infoflow/estimators/cost.py``: CPU seconds per unit of each estimator's
    dominant work, on moderate layers (best of ``repeat``, X's side memoised)."""
    from infoflow.estimators import binning, kde, renyi, sliced

    def layer(n: int, d: int):
        return make_inputs(n, d, "relu", seed=2)

    X, Y, T = layer(2000, 65536)
    renyi(T, X, Y)  # X's side in the memo
    t = _best(repeat, renyi, T, X, Y)
    rates = {"renyi_gram": t / (4 * 256 * 256 * 65536)}
    t_bin = _best(repeat, binning, T, X, Y)
    rates["binning"] = t_bin / T.numel()
    X, Y, T = layer(2048, 64)
    renyi(T, X, Y, batch_size=1024, batches=2)
    t = _best(repeat, renyi, T, X, Y, batch_size=1024, batches=2)
    rates["renyi_eig"] = t / (2 * 2 * 1024**3)
    X, Y, T = layer(10_000, 64)
    sliced(T, X, Y)
    t_slice = _best(repeat, sliced, T, X, Y)
    rates["sliced_slice"] = t_slice / (10_000 * 128)
    X, Y, T = layer(4000, 65536)
    sliced(T, X, Y)
    t = _best(repeat, sliced, T, X, Y) - rates["sliced_slice"] * 4000 * 128
    rates["sliced_proj"] = t / (4000 * 65536 * 128)
    X, Y, T = layer(1000, 65536)
    rates["quantile"] = _best(repeat, binning, T, X, Y, strategy="quantile") / T.numel()
    X, Y, T = layer(2000, 8192)
    for name, precision in (("kde_pair32", "float32"), ("kde_pair64", "float64")):
        t = _best(repeat, kde, T, X, Y, mc_samples=0, precision=precision)
        rates[name] = t / (2000 * 2000 * 8192 / 2)
    t = _best(repeat, kde, T, X, Y)  # bounds and Monte Carlo, as cost.py models them
    print(f"{datetime.date.today()}, {torch.get_num_threads()} torch threads, best of {repeat}")
    print(
        f"kde, mc_samples=N, 2000 x 8192: {t:.2f} s, modelled "
        f"{rates['kde_pair32'] * 2000 * 2000 * 8192 * 1.5:.2f} s"
    )
    for name, rate in rates.items():
        print(f"    {name!r}: {rate:.2g},")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimators", default="renyi,sliced")
    parser.add_argument("--n", type=int, default=10_000, help="samples")
    parser.add_argument("--units", type=int, default=65_536, help="units of the layer")
    parser.add_argument("--layer", choices=("relu", "gaussian"), default="relu")
    parser.add_argument("--repeat", type=int, default=2, help="later evaluations, best of")
    parser.add_argument("--epoch-images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--params", default="{}", help='estimator keys as JSON: {"bins": 10}')
    parser.add_argument("--calibrate", action="store_true", help="estimators/cost.py's rates")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
    elif args.calibrate:
        calibrate(args.repeat)
    else:
        run(args)


if __name__ == "__main__":
    main()
