"""Where the Hydra configs are, in a wheel and in a source checkout alike.

The configs live in the top-level ``conf/`` of the repository. ``infoflow/conf`` is a committed
symlink to it (``../conf``), through which the wheel ships them as the package data of
``infoflow.conf`` (see ``pyproject.toml``). The entry points and the tests find them through
:func:`config_dir`, never through a relative path.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The directory holding ``config.yaml`` and the config groups (absolute, symlinks resolved).

    Returns ``<package>/conf`` in an installed wheel, ``<checkout>/conf`` in a source checkout
    (on ``PYTHONPATH`` or installed editable): there ``<package>/conf`` is the symlink to it,
    resolved so that runs record the top-level folder users edit. A checkout whose symlink
    is a plain file (git on Windows without symlink support) reads ``<checkout>/conf`` too.

    Raises
    ------
    FileNotFoundError
        When neither holds ``config.yaml`` (a broken install), naming both places looked at.
    """
    candidates = (_PACKAGE / "conf", _PACKAGE.parent / "conf")
    for path in candidates:
        if (path / "config.yaml").is_file():
            return path.resolve()
    looked = " and ".join(str(p / "config.yaml") for p in candidates)
    raise FileNotFoundError(f"infoflow's configs are missing: no {looked} (reinstall infoflow)")
