"""The wheel carries the configs and the console scripts: installed anywhere, it runs as the
checkout does. The editable install puts the checkout on ``sys.path`` (a plain ``.pth`` line),
so ``import infoflow`` works from any directory, the clone's parent included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
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
CONFIGS = sorted((ROOT / "conf").rglob("*.yaml"))


def test_every_package_of_the_source_tree_is_in_the_wheel():
    setuptools = PYPROJECT["tool"]["setuptools"]
    source = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("infoflow", "hydra_plugins")  # hydra_plugins: a namespace, the launcher
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert "hydra_plugins.infoflow_launcher" in source
    assert set(setuptools["packages"]) == source | {"infoflow.conf"}
    # every config file matches the package-data globs (one level of groups)
    depths = {len(p.relative_to(ROOT / "conf").parts) for p in (ROOT / "conf").rglob("*.yaml")}
    assert depths <= {1, 2}, depths
    assert setuptools["package-data"]["infoflow.conf"] == ["*.yaml", "*/*.yaml"]


def test_the_editable_install_is_a_plain_path_entry():
    """setuptools' simple layout: every package where its name says, under the one root "".

    Any other package-dir entry (such as the former ``"infoflow.conf" = "conf"``) makes
    ``pip install -e`` install an import hook instead of a ``.pth`` line with the checkout, and
    a folder named ``infoflow`` in the current directory then shadows the package.
    """
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"": "."}
    link = ROOT / "infoflow" / "conf"
    # relative, so that it points at the top-level conf/ of whichever clone holds it
    assert link.is_symlink() and os.readlink(link) == "../conf"
    assert link.resolve() == ROOT / "conf"


def test_the_checkout_reads_its_top_level_conf():
    assert config_dir() == ROOT / "conf"


@pytest.mark.parametrize("name", ["infoflow", "infoflow-report"])
def test_console_scripts_point_at_callables(name):
    module, _, attr = PYPROJECT["project"]["scripts"][name].partition(":")
    assert callable(getattr(import_module(module), attr))


def _purelib(python: Path, env: dict[str, str]) -> Path:
    """The site-packages folder of the interpreter ``python``."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, env=env)
    return Path(out.stdout.strip())


def _copy_checkout(dest: Path) -> Path:
    """Copy what a clone holds for an install into ``dest`` (the conf symlink as a symlink)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("infoflow", "hydra_plugins", "conf"):
        shutil.copytree(ROOT / name, dest / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


def _venv_on_these_dependencies(venv: Path, env: dict[str, str]) -> Path:
    """A new virtual environment without pip whose dependencies (torch, hydra, setuptools...)
    are those of the running interpreter, through a ``.pth`` line; its python.

    ``pip --python`` installs into it with the running interpreter's pip; the tests do not
    install torch again (``.ci/run`` checks a full ``pip install <wheel>`` when asked).
    """
    cmd = [sys.executable, "-m", "venv", "--without-pip", str(venv)]
    subprocess.run(cmd, check=True, env=env, timeout=300)
    python = venv / "bin" / "python"
    deps = sysconfig.get_paths()["purelib"] + "\n"
    (_purelib(python, env) / "_infoflow_test_deps.pth").write_text(deps)
    return python


def _pip_install(python: Path, *args: str, env: dict[str, str]) -> None:
    """``pip install`` into ``python``'s environment: offline, no dependencies, setuptools as
    installed here (no build isolation, which would fetch it)."""
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    proc = subprocess.run(
        [*pip, "--no-index", "--no-build-isolation", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _build_wheel(out: Path) -> Path:
    """Build the wheel from a copy of the sources (no build/ or egg-info in the checkout)."""
    src = _copy_checkout(out / "src")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*cmd, "-w", str(out / "dist"), str(src)], check=True, timeout=300)
    (wheel,) = (out / "dist").glob("infoflow-*.whl")
    return wheel


def test_the_wheel_ships_every_config_through_the_symlink(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.startswith("infoflow/conf/")}
    configs = {f"infoflow/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in CONFIGS}
    assert shipped == configs and "infoflow/conf/config.yaml" in configs


# Run from the clone's parent, where the current directory's folder "infoflow" (the clone) is a
# candidate namespace package: the installed package must win, and Hydra's plugin scan (which
# lists the folders of the hydra_plugins namespace) must see infoflow's launcher without help.
PARENT_CHECK = """
import infoflow
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher

from infoflow.paths import config_dir

print(infoflow.__file__)
print(callable(infoflow.load))
print(config_dir())
print(" ".join(sorted(c.__name__ for c in Plugins.instance().discover(Launcher))))
"""


def test_an_editable_install_imports_from_the_clones_parent(tmp_path):
    """README's ``pip install -e .`` in a clone named ``infoflow``; a script in the clone's
    parent imports the package, not the clone as an empty namespace package."""
    clone = _copy_checkout(tmp_path.resolve() / "infoflow")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    python = _venv_on_these_dependencies(tmp_path / "venv", env)
    _pip_install(python, "-e", str(clone), env=env)
    hooks = list(_purelib(python, env).glob("__editable___*finder*"))
    assert not hooks, f"pip install -e installed an import hook, not a path entry: {hooks}"
    proc = subprocess.run(
        [python, "-c", PARENT_CHECK], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    where, load, conf, launchers = proc.stdout.splitlines()
    assert where == str(clone / "infoflow" / "__init__.py") and load == "True"
    assert conf == str(clone / "conf")
    assert "InfoflowLauncher" in launchers.split(), proc.stderr[-3000:]


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
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    py = _venv_on_these_dependencies(tmp_path / "venv", env)
    bin_dir, site = py.parent, _purelib(py, env)
    _pip_install(py, str(wheel), env=env)
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
