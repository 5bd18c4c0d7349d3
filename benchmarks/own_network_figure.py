"""Draw docs/own_network.png: the README's "Your own network" planes, the example module
(examples/custom_model: a residual net with BatchNorm and Dropout) beside a torchvision ResNet-18,
both on a Fashion-MNIST subset under estimator=renyi, a few seeds each.

    python benchmarks/own_network_figure.py --work /tmp/own --out docs/own_network.png

It writes the subset (the first ``--train`` training and ``--eval`` evaluation images of
Debian's Fashion-MNIST) as one ``.npz`` (``data=arrays``), runs the two sweeps through the real
CLI and draws one plane per net: I(X;T) against I(T;Y) per layer, the mean over seeds per
evaluation, lighter at epoch 0. The commands it runs are printed (the README quotes them).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import infoflow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_model"


def write_subset(path: Path, n_train: int, n_eval: int) -> None:
    """The first images of each split, as the uint8 pixels the IDX files hold."""
    from infoflow.training.data import load_fashion_mnist

    full = load_fashion_mnist(download=False)

    def pixels(x):  # (n, 1, 28, 28) float in [0, 1] -> uint8 (data=arrays divides by 255)
        return (x * 255).round().byte().numpy()

    np.savez(
        path,
        x_train=pixels(full.x_train[:n_train]),
        y_train=full.y_train[:n_train].numpy(),
        x_eval=pixels(full.x_eval[:n_eval]),
        y_eval=full.y_eval[:n_eval].numpy(),
    )


def sweep(args: list[str], env: dict) -> float:
    print("$", " ".join(shlex.quote(a) for a in args), flush=True)
    t0 = time.perf_counter()
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def plane(ax, df, title: str) -> None:
    mean = df.groupby(["layer", "layer_name", "epoch"], as_index=False)[["I_XT", "I_TY"]].mean()
    cmap = plt.get_cmap("viridis")
    layers = sorted(mean.layer.unique())
    for i, layer in enumerate(layers):
        d = mean[mean.layer == layer].sort_values("epoch")
        colour = cmap(i / max(1, len(layers) - 1))
        ax.plot(d.I_XT, d.I_TY, "-", color=colour, alpha=0.5)
        ax.scatter(d.I_XT, d.I_TY, c=[colour], s=12 + 18 * d.epoch / d.epoch.max())
        ax.annotate(d.layer_name.iloc[0], (d.I_XT.iloc[-1], d.I_TY.iloc[-1]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("I(X;T), bits (renyi)")
    ax.set_ylabel("I(T;Y), bits (renyi)")
    ax.set_title(title, fontsize=9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "own_network.png")
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--eval", type=int, default=500)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs-mynet", type=int, default=6)
    p.add_argument("--epochs-resnet", type=int, default=3)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    npz = args.work / "fashion_subset.npz"
    write_subset(npz, args.train, args.eval)
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}
    common = ["data=arrays", f"data.path={npz}", "estimator=renyi", f"seed=range({args.seeds})",
              f"trainer.batch_size={args.batch}",
              "runtime.device=cpu"]  # fmt: skip
    cli = [sys.executable, "-m", "infoflow"]
    t_mynet = sweep([*cli, "--config-dir", str(EXAMPLE / "conf"), "-m", "model=mynet", *common,
                     f"trainer.epochs={args.epochs_mynet}",
                     f"hydra.sweep.dir={args.work / 'mynet'}"], env)  # fmt: skip
    t_resnet = sweep([*cli, "-m", "model=torchvision", "model.name=resnet18",
                      "model.adapt_channels=true", *common, f"trainer.epochs={args.epochs_resnet}",
                      f"hydra.sweep.dir={args.work / 'resnet18'}"], env)  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, name, t in zip(axes, ("mynet", "resnet18"), (t_mynet, t_resnet)):
        df = infoflow.load(args.work / name)
        acc = df[df.epoch == df.epoch.max()].groupby("seed").eval_acc.first().mean()
        plane(ax, df, f"{name}: {df.seed.nunique()} seeds, {df.epoch.max()} epochs, "
                      f"eval acc {acc:.2f}")  # fmt: skip
        print(f"{name}: {t:.0f} s for {df.seed.nunique()} seeds; final rows:")
        last = df[df.epoch.isin([0, df.epoch.max()])]
        print(last.groupby(["layer_name", "epoch"], sort=False)[["I_XT", "I_TY"]].mean().round(2))
    fig.suptitle(f"Fashion-MNIST, first {args.train} / {args.eval} images, renyi "
                 f"({time.strftime('%Y-%m-%d')})", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
