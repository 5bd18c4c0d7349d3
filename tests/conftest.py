"""Shared fixtures: composing the real config, running the real CLI in a temp dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from infoflow.sweep.job import register_resolvers

register_resolvers()  # ${infoflow.unique:} in hydra.run.dir, as the entry point registers it
ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# the runtime keys the Slurm and packaging tests pass
RESUME_KEY = "runtime.resume"
DEVICE_KEY = "runtime.device"


@pytest.fixture
def compose_cfg():
    """Compose the real config with overrides, as the CLI would (without running a job)."""

    def _compose(*overrides: str, return_hydra_config: bool = False):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(
                "config", overrides=list(overrides), return_hydra_config=return_hydra_config
            )

    return _compose


def run_cli(
    *args: str, cwd: Path, module: str = "infoflow", timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> ARGS`` in ``cwd`` and return the finished process."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def cli(tmp_path):
    """Run the real CLI in a fresh temp dir; return (process, tmp_path)."""

    def _run(*args: str, **kw):
        return run_cli(*args, cwd=tmp_path, **kw)

    return _run
