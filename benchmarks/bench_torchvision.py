"""A torchvision ResNet-18 epoch through infoflow's training loop against a bare PyTorch loop
over the same tensors (issue 23), side by side in one process.

Both train ``torchvision.models.resnet18`` (``model=torchvision``, ``adapt_channels``: one input
channel) on the first ``--n`` Fashion-MNIST training images held as one tensor, batch
``--batch``, Adam: the bare loop slices a shuffled index tensor and steps; infoflow runs
:class:`infoflow.training.trainer.StackTrainer` (a stack of one, as a job does). Interleaved,
best of ``--reps`` epochs each.

    python benchmarks/bench_torchvision.py --n 2048 --reps 3
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from single import Trainer

from infoflow.training.data import Dataset, load_fashion_mnist
from infoflow.training.models import torchvision_model


def bare_epoch(model, opt, x, y, batch, gen) -> None:
    model.train()
    for idx in torch.randperm(len(y), generator=gen, device=x.device).split(batch):
        loss = F.cross_entropy(model(x[idx]), y[idx])  # (B, 10) -> ()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    full = load_fashion_mnist(download=False)
    data = Dataset("fm", full.x_train[: args.n], full.y_train[: args.n], full.x_eval[:256],
                   full.y_eval[:256]).to(args.device)  # fmt: skip

    def net() -> torch.nn.Module:
        torch.manual_seed(0)
        return torchvision_model("resnet18", data.in_shape, 10, adapt_channels=True).to(args.device)

    bare, ours = net(), net()
    bare_opt = torch.optim.Adam(bare.parameters(), lr=1e-3)
    trainer = Trainer(ours, torch.optim.Adam(ours.parameters(), lr=1e-3), data, args.batch, 0)
    gen = torch.Generator(device=args.device).manual_seed(0)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    bare_t, ours_t = [], []
    for r in range(args.reps + 1):  # the first epoch of each warms up (allocations)
        # which runs first alternates: on a shared machine the load changes within a pair
        for which in ("bare", "ours") if r % 2 == 0 else ("ours", "bare"):
            t0 = time.perf_counter()
            if which == "bare":
                bare_epoch(bare, bare_opt, data.x_train, data.y_train, args.batch, gen)
            else:
                trainer.train_to((r + 1) * trainer.per_epoch)
            sync()
            (bare_t if which == "bare" else ours_t).append(time.perf_counter() - t0)
    b, o = min(bare_t[1:]), min(ours_t[1:])
    print(
        f"{time.strftime('%Y-%m-%d')} resnet18, {args.n} images 1x28x28, batch {args.batch}, "
        f"{args.device}, {torch.get_num_threads()} threads: bare {b:.2f} s, infoflow {o:.2f} s "
        f"per epoch, ratio {o / b:.3f}"
    )


if __name__ == "__main__":
    main()
