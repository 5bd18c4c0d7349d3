"""Speed and validation figures of the estimators, printed as Markdown tables.

    python benchmarks/bench_estimators.py               # both tables
    python benchmarks/bench_estimators.py --speed       # timings only
    python benchmarks/bench_estimators.py --validation  # closed-form cases only
    python benchmarks/bench_estimators.py --dependence  # settings on a trained digits net
    python benchmarks/bench_estimators.py --cost        # estimation vs an epoch, user's nets
    python benchmarks/bench_estimators.py --wide        # renyi / sliced / kde MC validation

Speed: one 10,000 x 512 ReLU layer (targets: binning <= 30 ms, KDE bounds <= 2 s on a 2-core
CPU). Each row is the median (and min) of ``--repeat`` runs, interleaved so that load from other
processes hits every row alike; CPU time (all threads) is less sensitive to that load.
Validation: the estimators on cases with a known answer; the numbers go into
docs/estimators.md.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy.special import logsumexp

from infoflow.estimators import binning, kde, renyi, sliced
from infoflow.estimators._common import entropy_from_counts, hash_rows, symbols
from infoflow.training.probe import activations

LN2 = math.log(2.0)


def relu_layer(n: int = 10_000, d: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A ReLU layer with low-dimensional structure, like a hidden layer of an MLP."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 64)).astype(np.float32)  # (n, 64) latent inputs
    W = rng.standard_normal((64, d)).astype(np.float32) / 8.0
    return np.maximum(z @ W, 0.0), rng.integers(0, 10, n)  # (n, d), (n,)


def speed(repeat: int) -> None:
    T, y = relu_layer()
    Tt, yt = torch.from_numpy(T), torch.from_numpy(y)

    def numpy_way() -> float:  # whole-array NumPy codes, hash_rows, plug-in H(T)
        codes = (T - T.min()) * np.float32(30 / (T.max() - T.min()))  # (n, d)
        t_sym, k = symbols(hash_rows(np.minimum(codes, 29).astype(np.uint16)))
        return entropy_from_counts(np.bincount(t_sym, minlength=k))

    # a conv-sized layer (the CNN's conv1 on Fashion-MNIST: 10,000 x 12,544)
    wide = torch.relu(torch.randn(10_000, 12_544, generator=torch.Generator().manual_seed(0)))

    cases = {
        "binning (default: 30 bins, layer range)": lambda: binning(Tt, None, yt),
        "binning, NumPy codes and hash_rows (H(T) only)": numpy_way,
        "binning range=[0, 10]": lambda: binning(T, None, y, range=[0, 10]),
        "binning bin_width=0.5": lambda: binning(T, None, y, bins=None, bin_width=0.5),
        "binning miller_madow": lambda: binning(T, None, y, bias_correction="miller_madow"),
        "binning strategy=quantile": lambda: binning(T, None, y, strategy="quantile"),
        "binning, 10,000 x 12,544 layer": lambda: binning(wide, None, yt),
        "kde noise_var=0.1 (auto: float32)": lambda: kde(Tt, None, yt, noise_var=0.1),
        "kde noise_var=0.1 precision=float64": lambda: kde(Tt, None, yt, precision="float64"),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeat):
        for name, f in cases.items():
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    print(f"\n### Speed: 10,000 x 512 ReLU layer, {torch.get_num_threads()} torch threads\n")
    print("(and a 10,000 x 12,544 one where named)\n")
    print("| estimator | wall, median | wall, min | CPU time, median |")
    print("| --- | ---: | ---: | ---: |")
    for name, ts in times.items():
        med, low, c = float(np.median(ts)), min(ts), float(np.median(cpu[name]))
        fmt = (lambda s: f"{s * 1e3:.1f} ms") if med < 1 else (lambda s: f"{s:.2f} s")
        print(f"| {name} | {fmt(med)} | {fmt(low)} | {fmt(c)} |")
    r = kde(Tt, None, yt)
    print(
        f"\n(KDE on this layer: I_XT upper {r['I_XT_upper']:.3f}, lower {r['I_XT_lower']:.3f}, "
        f"H_max {r['H_max']:.3f} bits)"
    )


# ------------------------------------------------------------------------------------------
# validation


def mixture_entropy_1d(c: np.ndarray, v: float, n_grid: int = 100_001) -> float:
    """Entropy in nats of the equal-weight mixture of N(c_i, v), by the trapezoid rule."""
    s = math.sqrt(v)
    x = np.linspace(c.min() - 12 * s, c.max() + 12 * s, n_grid)
    lp = np.empty_like(x)
    for a in range(0, len(x), 20_000):
        xa = x[a : a + 20_000]
        lp[a : a + 20_000] = (
            logsumexp(-((xa[:, None] - c[None, :]) ** 2) / (2 * v), axis=1)
            - math.log(len(c))
            - 0.5 * math.log(2 * math.pi * v)
        )
    return float(-np.trapezoid(np.exp(lp) * lp, x))


def mixture_entropy_2d(c: np.ndarray, v: float, m: int = 2001) -> float:
    """Entropy in nats of the equal-weight mixture of N(c_i, v I_2), c of shape (N, 2), by the
    trapezoid rule on an m x m grid reaching 10 sd beyond the centres."""
    s = math.sqrt(v)
    axes = [np.linspace(c[:, k].min() - 10 * s, c[:, k].max() + 10 * s, m) for k in range(2)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)  # (m^2, 2)
    lp = np.empty(len(grid))
    for a in range(0, len(grid), 20_000):
        D = ((grid[a : a + 20_000, None, :] - c[None, :, :]) ** 2).sum(-1)  # (g, N)
        lp[a : a + 20_000] = (
            logsumexp(-D / (2 * v), axis=1) - math.log(len(c)) - math.log(2 * math.pi * v)
        )
    f = (np.exp(lp) * lp).reshape(m, m)
    return float(-np.trapezoid(np.trapezoid(f, axes[1], axis=1), axes[0]))


def validation() -> None:
    rows: list[tuple[str, str, str, str]] = []  # case, estimator, exact, obtained

    def add(case: str, est: str, exact: float | str, got: str) -> None:
        rows.append((case, est, exact if isinstance(exact, str) else f"{exact:.4f}", got))

    rng = np.random.default_rng(0)
    # discrete tables
    T = np.repeat(np.arange(16, dtype=np.float32), 7)[:, None]
    add("16 equiprobable symbols: I_XT", "binning bins=16", 4.0,
        f"{binning(T, None, np.zeros(len(T), int), bins=16)['I_XT']:.4f}")  # fmt: skip
    t = rng.integers(0, 8, 400)
    r = binning(t[:, None].astype(np.float32), None, t % 3, bins=8, range=[-0.5, 7.5])
    add("Y = T mod 3: I_TY = H(Y)", "binning range=[-0.5, 7.5]", r["H_Y"], f"{r['I_TY']:.4f}")
    tt, yy = np.meshgrid(np.arange(6), np.arange(4), indexing="ij")
    r = binning(
        np.tile(tt.ravel(), 3)[:, None].astype(np.float32), None, np.tile(yy.ravel(), 3), bins=6
    )
    add("T, Y independent (6 x 4 table)", "binning bins=6", 0.0, f"{r['I_TY']:.4f}")
    r = binning((t % 3)[:, None].astype(np.float32), None, t % 3, bins=3)
    add("T = Y: I_XT = I_TY = H(Y)", "binning bins=3", r["H_Y"],
        f"{r['I_XT']:.4f} / {r['I_TY']:.4f}")  # fmt: skip
    T = np.repeat(np.arange(4, dtype=np.float32), [5, 3, 1, 1])[:, None]
    r = binning(T, None, np.zeros(10, int), bins=4, bias_correction="miller_madow")
    exact = -sum(p * math.log2(p) for p in (0.5, 0.3, 0.1, 0.1)) + 3 / (20 * LN2)
    add("counts 5,3,1,1: plug-in + (m-1)/2n ln2", "binning miller_madow", exact, f"{r['I_XT']:.4f}")
    # KDE: separated clusters
    centers = rng.standard_normal((10, 5)) * 100.0
    y = np.repeat(np.arange(10), 6)
    r = kde(centers[y], None, y)
    add("10 well-separated clusters = Y", "kde noise_var=0.1", math.log2(10),
        f"{r['I_XT_lower']:.4f} <= I_XT <= {r['I_XT_upper']:.4f}; "
        f"I_TY {r['I_TY_lower']:.4f} .. {r['I_TY_upper']:.4f}")  # fmt: skip
    # KDE: exact mixture entropy by quadrature
    g = np.random.default_rng(0)
    mixtures = {
        "N=150 Gaussian points": (g.standard_normal(150), (0.01, 0.1, 1.0)),
        "two clusters +-1, sd 0.2": (np.r_[g.normal(-1, 0.2, 75), g.normal(1, 0.2, 75)], (0.1,)),
        "grid of 40 on [-2, 2]": (np.linspace(-2, 2, 40), (0.05,)),
    }
    for name, (c, variances) in mixtures.items():
        for v in variances:
            exact = (mixture_entropy_1d(c, v) - 0.5 * math.log(2 * math.pi * math.e * v)) / LN2
            r = kde(c[:, None], None, np.zeros(len(c), int), noise_var=v)
            add(f"1-d mixture, {name}, exact by quadrature", f"kde noise_var={v}", exact,
                f"{r['I_XT_lower']:.4f} <= I_XT <= {r['I_XT_upper']:.4f}")  # fmt: skip
    # Gaussian channel
    for d, v in ((1, 0.1), (1, 1.0), (2, 0.5)):
        X = np.random.default_rng(4).standard_normal((2000, d))
        r = kde(X, None, np.zeros(2000, int), noise_var=v)
        add(f"Gaussian channel T = X + e, X ~ N(0, I_{d}), N = 2000",
            f"kde noise_var={v}", d / 2 * math.log2(1 + 1 / v),
            f"{r['I_XT_lower']:.4f} <= I_XT <= {r['I_XT_upper']:.4f}")  # fmt: skip
    print("\n### Validation: cases with a known answer (bits)\n")
    print("| case | estimator | exact | obtained |")
    print("| --- | --- | ---: | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def dependence() -> None:
    """How the estimates of one trained layer move with the estimator's settings (digits)."""
    from infoflow.training.data import load_digits
    from infoflow.training.models import MLP

    data = load_digits()
    torch.manual_seed(0)
    model = MLP(data.in_shape, data.n_classes, hidden=[256, 128, 64], activation="relu")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # 20 epochs, batch 32
        for idx in torch.randperm(len(data.y_train), generator=g).split(32):
            loss = torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    logits, probes = activations(model, data.x_eval)
    acc = float((logits.argmax(1) == data.y_eval).float().mean())
    y = data.y_eval
    settings = {
        "binning bins=2": lambda T: binning(T, None, y, bins=2),
        "binning bins=4": lambda T: binning(T, None, y, bins=4),
        "binning bins=10": lambda T: binning(T, None, y, bins=10),
        "binning bins=30 (default)": lambda T: binning(T, None, y),
        "binning bins=100": lambda T: binning(T, None, y, bins=100),
        "binning bin_width=0.5": lambda T: binning(T, None, y, bins=None, bin_width=0.5),
        "binning strategy=quantile": lambda T: binning(T, None, y, strategy="quantile"),
        "binning bins=30 miller_madow": lambda T: binning(
            T, None, y, bias_correction="miller_madow"
        ),
        "kde noise_var=10": lambda T: kde(T, None, y, noise_var=10.0),
        "kde noise_var=1": lambda T: kde(T, None, y, noise_var=1.0),
        "kde noise_var=0.1 (default)": lambda T: kde(T, None, y, noise_var=0.1),
        "kde noise_var=0.01": lambda T: kde(T, None, y, noise_var=0.01),
    }
    n = len(y)
    print(f"\n### Dependence on settings: mlp3 (ReLU) on digits, 20 epochs, eval acc {acc:.3f}")
    print(f"\nN = {n} evaluation samples: H_max = log2 N = {math.log2(n):.3f} bits, "
          f"H(Y) = {binning(probes[0], None, y)['H_Y']:.3f} bits. Cells: I_XT / I_TY (bits); "
          "* = saturated (I_XT within 1% of H_max); kde: upper [lower].\n")  # fmt: skip
    print(
        "| estimator | "
        + " | ".join(f"fc{i + 1} ({T.shape[1]})" for i, T in enumerate(probes))
        + " |"
    )
    print("| --- |" + " ---: |" * len(probes))
    for name, f in settings.items():
        cells = []
        for T in probes:
            r = f(T)
            cell = f"{r['I_XT']:.2f}{'*' if r['saturated'] else ''} / {r['I_TY']:.2f}"
            if "I_XT_lower" in r:
                cell += f" [{r['I_XT_lower']:.2f} / {r['I_TY_lower']:.2f}]"
            cells.append(cell)
        print(f"| {name} | " + " | ".join(cells) + " |")


# ---------------------------------------------------------------------------------------------
# cost: estimation against a training epoch, mlp1, mlp3, mlp5 and cnn on Fashion-MNIST

COST_SETTINGS = {
    "binning (default)": (binning, {}),
    "renyi (default: batch_size 256, batches 4)": (renyi, {}),
    "renyi batch_size 256, batches 1": (renyi, {"batches": 1}),
    "sliced (default: 128 slices, 16 bins)": (sliced, {}),
    "sliced 64 slices": (sliced, {"slices": 64}),
    "kde_nn (bounds + MC)": (kde, {"noise_scale": "neighbour", "noise_var": 1.0}),
}


def _best_of(repeat: int, f, *args, **kwargs) -> float:
    """The least CPU time (this process, all threads) of ``repeat`` calls ``f(*args, **kwargs)``.

    CPU time, not wall time: on a machine shared with other jobs the wall time of a
    single-threaded call grows with their load (2-4x here within minutes), its CPU time
    much less, so the ratio of two CPU times compares the work, not the moments they ran at.
    """
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        f(*args, **kwargs)
        times.append(time.process_time() - t0)
    return min(times)


def _train_epoch(model, opt, data, gen) -> None:
    for idx in torch.randperm(len(data.y_train), generator=gen).split(256):
        loss = torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _estimate(est, kw, layers, X, Y, clear: bool) -> None:
    """One evaluation: every layer; ``clear``: without the input side kept from before."""
    from infoflow.estimators import _memo

    if clear:
        _memo.clear()
    for T in layers:
        est(T, X, Y, **kw)


def cost(repeat: int, models: list[str], settings: list[str] | None = None) -> None:
    """CPU seconds of one training epoch (a bare Adam loop, batch 256) and of each estimator on
    all probed layers of the same net, measured side by side in this process; the share is the
    estimate over the epoch. Fashion-MNIST's 10,000 evaluation images.

    renyi and sliced compute X's side (its Gram matrices; its projections and their bins) once
    per input tensor and reuse it for every layer and evaluation of a job: "first evaluation"
    clears that memo before each run (what the job's evaluation at epoch 0 costs), "later
    evaluations" keeps it (every other evaluation of the job)."""
    from infoflow.training.data import load_fashion_mnist
    from infoflow.training.models import CNN, MLP

    hidden = {"mlp1": [128], "mlp3": [256, 128, 64], "mlp5": [512, 256, 128, 64]}
    data = load_fashion_mnist(download=False)
    X, Y = data.x_eval, data.y_eval
    chosen = {k: v for k, v in COST_SETTINGS.items() if not settings or k.split()[0] in settings}
    print(f"\ntorch threads: {torch.get_num_threads()}; CPU time, best of {repeat}\n")
    print("| net | epoch | estimator | first evaluation | share | later evaluations | share |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for name in models:
        torch.manual_seed(0)
        if name == "cnn":
            model = CNN(data.in_shape, data.n_classes, channels=16)
        else:
            model = MLP(data.in_shape, data.n_classes, hidden[name])
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)

        t_epoch = _best_of(repeat, _train_epoch, model, opt, data, gen)
        layers = activations(model, X)[1]
        for label, (est, kw) in chosen.items():
            if est is kde and name == "cnn" and not settings:  # minutes: only when asked for
                print(
                    f"| {name} | {t_epoch:.2f} s | {label} | not run by default (O(N^2 d): "
                    "--estimators kde_nn --models cnn) | | | |"
                )
                continue

            t1 = _best_of(repeat, _estimate, est, kw, layers, X, Y, clear=True)
            # the memo now holds X's side
            t2 = _best_of(repeat, _estimate, est, kw, layers, X, Y, clear=False)
            print(
                f"| {name} | {t_epoch:.2f} s | {label} | {t1:.3f} s | {t1 / t_epoch:.1%} "
                f"| {t2:.3f} s | {t2 / t_epoch:.1%} |",
                flush=True,
            )


# ---------------------------------------------------------------------------------------------
# wide: renyi, sliced and kde's Monte Carlo estimate on cases with a known answer


def sliced_gaussian_truth(S_xx, S_xt, S_tt, n_dirs=400_000, seed=123) -> float:
    """E over independent uniform directions of -1/2 log2(1 - rho^2), a large Monte Carlo."""
    g = np.random.default_rng(seed)
    th = g.standard_normal((n_dirs, len(S_xx)))
    ph = g.standard_normal((n_dirs, len(S_tt)))
    c = np.einsum("mi,ij,mj->m", th, S_xt, ph)
    vx = np.einsum("mi,ij,mj->m", th, S_xx, th)
    vt = np.einsum("mi,ij,mj->m", ph, S_tt, ph)
    return float(np.mean(-0.5 * np.log2(1 - c**2 / (vx * vt))))


def wide() -> None:
    print("\n| case | estimator | exact | obtained |\n| --- | --- | ---: | --- |")
    rng = np.random.default_rng(0)
    for d_x, d_t, sd, seed in ((2, 2, 0.3, 0), (3, 2, 0.5, 1), (4, 3, 1.0, 2), (10, 10, 1.0, 3)):
        g = np.random.default_rng(seed)
        A = g.standard_normal((d_t, d_x))
        X = g.standard_normal((20_000, d_x))
        T = X @ A.T + sd * g.standard_normal((20_000, d_t))
        exact = sliced_gaussian_truth(np.eye(d_x), A.T, A @ A.T + sd**2 * np.eye(d_t))
        for bins, slices in ((16, 128), (32, 500)):
            r = sliced(T, X, np.zeros(20_000, int), slices=slices, bins=bins)
            print(
                f"| Gaussian X in R^{d_x}, T = AX + N(0, {sd}^2 I_{d_t}), N = 20,000 "
                f"| sliced bins={bins} slices={slices} | {exact:.4f} "
                f"| {r['I_XT']:.4f} (se {r['I_XT_se']:.4f}) |"
            )
    X, T = rng.random((10_000, 20)), rng.standard_normal((10_000, 30))
    y = rng.integers(0, 10, 10_000)
    r = sliced(T, X, y)
    print(
        f"| X, T, Y independent (N = 10,000, d = 20, 30) | sliced (default) | 0 "
        f"| I_XT {r['I_XT']:.4f}, I_TY {r['I_TY']:.4f} |"
    )
    for c in (2, 4, 8, 16):
        yc = np.repeat(np.arange(c), 256 // c)
        Tc = rng.standard_normal((c, 5))[yc] * 100
        r = renyi(Tc, Tc, yc, width_rule="fixed", batch_size=256)
        print(
            f"| {c} equal well-separated clusters, n = 256 | renyi fixed width 1 "
            f"| {math.log2(c):.4f} | I_XT {r['I_XT']:.4f}, I_TY {r['I_TY']:.4f} |"
        )
    Tn = rng.standard_normal((256, 20)) * 100
    r = renyi(Tn, Tn, np.arange(256) % 4, width_rule="fixed", batch_size=256)
    print(f"| identity Gram, n = 256 | renyi | 8.0000 | H_T {r['H_T']:.4f}, I_XT {r['I_XT']:.4f} |")
    Xr = rng.random((300, 30))
    Tr = np.tanh(Xr @ rng.standard_normal((30, 12)))
    yr = (Tr[:, 0] > 0).astype(int) + 2 * (Tr[:, 1] > 0)
    Q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    perm = rng.permutation(300)
    base = renyi(Tr, Xr, yr, batch_size=300)
    for label, args in (
        ("permuted samples", (Tr[perm], Xr[perm], yr[perm])),
        ("rotated T", (Tr @ Q, Xr, yr)),
        ("T x 13 + 4", (Tr * 13 + 4, Xr, yr)),
    ):
        r = renyi(*args, batch_size=300)
        print(
            f"| tanh layer, n = 300, {label} | renyi (one batch) | {base['I_XT']:.4f} / "
            f"{base['I_TY']:.4f} | {r['I_XT']:.4f} / {r['I_TY']:.4f} |"
        )
    for label, make, v in (
        ("1-d, N=150 Gaussian points", lambda g: g.standard_normal((150, 1)), 0.01),
        ("1-d, N=150 Gaussian points", lambda g: g.standard_normal((150, 1)), 0.1),
        ("1-d, N=150 Gaussian points", lambda g: g.standard_normal((150, 1)), 1.0),
        (
            "1-d, two clusters +-1, sd 0.2",
            lambda g: np.r_[g.normal(-1, 0.2, 75), g.normal(1, 0.2, 75)][:, None],
            0.1,
        ),
        ("1-d, grid of 40 on [-2, 2]", lambda g: np.linspace(-2, 2, 40)[:, None], 0.05),
        ("2-d, N=60 Gaussian points", lambda g: g.standard_normal((60, 2)), 0.3),
    ):
        Tm = make(np.random.default_rng(0))
        H = mixture_entropy_1d(Tm[:, 0], v) if Tm.shape[1] == 1 else mixture_entropy_2d(Tm, v)
        d = Tm.shape[1]
        exact = H / LN2 - d / 2 * math.log2(2 * math.pi * math.e * v)
        r = kde(Tm, None, np.zeros(len(Tm), int), noise_var=v, mc_samples=len(Tm) * 300)
        print(
            f"| {label}, exact by quadrature | kde noise_var={v}, {len(Tm) * 300} draws "
            f"| {exact:.4f} | {r['I_XT_lower']:.4f} <= MC {r['I_XT_mc']:.4f} "
            f"(se {r['I_XT_mc_se']:.4f}) <= {r['I_XT_upper']:.4f} |"
        )
    for d, v in ((1, 0.1), (1, 1.0), (2, 0.5)):  # the Gaussian channels of --validation
        X = np.random.default_rng(4).standard_normal((2000, d))
        r = kde(X, None, np.zeros(2000, int), noise_var=v, mc_samples=2000 * 20)
        print(
            f"| Gaussian channel T = X + e, X ~ N(0, I_{d}), N = 2000 (population value) "
            f"| kde noise_var={v}, 40000 draws | {d / 2 * math.log2(1 + 1 / v):.4f} "
            f"| {r['I_XT_lower']:.4f} <= MC {r['I_XT_mc']:.4f} (se {r['I_XT_mc_se']:.4f}) "
            f"<= {r['I_XT_upper']:.4f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", action="store_true", help="timings only")
    parser.add_argument("--validation", action="store_true", help="closed-form cases only")
    parser.add_argument("--dependence", action="store_true", help="settings on a trained net")
    parser.add_argument("--cost", action="store_true", help="estimation vs a training epoch")
    parser.add_argument("--wide", action="store_true", help="renyi, sliced, kde MC validation")
    parser.add_argument("--models", default="mlp1,mlp3,mlp5,cnn", help="nets for --cost")
    parser.add_argument(
        "--estimators", default="", help="--cost: only these (e.g. renyi,sliced); default all"
    )
    parser.add_argument("--repeat", type=int, default=7, help="runs per timing (default 7)")
    args = parser.parse_args()
    if args.cost:
        cost(args.repeat, args.models.split(","), [e for e in args.estimators.split(",") if e])
    if args.wide:
        wide()
    if args.cost or args.wide:
        return
    both = not (args.speed or args.validation or args.dependence)
    if args.speed or both:
        speed(args.repeat)
    if args.validation or both:
        validation()
    if args.dependence or both:
        dependence()


if __name__ == "__main__":
    main()
