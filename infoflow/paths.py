"""Where the Hydra configs are, in a wheel and in a source checkout alike.

The configs live in the top-level ``conf/`` of the repository; the wheel ships them as
``infoflow/conf`` (``pyproject.toml`` maps ``conf`` to the package ``infoflow.conf``). The entry
points and the tests find them through :func:`config_dir`, never through a relative path.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The directory holding ``config.yaml`` and the config groups (absolute).

    Returns ``<package>/conf`` in an installed wheel, else ``<checkout>/conf`` (a source
    checkout on ``PYTHONPATH`` or an editable install).

    Raises
    ------
    FileNotFoundError
        When neither holds ``config.yaml`` (a broken install), naming both places looked at.
    """
    candidates = (_PACKAGE / "conf", _PACKAGE.parent / "conf")
    for path in candidates:
        if (path / "config.yaml").is_file():
            return path
    looked = " and ".join(str(p / "config.yaml") for p in candidates)
    raise FileNotFoundError(f"infoflow's configs are missing: no {looked} (reinstall infoflow)")
