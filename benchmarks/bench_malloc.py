"""What keeping freed host memory (``infoflow.training.device.keep_freed_memory``) saves.

The real CLI, run as a subprocess with the setting (as shipped) and without it (the same
command with the call replaced by a no-op: glibc's defaults), interleaved, ``--reps`` times:

* ``--what single`` (the default): one job, ``model=cnn data=fashion_mnist trainer.epochs=E``;
* ``--what sweep``: the first sweep on Fashion-MNIST (the 8 jobs of ``bench_sweep.py``);
* ``--data digits``: the same on the offline default data set, a quick check;
* ``--what steps``: training steps alone, in a process of their own, on random inputs: the
  CNN (batch 256, 1x28x28) and torchvision's ``resnet18`` (batch 128, 3x32x32, CIFAR's size),
  ms and page faults per step, the best of 5 rounds of 10 steps.

For each run: wall seconds, the training and estimate seconds the jobs log, the process's
minor page faults and system CPU seconds, and its peak resident size (``os.wait4``). The
tables of both variants are compared: they must be equal (the setting changes no number).

    python benchmarks/bench_malloc.py                     # one CNN job, 2 epochs, 2 reps
    python benchmarks/bench_malloc.py --what sweep --epochs 5 --reps 1

Needs the Fashion-MNIST IDX files (``apt-get install dataset-fashion-mnist``) but for
``--data digits``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

# the CLI with keep_freed_memory() a no-op: what a process gets at glibc's defaults
DEFAULTS = (
    "import sys, infoflow.sweep.runner as r; r.keep_freed_memory = lambda: False; "
    "from infoflow.__main__ import cli; sys.argv[0] = 'infoflow'; cli()"
)
KEPT = "import sys; from infoflow.__main__ import cli; sys.argv[0] = 'infoflow'; cli()"


# training steps on random inputs, with keep_freed_memory() called or not (argv[1])
STEPS = """
import resource, sys, time, torch, torchvision
import torch.nn.functional as F
from infoflow.training.device import keep_freed_memory
from infoflow.training.models import CNN
if sys.argv[1] == "kept":
    keep_freed_memory()
for name, make, shape in [("cnn", lambda: CNN((1, 28, 28), 10, 16), (256, 1, 28, 28)),
                          ("resnet18", lambda: torchvision.models.resnet18(num_classes=10),
                           (128, 3, 32, 32))]:
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.rand(shape), torch.randint(0, 10, shape[:1])
    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(3):
        step()
    best = None
    for _ in range(5):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(10):
            step()
        ms, r1 = (time.perf_counter() - t0) * 100, resource.getrusage(resource.RUSAGE_SELF)
        if best is None or ms < best[0]:
            best = (ms, (r1.ru_minflt - r0.ru_minflt) / 10, (r1.ru_stime - r0.ru_stime) * 100)
    print(name, *best, flush=True)
"""


def steps(reps: int) -> None:
    rows = []
    for rep in range(reps):
        for name in ("defaults", "kept"):
            out = subprocess.run(
                [sys.executable, "-c", STEPS, name], capture_output=True, text=True
            )
            if out.returncode != 0:
                sys.exit(out.stderr[-3000:])
            for line in out.stdout.split("\n"):
                if line:
                    net, ms, faults, sys_ms = line.split()
                    row = {"net": net, "run": name, "rep": rep, "ms_per_step": float(ms)}
                    rows.append({**row, "minflt_per_step": float(faults), "sys_ms": float(sys_ms)})
                    print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    print(f"\ntraining steps, {platform.machine()}, {os.cpu_count()} cores")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    best = df.groupby(["net", "run"], sort=False).ms_per_step.min().unstack()
    for net, r in best.iterrows():
        print(
            f"{net}: {r.defaults:.1f} ms a step at glibc's defaults, {r.kept:.1f} ms kept: "
            f"{r.defaults / r.kept:.2f}x"
        )


def command(what: str, data: str, epochs: int, out: Path) -> list[str]:
    common = [f"data={data}", f"trainer.epochs={epochs}"]  # a sweep: the user's, cache on
    if what == "single":
        return ["model=cnn", *common, f"hydra.run.dir={out}"]
    models = "model=mlp1,mlp3,mlp5,cnn"
    return ["-m", models, "estimator.bins=10,30", *common, f"hydra.sweep.dir={out}"]


def run(code: str, args: list[str], cwd: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"infoflow failed:\n{log[-3000:]}")
    pairs = re.findall(r"\(train ([\d.]+)s, estimate ([\d.]+)s", log)
    return {
        "wall_s": wall,
        "train_s": sum(float(a) for a, _ in pairs),
        "estimate_s": sum(float(b) for _, b in pairs),
        "minflt": usage.ru_minflt,
        "sys_s": usage.ru_stime,
        "max_rss_mb": usage.ru_maxrss / 1024,  # Linux: KiB
    }


def tables(out: Path) -> pd.DataFrame:
    frames = [pd.read_parquet(f) for f in sorted(out.rglob("mi.parquet"))]  # each job's
    keep = ["epoch", "layer", "I_XT", "I_TY", "train_loss", "eval_acc"]
    return pd.concat(frames)[[c for c in keep if c in frames[0]]].reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--what", choices=["single", "sweep", "steps"], default="single")
    ap.add_argument("--data", default="fashion_mnist", help="digits: a quick check")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    if args.what == "steps":
        return steps(args.reps)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for rep in range(args.reps):
            for name, code in (("glibc defaults", DEFAULTS), ("kept (infoflow)", KEPT)):
                out = tmp / f"{name.split()[0]}{rep}"
                cmd = command(args.what, args.data, args.epochs, out)
                rows.append({"run": name, "rep": rep, **run(code, cmd, tmp)})
                print(rows[-1], flush=True)
        a, b = tables(tmp / "glibc0"), tables(tmp / "kept0")
        pd.testing.assert_frame_equal(a, b)  # the setting changes no number
    df = pd.DataFrame(rows)
    print(
        f"\n{args.what} on {args.data}, {args.epochs} epochs, {platform.machine()}, "
        f"{os.cpu_count()} cores; tables equal"
    )
    print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    means = df.groupby("run", sort=False)[
        ["wall_s", "train_s", "estimate_s", "minflt", "sys_s", "max_rss_mb"]
    ].mean()
    print("\nmeans\n" + means.to_string(float_format=lambda v: f"{v:.2f}"))
    d, k = means.iloc[0], means.iloc[1]
    print(
        f"\nkept against defaults: wall {d.wall_s / k.wall_s:.2f}x, training "
        f"{d.train_s / k.train_s:.2f}x, estimates {d.estimate_s / k.estimate_s:.2f}x"
    )


if __name__ == "__main__":
    main()
