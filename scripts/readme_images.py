"""The README's images, made from a run's registry: `docs/dashboard.png` (one function per image).

    .venv/bin/python scripts/readme_images.py                 # newest run with a dashboard, else a fake run
    .venv/bin/python scripts/readme_images.py --run fake      # a FakeSandbox run made here (no Docker, ~2 s)
    .venv/bin/python scripts/readme_images.py --run RUN_ID    # that run's report/index.html

The dashboard is shot in headless Chromium (Debian's `chromium`, or SANDLAB_CHROMIUM), cropped
to its top, scaled down and reduced to a 256-colour palette, so the PNG stays small enough to
commit (about 100 KB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository's packages (controller, tests.controller.fakes)

from controller.dashboard import DASHBOARD, write_dashboard  # noqa: E402
from controller.figures import make_figures  # noqa: E402
from controller.registry import new_run_id  # noqa: E402
from controller.report import write_tables  # noqa: E402
from controller.store import RunStore, heldout_key  # noqa: E402
from sandbox.base import Job  # noqa: E402
from sandbox.events import MetricEvent  # noqa: E402
from sandbox.policy import Policy  # noqa: E402
from sandbox.results import AttemptResult  # noqa: E402
from tests.controller.fakes import Canned, FakeSandbox, make_loop  # noqa: E402

DEFAULT_RUNS_DIR = ROOT / "runs"
DEFAULT_OUT = ROOT / "docs"
VIEWPORT = (1280, 1500)
"""The browser window shot: the header, the result and the first figures of a dashboard."""
IMAGE_WIDTH = 900
PALETTE_COLOURS = 256
SIZE_LIMIT_BYTES = 150 * 1024
CHROMIUM_TIMEOUT_S = 120
FAKE_EPOCHS = 12
HEADLESS_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="newest", help="newest (default), fake, or a run id under --runs-dir")
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the images go (default: docs/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sandlab-readme-") as work:
        page = dashboard_page(args.run, args.runs_dir, Path(work))
        images = [dashboard_image(page, args.out / "dashboard.png")]
        pdf = page.parent.parent / "paper" / "main.pdf"  # the same run's paper draft
        if pdf.is_file():
            images.append(paper_page_png(pdf, args.out / "paper-page1.png"))
        else:
            print(f"{pdf} is missing (no LaTeX?); docs/paper-page1.png left as it was", file=sys.stderr)
        source = "a FakeSandbox run" if page.is_relative_to(work) else str(page)
    status = 0
    for image in images:
        size = image.stat().st_size
        print(f"{image}: {size // 1024} KB, from {source}")
        if size > SIZE_LIMIT_BYTES:
            print(f"warning: {image.name} is over {SIZE_LIMIT_BYTES // 1024} KB", file=sys.stderr)
            status = 1
    return status


# -- which dashboard --------------------------------------------------------------------------------


def dashboard_page(run: str, runs_dir: Path, work: Path) -> Path:
    """The dashboard to shoot: a run's own, the newest one, or a fake run's made in `work`."""
    if run == "fake":
        return fake_run_dashboard(work)
    if run == "newest":
        newest = newest_dashboard(runs_dir)
        if newest is None:
            print(f"no run in {runs_dir} has a dashboard yet; using a FakeSandbox run")
            return fake_run_dashboard(work)
        return newest
    page = RunStore.open(runs_dir, run).root / DASHBOARD
    if not page.is_file():
        msg = f"run {run} has no {DASHBOARD}; `controller resume {run}` writes it, or pass --run fake"
        raise SystemExit(msg)
    return page


def newest_dashboard(runs_dir: Path) -> Path | None:
    """The newest run's dashboard, among runs that have one."""
    for state in reversed(RunStore.list_runs(runs_dir)):
        page = runs_dir / state.run_id / DASHBOARD
        if page.is_file():
            return page
    return None


class CurvesSandbox(FakeSandbox):
    """The fake, with training jobs that report per-epoch curves as the digits task's train.py does,
    and start times that follow its clock (so the budget figure shows the run's own timeline)."""

    def __init__(self, job_seconds: float) -> None:
        super().__init__(job_seconds=job_seconds)
        self.started = datetime.now(UTC)
        self.clock_start = self.clock.now

    def run(self, job: Job, policy: Policy) -> AttemptResult:
        result = super().run(job, policy)
        began = self.clock.now - self.clock_start - result.duration_s
        return result.model_copy(update={"started_at": self.started + timedelta(seconds=began)})

    def honest(self, kind: str, job: Job) -> Canned:
        canned = super().honest(kind, job)
        if kind != "train":
            return canned
        final = next(e.value for e in canned.events if isinstance(e, MetricEvent))
        events = []
        for epoch in range(FAKE_EPOCHS):
            progress = (epoch + 1) / FAKE_EPOCHS
            events.append(MetricEvent(name="train_loss", value=2.3 * (1 - progress) ** 2 + 0.05, step=epoch))
            events.append(MetricEvent(name="holdout_accuracy", value=final * progress**0.3, step=epoch))
        return replace(canned, events=events)


def fake_run_dashboard(work: Path) -> Path:
    """A finished FakeSandbox run (offline agent, 3 seeds) with its report, figures and dashboard."""
    loop = make_loop(work, CurvesSandbox(job_seconds=20.0), run_id=new_run_id())
    loop.run()
    chosen = loop.results().chosen
    results = loop.results(loop.attempts.index.get(heldout_key(chosen[0].key)) if chosen else None)
    write_tables(results)
    figures = make_figures(results, results.store.root / "report" / "figures")
    return write_dashboard(results, figures)


# -- the images -------------------------------------------------------------------------------------


def dashboard_image(page: Path, target: Path) -> Path:
    """docs/dashboard.png: the top of the dashboard, scaled to IMAGE_WIDTH, palette-reduced."""
    with tempfile.TemporaryDirectory(prefix="sandlab-shot-") as tmp:
        shot = Path(tmp) / "shot.png"
        screenshot(page, shot, VIEWPORT)
        with Image.open(shot) as full:
            width, height = full.size
            small = full.convert("RGB").resize(
                (IMAGE_WIDTH, round(height * IMAGE_WIDTH / width)), Image.Resampling.LANCZOS
            )
    small.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    return target


def screenshot(page: Path, png: Path, viewport: tuple[int, int]) -> None:
    """A headless Chromium shot of the page's first `viewport` pixels, from disk, with a throwaway profile."""
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="sandlab-chromium-") as profile:
        command = [
            binary,
            *HEADLESS_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={viewport[0]},{viewport[1]}",
            f"--screenshot={png}",
            page.absolute().as_uri(),
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=CHROMIUM_TIMEOUT_S)
    if not png.is_file():
        msg = f"{binary} wrote no screenshot of {page}"
        raise SystemExit(msg)


def chromium_binary() -> str:
    for name in (os.environ.get("SANDLAB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    msg = "no headless Chromium: install Debian's `chromium` or set SANDLAB_CHROMIUM"
    raise SystemExit(msg)


# -- the paper's first page ------------------------------------------------------------------------

PAPER_DPI = 60
"""One page at 60 dpi is about 90 KB: small enough to commit."""
PDFTOPPM_TIMEOUT_S = 60


def paper_page_png(pdf: Path, target: Path, *, dpi: int = PAPER_DPI) -> Path:
    """docs/paper-page1.png: page 1 of a run's paper/main.pdf (`pdftoppm -png -r 60 -f 1 -l 1`)."""
    if shutil.which("pdftoppm") is None:
        msg = "pdftoppm not found: install Debian's `poppler-utils`"
        raise SystemExit(msg)
    target.parent.mkdir(parents=True, exist_ok=True)
    page = ["-f", "1", "-l", "1", "-singlefile"]
    command = ["pdftoppm", "-png", "-r", str(dpi), *page, str(pdf), str(target.with_suffix(""))]
    subprocess.run(command, check=True, capture_output=True, timeout=PDFTOPPM_TIMEOUT_S)
    if target.stat().st_size > SIZE_LIMIT_BYTES:
        msg = f"{target} is over {SIZE_LIMIT_BYTES // 1024} KB; lower the dpi"
        raise SystemExit(msg)
    return target


if __name__ == "__main__":
    sys.exit(main())
