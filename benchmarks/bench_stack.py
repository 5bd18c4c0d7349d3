"""Seeds trained together: a sweep over S seeds against the same sweep with one seed.

Runs each command as a user would (a fresh ``python -m infoflow`` in a temp dir) and reports
wall times and their ratio, measured side by side in one run (the pairs alternate, ``--reps``
times, and the minimum of each is kept), so that the load of a shared machine cancels out as
far as it can:

- ``tishby``: ``-m experiment=tishby2017 seed=range(20)`` against ``seed=0`` (issue target: at
  most 3x). The full experiment is 10,000 epochs and 280 evaluations per seed; ``--epochs`` and
  ``--evals`` shorten it (default 1,000 epochs and ``log:40``: about the full run's
  evaluations per step);
- ``digits``: ``-m model=mlp1,mlp3,mlp5,cnn seed=range(10)`` against ``seed=0`` (4 jobs;
  target: at most 4x), the default 5 epochs.

``--unstacked-too`` also runs the many-seed sweep with ``hydra.launcher.max_stack=1`` (every
job alone, as before stacking) in the same alternation. Each sweep also reports its evaluation
lines and the sum of their logged estimation seconds (``estimate Y s``: a seed's evaluation
pass, estimate and files).

    python benchmarks/bench_stack.py --which tishby digits --reps 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOGGED = re.compile(r"(seed \d+: )?eval .*\(train ([0-9.]+)s, estimate ([0-9.]+)s")


def sweeps(which: str, args: argparse.Namespace) -> tuple[list[str], list[str], int]:
    """(one-seed sweep, many-seed sweep, seeds) of a benchmark."""
    common = ["runtime.device=cpu", f"runtime.threads={args.threads}"]
    if which == "tishby":
        base = ["-m", "experiment=tishby2017", f"trainer.epochs={args.epochs}"]
        base += [f"trainer.eval=log:{args.evals}", *common]
        return [*base, "seed=0"], [*base, f"seed=range({args.seeds})"], args.seeds
    base = ["-m", "model=mlp1,mlp3,mlp5,cnn", f"trainer.epochs={args.digits_epochs}", *common]
    return [*base, "seed=0"], [*base, f"seed=range({args.digits_seeds})"], args.digits_seeds


def run(cmd: list[str], work: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "infoflow", *cmd, f"hydra.sweep.dir={work / 'sweep'}"],
        cwd=work, capture_output=True, text=True, env=dict(os.environ),
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(out.stdout + out.stderr)[-3000:]}")
    lines = LOGGED.findall(out.stdout + out.stderr)
    return {"wall": wall, "estimate": sum(float(est) for _, _, est in lines),
            "evaluations": len(lines)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--which", nargs="+", default=["tishby", "digits"], choices=["tishby", "digits"])
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1000, help="tishby: trainer.epochs")
    p.add_argument("--evals", type=int, default=40, help="tishby: trainer.eval=log:N")
    p.add_argument("--seeds", type=int, default=20, help="tishby: seeds")
    p.add_argument("--digits-seeds", type=int, default=10)
    p.add_argument("--digits-epochs", type=int, default=5, help="digits: trainer.epochs")
    p.add_argument("--threads", default="1", help="runtime.threads")
    p.add_argument(
        "--unstacked-too",
        action="store_true",
        help="also run the many-seed sweep with hydra.launcher.max_stack=1 (every job alone)",
    )
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()
    results = {}
    for which in args.which:
        one, many, seeds = sweeps(which, args)
        best: dict[str, dict[str, float]] = {}
        runs = [("one", one), ("many", many)]
        if args.unstacked_too:
            runs.append(("alone", [*many, "hydra.launcher.max_stack=1"]))
        for _ in range(args.reps):
            for name, cmd in runs:
                with tempfile.TemporaryDirectory() as tmp:
                    got = run(cmd, Path(tmp))
                if name not in best or got["wall"] < best[name]["wall"]:
                    best[name] = got
        ratio = best["many"]["wall"] / best["one"]["wall"]
        alone = best["alone"]["wall"] / best["one"]["wall"] if "alone" in best else None
        results[which] = {**best, "seeds": seeds, "ratio": ratio, "ratio_alone": alone}
        results[which].update(one_cmd=one, many_cmd=many)
        print(f"{which}: python -m infoflow {' '.join(many)}")
        for name in best:
            b = best[name]
            print(
                f"  {name:4s}  wall {b['wall']:7.1f} s  ({int(b['evaluations'])} evaluation "
                f"lines, {b['estimate']:.1f} s of them estimating)"
            )
        print(f"  ratio {seeds} seeds / 1 seed: {ratio:.2f}x")
        if "alone" in best:
            print(f"  ratio {seeds} seeds, every job alone / 1 seed: {alone:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
