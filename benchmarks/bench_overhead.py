"""Fixed costs of a sweep: everything but the jobs' logged training and estimation time.

Runs the README's digits sweep (``-m model=mlp1,mlp3,mlp5,cnn estimator.bins=10,30``, 8 jobs)
as a user would, a fresh process in a temp dir, and splits its wall time into

- the jobs' own work: the sum of every ``(train X s, estimate Y s)`` the jobs log;
- the fixed costs: the rest (interpreter start, imports, Hydra's composing, the sweep's plan,
  each job's set-up: data, model, first optimizer step's lazy imports, table writes).

It also times the imports alone (``python -c "import infoflow.__main__"`` less ``python -c
pass``), the floor no code of ours can remove (``import torch`` and ``torch._dynamo``, which
every ``torch.optim`` optimizer imports when it is built), and prints the slowest imported
packages. ``--against DIR`` runs another checkout's sweep (e.g. a ``git worktree`` of an
earlier commit) interleaved with this one's. Timings on a shared machine drift: run it a few
times (``--runs``) and compare within a run.

    python benchmarks/bench_overhead.py --runs 3
    python benchmarks/bench_overhead.py --runs 3 --against /tmp/old-checkout
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ("-m", "model=mlp1,mlp3,mlp5,cnn", "estimator.bins=10,30", "runtime.device=cpu")
LOGGED = re.compile(r"\(train ([0-9.]+)s, estimate ([0-9.]+)s")


HERE = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path, code: Path = HERE) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return wall, out.stdout + out.stderr


def sweep_once(work: Path, code: Path = HERE) -> dict[str, float]:
    wall, log = timed([sys.executable, "-m", "infoflow", *SWEEP], work, code)
    logged = [(float(a), float(b)) for a, b in LOGGED.findall(log)]
    train = sum(a for a, _ in logged)
    estimate = sum(b for _, b in logged)
    return {"wall": wall, "train": train, "estimate": estimate, "fixed": wall - train - estimate,
            "evaluations": len(logged)}  # fmt: skip


def imports_once(work: Path) -> tuple[float, float]:
    """(the entry point's imports, the torch floor: torch and torch._dynamo), seconds."""
    bare, _ = timed([sys.executable, "-c", "pass"], work)
    entry = "import infoflow.__main__, infoflow.sweep.callbacks"
    full, _ = timed([sys.executable, "-c", entry], work)
    floor, _ = timed([sys.executable, "-c", "import torch, torch._dynamo"], work)
    return full - bare, floor - bare


def slowest_imports(work: Path, n: int = 8) -> list[tuple[float, str]]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c",
         "import infoflow.__main__, infoflow.sweep.callbacks"],
        cwd=work, capture_output=True, text=True,
    )  # fmt: skip
    rows = []
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            rows.append((int(parts[1]) / 1e6, parts[2].strip()))  # top-level packages only
    return sorted(rows, reverse=True)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--against", type=Path, help="another checkout, run interleaved")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs, others = [], []
        for _ in range(args.runs):
            runs.append(sweep_once(work))
            if args.against:
                others.append(sweep_once(work, args.against.resolve()))
        measured = [imports_once(work) for _ in range(args.runs)]
        imports, floor = [m[0] for m in measured], [m[1] for m in measured]
        print(f"the digits sweep ({' '.join(SWEEP)}), {args.runs} runs:")
        print("  run   wall s   train s   estimate s   fixed s   evaluations")
        for i, r in enumerate(runs, 1):
            print(f"  {i:>3} {r['wall']:8.2f} {r['train']:9.2f} {r['estimate']:12.2f} "
                  f"{r['fixed']:9.2f} {r['evaluations']:13d}")  # fmt: skip
        fixed = [r["fixed"] for r in runs]
        print(f"fixed costs: median {statistics.median(fixed):.2f} s "
              f"(min {min(fixed):.2f}, max {max(fixed):.2f})")  # fmt: skip
        print(
            f"imports of the entry point: median {statistics.median(imports):.2f} s; of which "
            f"torch + torch._dynamo (the floor): median {statistics.median(floor):.2f} s"
        )
        print(
            f"fixed costs above that floor: median "
            f"{statistics.median(fixed) - statistics.median(floor):.2f} s"
        )
        if others:
            print(
                f"{args.against}, interleaved: fixed costs "
                + ", ".join(f"{r['fixed']:.2f}" for r in others)
                + " s; wall "
                + ", ".join(f"{r['wall']:.2f}" for r in others)
                + " s"
            )
        print("slowest top-level imports (s, cumulative):")
        for seconds, name in slowest_imports(work):
            print(f"  {seconds:6.2f}  {name}")


if __name__ == "__main__":
    main()
