"""The arithmetic floor of S Tishby seeds trained together, against one seed's real step.

The target: ``-m experiment=tishby2017 seed=range(20)`` in at most 3x the wall time of one
seed. A step of one seed (3,276 patterns, full batch, the [10,7,5,4,4,3] tanh net) is part
Python and dispatch overhead, part arithmetic; a stack saves the first, never the second. This
measures, per optimizer step, side by side in one process:

- ``job, 1 seed``: the job's own step (``infoflow.training.loop.StackTrainer``, a stack of
  one);
- ``job, S seeds``: the job's stacked step (``StackTrainer``): each seed's layers as they run
  alone, bit for bit;
- ``job batched, S seeds``: the job's step with ``hydra.launcher.stack=batched``
  (``infoflow.training.batched.BatchedStackTrainer``): one ``baddbmm`` per layer for every
  seed, one optimizer step over the stacked parameters, each seed's own batch order;
- ``batched, S seeds``: the S seeds' arithmetic in the most batched form torch has on the CPU:
  weights with a leading seed axis, one ``baddbmm`` per layer for all seeds, one cross-entropy,
  one backward, one Adam step over the stacked tensors (not bit for bit: see
  docs/seeds.md); the same data gather per seed as the job's;
- ``matmuls only, S seeds``: of that, the forward and backward matmuls and tanh alone (no
  gather, loss or optimizer): what no formulation of this net can avoid;
- ``matmuls only, feature-major``: the same arithmetic as ``W @ h`` on (S, units, batch)
  activations, the batched stack's layout (twice as fast for these 12..2-unit layers): the
  floor of ``job batched``.

Each at 1 and 2 threads (``--threads``). The ratios to ``job, 1 seed`` at its best thread
count bound what stacking can give the training part of a sweep; the evaluations (one pass and
estimate per seed and point) and each seed's files come on top.

    python benchmarks/bench_stack_floor.py --seeds 20
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F

from infoflow.training.batched import BatchedStackTrainer
from infoflow.training.data import load_tishby
from infoflow.training.models import MLP
from infoflow.training.trainer import StackTrainer

HIDDEN = [10, 7, 5, 4, 4, 3]


def adam(params) -> torch.optim.Optimizer:
    # fused, as conf/optimizer/adam.yaml
    return torch.optim.Adam(params, lr=2e-4, fused=True)


def job_step(data, seeds: int, trainer_class: type[StackTrainer] = StackTrainer):
    """The job's step for ``seeds`` seeds (a stack of one when 1)."""
    models = []
    for s in range(seeds):
        torch.manual_seed(s)
        models.append(MLP(data.in_shape, data.n_classes, hidden=HIDDEN, activation="tanh"))
    opt = adam([p for m in models for p in m.parameters()])
    trainer = trainer_class(models, opt, data, 4096, list(range(seeds)))
    return lambda: trainer.advance(trainer.step + 1)


def feature_major(data, seeds: int):
    """The seeds' forward and backward matmuls and tanh on (S, units, batch) activations."""
    dims = [12, *HIDDEN, data.n_classes]
    Ws = [torch.randn(seeds, o, i).mul_(i**-0.5).requires_grad_() for i, o in zip(dims, dims[1:])]
    bs = [torch.zeros(seeds, o, 1, requires_grad=True) for o in dims[1:]]
    n = len(data.y_train)
    x_fixed = data.x_train.reshape(n, -1).t().expand(seeds, 12, n).contiguous()  # (S, 12, n)

    def step() -> None:
        h = x_fixed
        for k, (W, b) in enumerate(zip(Ws, bs)):
            h = torch.baddbmm(b, W, h)  # (S, out, n)
            if k < len(Ws) - 1:
                h = torch.tanh(h)
        h.sum().backward()
        for p in Ws + bs:
            p.grad = None

    return step


def batched(data, seeds: int, matmuls_only: bool):
    """The seeds' step as batched matmuls over a leading seed axis."""
    dims = [12, *HIDDEN, data.n_classes]
    Ws = [torch.randn(seeds, o, i).mul_(i**-0.5).requires_grad_() for i, o in zip(dims, dims[1:])]
    bs = [torch.zeros(seeds, 1, o, requires_grad=True) for o in dims[1:]]
    opt = adam(Ws + bs)
    n = len(data.y_train)
    gens = [torch.Generator().manual_seed(s) for s in range(seeds)]
    x_all = data.x_train.reshape(n, -1)  # (n, 12)
    x_fixed = x_all.expand(seeds, n, 12).contiguous()  # (S, n, 12)

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = x  # (S, n, 12)
        for k, (W, b) in enumerate(zip(Ws, bs)):
            h = torch.baddbmm(b, h, W.transpose(1, 2))  # (S, n, out)
            if k < len(Ws) - 1:
                h = torch.tanh(h)
        return h  # (S, n, n_classes)

    def step() -> None:
        if matmuls_only:
            forward(x_fixed).sum().backward()
            for p in Ws + bs:
                p.grad = None
            return
        idx = torch.stack([torch.randperm(n, generator=g) for g in gens])  # (S, n)
        x, y = x_all[idx], data.y_train[idx]  # (S, n, 12), (S, n)
        logits = forward(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        opt.zero_grad(set_to_none=True)
        loss.view(seeds, n).mean(1).sum().backward()
        opt.step()

    return step


def per_step(step, steps: int) -> float:
    for _ in range(max(3, steps // 10)):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--steps", type=int, default=200, help="steps timed per case (1 seed: 5x)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--reps", type=int, default=2, help="rounds; the minimum per case is kept")
    args = p.parse_args()
    data = load_tishby()
    S = args.seeds
    cases = {
        "job, 1 seed": (lambda: job_step(data, 1), 5 * args.steps),
        f"job, {S} seeds": (lambda: job_step(data, S), args.steps),
        f"job batched, {S} seeds": (lambda: job_step(data, S, BatchedStackTrainer), args.steps),
        f"batched, {S} seeds": (lambda: batched(data, S, False), args.steps),
        f"matmuls only, {S} seeds": (lambda: batched(data, S, True), args.steps),
        "matmuls only, feature-major": (lambda: feature_major(data, S), args.steps),
    }
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.reps):  # rounds alternate the cases: the machine's drift cancels
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name, (make, steps) in cases.items():
                t = per_step(make(), steps)
                best[name, threads] = min(best.get((name, threads), t), t)
    print(
        f"{platform.machine()}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}; ms per optimizer step, minimum of {args.reps} rounds"
    )
    one = min(best["job, 1 seed", t] for t in args.threads)
    head = "".join(f"  {t} thread(s)" for t in args.threads)
    print(f"{'case':<26}{head}   best / (job, 1 seed)")
    for name in cases:
        times = [best[name, t] for t in args.threads]
        cols = "".join(f"  {1e3 * t:10.2f}" for t in times)
        print(f"{name:<26}{cols}   {min(times) / one:6.2f}x")


if __name__ == "__main__":
    main()
