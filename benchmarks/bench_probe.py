"""Probing by forward hooks against the private protocol it replaced (issue 23), per epoch.

Each of the user's four nets on Fashion-MNIST: one training epoch and the evaluation pass
(10,000 evaluation images through the net, the probed layers copied out), timed in child
processes that import infoflow either from this checkout (hooks) or from a worktree of the last
commit before them (``git worktree add /tmp/pre_hooks 1c81976``: ``model(x, probe=True)``),
interleaved, best of ``--reps``. Prints the evaluation pass of each and the difference as a
share of an epoch (training + evaluation pass).

    python benchmarks/bench_probe.py --old /tmp/pre_hooks --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, sys.argv[3])
from single import Trainer
from infoflow.training.data import load_fashion_mnist
from infoflow.training.models import CNN, MLP
from infoflow.training.probe import evaluate
torch.set_num_threads(1)
name, reps = sys.argv[1], int(sys.argv[2])
data = load_fashion_mnist(download=False)
hidden = {"mlp1": [128], "mlp3": [256, 128, 64], "mlp5": [512, 256, 128, 64]}
torch.manual_seed(0)
model = CNN(data.in_shape, 10) if name == "cnn" else MLP(data.in_shape, 10, hidden[name])
trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-3), data, 256, seed=0)
t0 = time.perf_counter()
trainer.train_to(trainer.per_epoch)
train = time.perf_counter() - t0
layers, passes = None, []
for _ in range(reps + 1):  # the first pass allocates the buffers, as at a job's step 0
    t0 = time.perf_counter()
    _, layers = evaluate(model, data, 4096, out=layers)
    passes.append(time.perf_counter() - t0)
print(json.dumps({"train": train, "eval": min(passes[1:]), "units": [t.shape[1] for t in layers]}))
"""


def child(root: Path, name: str, reps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    bench = str(Path(__file__).resolve().parent)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(reps), bench],
        env=env, capture_output=True, text=True, check=True, cwd="/",
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", type=Path, required=True, help="worktree of the commit before hooks")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--nets", default="mlp1,mlp3,mlp5,cnn")
    args = p.parse_args()
    new_root = Path(__file__).resolve().parents[1]
    print(f"{time.strftime('%Y-%m-%d')}, 1 thread per child, Fashion-MNIST, best of {args.reps}")
    print(f"{'net':6} {'epoch s':>8} {'old pass s':>10} {'hooks pass s':>12} {'diff / epoch':>12}")
    for name in args.nets.split(","):
        old = child(args.old, name, args.reps)
        new = child(new_root, name, args.reps)
        assert old["units"] == new["units"], (old["units"], new["units"])
        epoch = (old["train"] + new["train"]) / 2 + old["eval"]
        share = (new["eval"] - old["eval"]) / epoch
        print(f"{name:6} {epoch:8.2f} {old['eval']:10.3f} {new['eval']:12.3f} {share:+12.1%}")


if __name__ == "__main__":
    main()
