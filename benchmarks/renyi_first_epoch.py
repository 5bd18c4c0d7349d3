"""Why renyi's I(T;Y) falls from epoch 0 to epoch 1 on Fashion-MNIST (issue 24, item 7).

The first sweep's MLPs (``mlp1``, ``mlp3``, ``mlp5``; ReLU, PyTorch's initialisation, Adam 1e-3,
batch 256) trained for one epoch on Fashion-MNIST, measured on the 10,000 test images at epoch
0 and 1, each net twice: as it is, and quantized to 8 bits (``model.quantize=8``), where
``exact`` gives the true I(X;T) and I(T;Y) over the samples. On the same activations:

* ``renyi``: the default (Silverman width from the layer's total variance, ``batch_size=256``,
  4 batches), with ``sigma_T`` the width it used and ``H_T`` the layer's Renyi entropy;
* ``shuffled``: renyi's I(T;Y) with the labels permuted once (independent of T): what the
  estimator reports for labels that carry nothing, its plug-in floor on 256-sample batches;
* ``fixed``: renyi with the width held at the epoch-0 layer's ``sigma_T`` (``width_rule=fixed``),
  so that epoch 1 is read through the same kernel;
* ``exact`` (quantized net only): the truth over the 10,000 samples.

    python benchmarks/renyi_first_epoch.py [--models mlp1,mlp3,mlp5] [--seed 0]

Prints a Markdown table (bits).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from single import Trainer

from infoflow.estimators import exact, renyi
from infoflow.training.data import load_fashion_mnist
from infoflow.training.models import MLP
from infoflow.training.probe import activations

HIDDEN = {"mlp1": [128], "mlp3": [256, 128, 64], "mlp5": [512, 256, 128, 64]}


def probes(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The hidden layers' outputs on ``x``, in blocks of 2,500 rows (a tanh net would need
    one block; these are ReLU nets, whose stored ranges do not depend on the batch)."""
    parts = [activations(model, xb, ["fc*"])[1] for xb in x.split(2500)]
    return [torch.cat(layer) for layer in zip(*parts)]


def measure(name: str, quantize: int | None, seed: int, data, shuffled: torch.Tensor) -> list:
    torch.manual_seed(seed)
    model = MLP(data.in_shape, data.n_classes, HIDDEN[name], "relu", quantize=quantize)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-3), data, 256, seed)
    x, y = data.x_eval, data.y_eval
    rows, sigma0 = [], {}
    for epoch in (0, 1):
        if epoch:
            stats = trainer.train_to(trainer.per_epoch)
        for i, T in enumerate(probes(model, x), start=1):
            r = renyi(T, x, y)
            sigma0.setdefault(i, r["sigma_T"])
            row = {
                "net": name + (f" q{quantize}" if quantize else ""),
                "layer": f"fc{i}",
                "epoch": epoch,
                "train_acc": stats["train_acc"] if epoch else float("nan"),
                "renyi I_TY": r["I_TY"],
                "renyi I_XT": r["I_XT"],
                "H_T": r["H_T"],
                "sigma_T": r["sigma_T"],
                "shuffled I_TY": renyi(T, x, shuffled)["I_TY"],
                "fixed-width I_TY": renyi(T, x, y, width_rule="fixed", width=sigma0[i])["I_TY"],
            }
            if quantize:
                e = exact(T, x, y, bits=quantize)
                row.update({"exact I_TY": e["I_TY"], "exact I_XT": e["I_XT"]})
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp1,mlp3,mlp5")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_fashion_mnist()
    g = torch.Generator().manual_seed(12345)
    shuffled = data.y_eval[torch.randperm(len(data.y_eval), generator=g)]
    rows = []
    t0 = time.perf_counter()
    for name in args.models.split(","):
        for quantize in (None, 8):
            rows += measure(name, quantize, args.seed, data, shuffled)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(cols) + " |\n|" + " --- |" * len(cols))
    for r in rows:
        cells = [r.get(c, "") for c in cols]
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in cells))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
