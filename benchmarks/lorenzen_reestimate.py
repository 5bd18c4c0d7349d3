"""Estimators too slow for every point of a lorenzen2022 sweep, run on the nets it trained.

``experiment=lorenzen2022`` evaluates every 5th of 8,000 epochs on all 4,096 patterns: 1,601
points per run. ``exact`` and ``binning`` cost milliseconds there; ``kde_nn`` (pairwise
distances of 4,096 samples) and ``renyi`` about 2.5 s per point on one CPU core, 80 CPU-hours
for 20 runs. So this script takes a finished sweep (run with ``estimator=exact`` among its
estimators) and measures the other estimators on the states its training cache stored, at a
subset of the points (``--epochs``): the nets are those the sweep measured, bit for bit (it
re-measures ``exact`` at those points and stops if one number differs from the job's table).

Each row is the exact job's row at that point (config columns, training and evaluation
figures) with the estimator's own columns and a run id of its own (the exact job's with
``~<estimator>``), as the estimator's job would have written it, so that ``infoflow.score``
and ``infoflow.compression`` read the result, with the sweep's rows at the same epochs, as any
sweep's table (give the rows ``status="completed"``: their exact jobs completed).

    python benchmarks/lorenzen_reestimate.py SWEEP --out other.parquet
    python benchmarks/lorenzen_reestimate.py SWEEP --activation tanh --estimators kde_nn renyi
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from infoflow.spec import JobSpec
from infoflow.sweep.job import register_resolvers
from infoflow.sweep.runner import build, build_net
from infoflow.training.probe import Probe, evaluate, measure

CONF = Path(__file__).resolve().parents[1] / "conf"
#: a job log's set-up line: "... seed S, device ..., cache DIR -> JOB"
_CACHE = re.compile(r"cache (\S+) -> ")
#: the points measured by default: the early fitting phase densely, then every 400 epochs
EPOCHS = sorted({0, 5, 10, 20, 40, 80, 160, 320, 640, *range(0, 8001, 400)})


def job_config(job: Path, estimator: str):
    """The job's composed config with ``estimator`` in place of its own."""
    overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
    kept = [o for o in overrides if not o.startswith("estimator")]
    with initialize_config_dir(str(CONF), version_base=None):
        return compose("config", [*kept, f"estimator={estimator}"])


def reestimate(job: Path, estimators: list[str], epochs: list[int]) -> pd.DataFrame:
    table = pd.read_parquet(job / "mi.parquet")
    if table.estimator.iloc[0] != "exact":
        return pd.DataFrame()
    cache = Path(_CACHE.search((job / "__main__.log").read_text())[1])
    points = sorted(table.epoch.unique())  # point_k.pt holds the state at the k-th epoch
    cfg = job_config(job, "exact")
    spec = JobSpec.of(cfg)
    data = build(spec.config["data"])
    torch.manual_seed(spec.seed)
    model = build_net(spec.config["model"], data.in_shape, data.n_classes)
    probe = Probe.of(model, spec.node("probe.layers"), data.x_eval[:1])
    samples, batch = spec.node("probe.samples"), spec.node("probe.batch_size")
    output = bool(spec.node("probe.output"))
    names = probe.layer_names(output)
    setups = {"exact": build(spec.config["estimator"])}
    metas = {}
    for name in estimators:
        other = JobSpec.of(job_config(job, name))
        setups[name] = build(other.config["estimator"])
        metas[name] = {k: v for k, v in other.meta("", {}, "cpu", "").items() if
                       k.startswith("estimator.")}  # fmt: skip
    est_cols = [c for c in table.columns if c.startswith("estimator.")]
    out = []
    for epoch in epochs:
        if epoch not in points:
            continue
        state = torch.load(cache / f"point_{points.index(epoch):04d}.pt", weights_only=False)
        model.load_state_dict(state["model"])
        _, layers = evaluate(model, data, batch, output, None, samples, probe)
        base = table[table.epoch == epoch].sort_values("layer").reset_index(drop=True)
        check = pd.DataFrame(measure(layers, data, setups["exact"], names, samples))
        for col in ("I_XT", "I_TY"):  # the same nets as the job measured, or stop
            if not (check[col].to_numpy() == base[col].to_numpy()).all():
                raise SystemExit(f"{job}: epoch {epoch}: {col} differs from the job's table")
        keep = [c for c in base.columns if c not in check.columns or c in ("layer", "units")]
        keep = [c for c in keep if c not in est_cols and c != "layer_name"]
        for name in estimators:
            rows = pd.DataFrame(measure(layers, data, setups[name], names, samples))
            frame = base[keep].drop(columns=["layer", "units"]).join(rows)
            frame["estimator"] = name
            frame["run_id"] = frame["run_id"] + f"~{name}"  # a run of its own, as its job's
            for k, v in metas[name].items():
                frame[k] = v
            out.append(frame)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the rows, as a Parquet table")
    p.add_argument("--estimators", nargs="+", default=["kde_nn", "renyi"])
    p.add_argument("--epochs", type=int, nargs="+", default=EPOCHS)
    p.add_argument("--activation", default=None, help="only the runs with this model.activation")
    args = p.parse_args()
    register_resolvers()
    torch.set_num_threads(1)
    frames, t0 = [], time.perf_counter()
    for job in sorted(args.sweep.glob("[0-9]*"), key=lambda d: int(d.name)):
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        if args.activation and cfg.model.activation != args.activation:
            continue
        df = reestimate(job, args.estimators, args.epochs)
        if len(df):
            frames.append(df)
            print(f"{job.name}: {len(df)} rows, {time.perf_counter() - t0:.0f} s", flush=True)
    pd.concat(frames, ignore_index=True).to_parquet(args.out)
    print(f"{sum(map(len, frames))} rows in {args.out}")


if __name__ == "__main__":
    main()
