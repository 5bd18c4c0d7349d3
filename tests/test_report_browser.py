"""The report page in a real browser: headless Chromium opens index.html from disk (file://,
nothing served) and every figure loads; a page whose PNG is missing says so.

The page's own script marks ``<body data-images="loaded">`` once every ``img`` is
``complete`` with a ``naturalWidth`` (``"missing"`` and a visible note otherwise);
``--dump-dom`` prints the DOM after the load event, so the mark is read from there. The
screenshot stays under pytest's ``tmp_path`` and is copied into ``$INFOFLOW_SCREENSHOT_DIR``
when that is set (CI keeps it as an artifact).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import pytest
from test_loading import job_frame, make_sweep

from infoflow.report.page import make_report

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no `chromium` on PATH: install Debian's chromium package (CI does) to open the "
    "report page in a headless browser",
)
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``page`` (a local file) with its own profile folder."""
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def dump_dom(page: Path, profile: Path) -> str:
    """The page's DOM after its load event (virtual time lets the load handlers run)."""
    return chromium(page, profile, "--virtual-time-budget=10000", "--dump-dom").stdout


@pytest.fixture
def report(tmp_path) -> Path:
    """The report of a two-job sweep (mlp1 and mlp3, two epochs): ``index.html``."""
    sweep = make_sweep(tmp_path / "sweep", [job_frame("mlp1", 0), job_frame("mlp3", 0)])
    return make_report(sweep, tmp_path / "report", dpi=100)


def test_every_figure_of_the_report_loads_in_chromium(report, tmp_path):
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    assert pngs == ["curves__all.png", "plane__all.png"]
    dom = dump_dom(report, tmp_path / "profile")
    assert re.search(r"<body[^>]*\bdata-images=\"loaded\"", dom), dom[:3000]
    assert sorted(re.findall(r"<img src=\"([^\"]+)\"", dom)) == pngs

    shot = tmp_path / "report.png"
    chromium(report, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,2000")
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (2000, 1400)
    assert image[..., :3].std() > 0.05  # text and figures, not a blank or an error page
    if os.environ.get("INFOFLOW_SCREENSHOT_DIR"):
        keep = Path(os.environ["INFOFLOW_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep / "report.png")


def test_a_missing_figure_is_marked_and_named(report, tmp_path):
    (report.parent / "curves__all.png").unlink()  # index.html moved without its figures
    dom = dump_dom(report, tmp_path / "profile")
    assert re.search(r"<body[^>]*\bdata-images=\"missing\"", dom), dom[:3000]
    assert (
        "Figures that did not load (keep index.html beside its PNG files): curves__all.png" in dom
    )
