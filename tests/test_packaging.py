"""The wheel carries the configs and the console scripts: installed anywhere, it runs as the
checkout does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import import_module
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

from infoflow.paths import config_dir

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# the user's first sweep (README), one epoch: 4 models x 2 bin counts
USER_SWEEP = ("-m", "model=mlp1,mlp3,mlp5,cnn", "estimator.bins=10,30", "trainer.epochs=1")


def test_every_package_of_the_source_tree_is_in_the_wheel():
    setuptools = PYPROJECT["tool"]["setuptools"]
    source = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("infoflow", "hydra_plugins")  # hydra_plugins: a namespace, the launcher
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert "hydra_plugins.infoflow_launcher" in source
    assert set(setuptools["packages"]) == source | {"infoflow.conf"}
    assert setuptools["package-dir"] == {"infoflow.conf": "conf"}
    # every config file matches the package-data globs (one level of groups)
    depths = {len(p.relative_to(ROOT / "conf").parts) for p in (ROOT / "conf").rglob("*.yaml")}
    assert depths <= {1, 2}, depths
    assert setuptools["package-data"]["infoflow.conf"] == ["*.yaml", "*/*.yaml"]


def test_the_checkout_reads_its_top_level_conf():
    assert config_dir() == ROOT / "conf"


@pytest.mark.parametrize("name", ["infoflow", "infoflow-report"])
def test_console_scripts_point_at_callables(name):
    module, _, attr = PYPROJECT["project"]["scripts"][name].partition(":")
    assert callable(getattr(import_module(module), attr))


def _build_wheel(out: Path) -> Path:
    """Build the wheel from a copy of the sources (no build/ or egg-info in the checkout)."""
    src = out / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("infoflow", "hydra_plugins", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*cmd, "-w", str(out / "dist"), str(src)], check=True, timeout=300)
    (wheel,) = (out / "dist").glob("infoflow-*.whl")
    return wheel


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("INFOFLOW_WHEEL_CHECKED") == "1",
    reason=".ci/run has built the wheel and run the user's 8-job sweep from it already",
)
def test_the_wheel_runs_the_users_sweep_from_an_empty_directory(tmp_path):
    """Wheel -> new venv -> `infoflow -m ...` elsewhere: 8 job tables and the merged table.

    The venv gets infoflow from the wheel only; its dependencies (torch, hydra...) are those of
    the running interpreter, through a .pth line, so that the test does not install torch
    again (``.ci/run`` does the full ``pip install <wheel>`` into an empty venv).
    """
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=300)
    py, bin_dir = venv / "bin" / "python", venv / "bin"
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.strip()
    )
    (site / "_infoflow_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(pip, check=True, env=env, timeout=300)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    where = subprocess.run(
        [py, "-c", "import infoflow.paths as p; print(p.__file__); print(p.config_dir())"],
        cwd=empty,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    assert where == [str(site / "infoflow" / "paths.py"), str(site / "infoflow" / "conf")]

    proc = subprocess.run(
        [bin_dir / "infoflow", *USER_SWEEP],
        cwd=empty,
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (empty / "outputs" / "multirun").glob("*/*")
    assert len(list(sweep.glob("*/mi.parquet"))) == 8
    jobs = pd.read_parquet(sweep / "jobs.parquet")
    assert (jobs.status == "completed").all() and len(jobs) == 8
    merged = pd.read_parquet(sweep / "results.parquet")
    assert merged.run_id.nunique() == 8
    assert merged.groupby(["model", "estimator.bins"]).ngroups == 8
    hydra_yaml = (sweep / "0" / ".hydra" / "hydra.yaml").read_text()
    assert "infoflow/conf" in hydra_yaml
    assert "hydra_plugins.infoflow_launcher" in hydra_yaml  # the launcher came with the wheel

    report = subprocess.run(
        [bin_dir / "infoflow-report", str(sweep)],
        cwd=empty,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert (sweep / "report" / "index.html").is_file()
