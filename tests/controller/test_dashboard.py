"""The dashboard as a browser shows it, the runs index, and `controller report --open`.

The page is loaded from disk in real headless Chromium, driven over the DevTools protocol on
a pipe (`--remote-debugging-pipe`: file descriptors 3 and 4, no port, nothing on the
network), with the standard library only. Without Chromium the browser test skips, except
in CI (`CI` set), where it fails: a dashboard nobody opened is not tested.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from controller.dashboard import write_dashboard, write_runs_index
from controller.figures import Figure, make_figures
from controller.registry import LimitHit
from controller.report import Results, write_tables
from controller.store import RunStore
from tests.controller.cli.support import controller, one_line_error
from tests.controller.fakes import FakeSandbox, held_out_records, make_loop

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".cache" / "ci-artifacts"
HOSTILE = "<script>console.error('injected')</script><img src=x>"
HEADLESS_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
BROWSER_TIMEOUT_S = 60.0
# What the page reports about itself once loaded, as one JSON value.
PAGE_PROBE = """JSON.stringify({
  scripts: document.scripts.length,
  images: [...document.images].map(i => ({alt: i.alt, width: i.naturalWidth, data: i.src.startsWith('data:image/png')})),
  arms: [...document.querySelectorAll('#arms tbody tr')].map(tr => tr.cells[0].firstChild.textContent.trim()),
  attempts: document.querySelectorAll('#attempts tbody tr').length,
  firstAttemptLinks: [...document.querySelectorAll('#attempts tbody tr:first-child a')].map(a => a.href),
  refresh: document.querySelectorAll('meta[http-equiv="refresh"]').length,
  result: document.querySelector('#result').innerText,
})"""


# -- a headless Chromium over the DevTools pipe ---------------------------------------------------


def chromium_binary() -> str:
    for name in (os.environ.get("SANDLAB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    message = "no headless Chromium found (install Debian's `chromium` or set SANDLAB_CHROMIUM)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI must check the dashboard in a real browser")
    pytest.skip(message)


class Chromium:
    """Headless Chromium speaking the DevTools protocol: NUL-terminated JSON on fds 3 (in) and 4 (out)."""

    def __init__(self, binary: str, profile: Path) -> None:
        commands_r, self._commands = os.pipe()
        self._replies, replies_w = os.pipe()

        def wire_pipes() -> None:  # in the child: Chromium expects exactly fds 3 and 4
            read_end = fcntl.fcntl(commands_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(replies_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.proc = subprocess.Popen(
            [binary, *HEADLESS_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # our own descriptors are non-inheritable anyway (PEP 446)
            preexec_fn=wire_pipes,  # noqa: PLW1509 - single-threaded here, and nothing else can place fds 3/4
        )
        os.close(commands_r)
        os.close(replies_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return dict(reply.get("result", {}))
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._receive())
        return next(e for e in self.events if e.get("method") == method)

    def _receive(self) -> dict[str, Any]:
        deadline = time.monotonic() + BROWSER_TIMEOUT_S
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._replies], [], [], max(deadline - time.monotonic(), 0))
            assert ready, f"Chromium did not answer within {BROWSER_TIMEOUT_S:.0f}s"
            chunk = os.read(self._replies, 1 << 20)
            assert chunk, f"Chromium closed the DevTools pipe (exit status {self.proc.poll()})"
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(message))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except AssertionError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._commands)
        os.close(self._replies)


def load_in_chromium(page: Path, screenshot: Path) -> dict[str, Any]:
    """Open the page from disk; return its probe, console errors, requests made, and keep a screenshot."""
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="sandlab-chromium-") as profile:
        browser = Chromium(binary, Path(profile))
        try:
            target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                browser.call(f"{domain}.enable", session=session)
            viewport = {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
            browser.call("Emulation.setDeviceMetricsOverride", viewport, session)
            browser.call("Page.navigate", {"url": page.as_uri()}, session)
            browser.wait_for("Page.loadEventFired")
            probe = browser.call("Runtime.evaluate", {"expression": PAGE_PROBE, "returnByValue": True}, session)
            shot = browser.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)
        finally:
            browser.close()
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    events = browser.events
    errors = [e["params"] for e in events if e.get("method") == "Runtime.exceptionThrown"]
    errors += [
        e["params"]
        for e in events
        if e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in {"error", "assert"}
    ]
    errors += [
        e["params"] for e in events if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
    ]
    requests = [e["params"]["request"]["url"][:80] for e in events if e.get("method") == "Network.requestWillBeSent"]
    return {"page": json.loads(probe["result"]["value"]), "errors": errors, "requests": requests}


# -- fixtures -------------------------------------------------------------------------------


def finished_run(tmp_path: Path) -> Results:
    loop = make_loop(tmp_path, FakeSandbox())
    loop.run()
    return loop.results(held_out_records(loop))


def with_hostile_arm(results: Results) -> Results:
    """The same run with one arm renamed to markup (arm names come from generated plans)."""
    renamed = {HOSTILE if name == "ablation:wide-lr-no-lr" else name: arm for name, arm in results.arms.items()}
    return replace(results, arms=renamed)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Results, list[Figure]]:
    tmp = tmp_path_factory.mktemp("dashboard")
    results = finished_run(tmp)
    write_tables(results)
    return results, make_figures(results, results.store.root / "report" / "figures")


@pytest.fixture(scope="module")
def in_browser(run: tuple[Results, list[Figure]]) -> Iterator[dict[str, Any]]:
    results, figures = run
    review = {"checks": [{"name": "numbers traced", "ok": True, "detail": HOSTILE}], "llm_review": {"score": 7}}
    page = write_dashboard(with_hostile_arm(results), figures, review=review, problems=[f"paper: {HOSTILE}"])
    yield load_in_chromium(page, ARTIFACTS / "dashboard.png")


# -- the dashboard in Chromium ------------------------------------------------------------------


def test_every_figure_is_inlined_and_decodes_in_the_browser(
    in_browser: dict[str, Any], run: tuple[Results, list[Figure]]
) -> None:
    images = in_browser["page"]["images"]
    assert [i["alt"] for i in images] == [f.title for f in run[1]]
    assert len(images) == 5
    assert all(i["data"] and i["width"] > 0 for i in images), images


def test_the_page_opens_from_disk_without_errors_or_fetches(in_browser: dict[str, Any]) -> None:
    assert in_browser["errors"] == []
    assert in_browser["requests"], "the browser reported no request at all: the probe is broken"
    assert all(url.startswith(("file:", "data:")) for url in in_browser["requests"]), in_browser["requests"]


def test_the_arms_table_has_one_row_per_scored_arm_in_run_order(
    in_browser: dict[str, Any], run: tuple[Results, list[Figure]]
) -> None:
    results = with_hostile_arm(run[0])
    expected = [name for name in results.arms if name in results.stats()]
    assert len(expected) == 18  # every scored arm of the fake offline run, the hostile one included
    assert in_browser["page"]["arms"] == expected  # the hostile name shows as text, in its place


def test_a_hostile_arm_name_is_shown_as_text_and_never_runs(in_browser: dict[str, Any]) -> None:
    assert in_browser["page"]["scripts"] == 0
    assert HOSTILE in in_browser["page"]["arms"]
    assert not any("injected" in json.dumps(e) for e in in_browser["errors"])


def test_every_attempt_has_a_row_whose_links_reach_its_files(
    in_browser: dict[str, Any], run: tuple[Results, list[Figure]]
) -> None:
    store = run[0].store
    assert in_browser["page"]["attempts"] == len(store.attempts())
    links = [Path(unquote(urlparse(href).path)) for href in in_browser["page"]["firstAttemptLinks"]]
    assert [p.name for p in links] == ["stdout.log", "stderr.log", "events.jsonl"]
    assert all(p.is_file() and p.parent == store.attempt_dir(1) for p in links)


def test_the_finished_page_shows_the_test_result_and_does_not_reload(
    in_browser: dict[str, Any], run: tuple[Results, list[Figure]]
) -> None:
    best = json.loads((run[0].store.root / "best.json").read_text())
    assert f"test accuracy = {best['value']:.4f}" in in_browser["page"]["result"]
    assert in_browser["page"]["refresh"] == 0
    assert (ARTIFACTS / "dashboard.png").read_bytes().startswith(b"\x89PNG")


# -- the HTML itself --------------------------------------------------------------------------


class Tags(HTMLParser):
    """Start tags with their attributes, and the text, of an HTML page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def refresh(self) -> list[str | None]:
        return [a.get("content") for t, a in self.tags if t == "meta" and a.get("http-equiv") == "refresh"]


def test_untrusted_strings_are_escaped_everywhere(run: tuple[Results, list[Figure]]) -> None:
    results, figures = run
    review = {"checks": [{"name": HOSTILE, "ok": False, "detail": HOSTILE}], "llm_review": HOSTILE}
    html = write_dashboard(with_hostile_arm(results), figures, review=review, problems=[HOSTILE]).read_text()
    page = Tags(html)
    assert not [t for t, _ in page.tags if t == "script"]
    assert len([t for t, a in page.tags if t == "img" and a.get("src") == "x"]) == 0
    assert sum(HOSTILE in text for text in page.text) >= 5  # arm row, check name and detail, review, problem


def test_a_live_run_reloads_itself_and_a_finished_one_does_not(run: tuple[Results, list[Figure]]) -> None:
    results, figures = run
    finished = Tags(write_dashboard(results, figures).read_text())
    progress = Tags(write_dashboard(replace(results, final=False, tests=[]), figures).read_text())
    running = replace(results, state=results.state.model_copy(update={"status": "running"}))
    live = Tags(write_dashboard(running, figures).read_text())
    assert finished.refresh() == []
    assert progress.refresh() == ["10"]
    assert live.refresh() == ["10"]
    assert "No test result yet" in "".join(progress.text)


def test_a_weaker_run_carries_the_integrity_warning(run: tuple[Results, list[Figure]]) -> None:
    results, figures = run
    sealed = write_dashboard(results, figures).read_text()
    weaker_state = results.state.model_copy(update={"integrity": "weaker"})
    weaker = write_dashboard(replace(results, state=weaker_state), figures).read_text()
    assert "integrity: weaker" not in sealed
    assert "integrity: weaker" in weaker


def test_limits_hit_and_suspect_attempts_are_listed(run: tuple[Results, list[Figure]], tmp_path: Path) -> None:
    results, figures = run
    store, state = RunStore.create(tmp_path, results.state.config, "suspicious")
    state.limits_hit.append(LimitHit(limit="iteration.attempts", iteration=2, detail="40 >= 40"))
    forged = results.store.attempts()[-2].model_copy(
        update={"number": 1, "suspect": True, "suspect_reason": "telemetry 0.99 vs host 0.81"}
    )
    store.commit_attempt(store.staging_dir(1), forged, {})
    text = " ".join(Tags(write_dashboard(replace(results, store=store, state=state), figures).read_text()).text)
    assert "iteration.attempts" in text and "40 >= 40" in text
    assert "attempt 0001 (" in text and "telemetry 0.99 vs host 0.81" in text


def test_a_missing_figure_file_is_listed_as_a_problem_not_a_broken_image(
    run: tuple[Results, list[Figure]], tmp_path: Path
) -> None:
    results, figures = run
    gone = Figure("gone", "Gone", "a caption", tmp_path / "gone.png", tmp_path / "gone.pdf")
    page = Tags(write_dashboard(results, [*figures, gone]).read_text())
    assert len([t for t, _ in page.tags if t == "img"]) == len(figures)
    assert any("figure gone: cannot read gone.png" in text for text in page.text)
    write_dashboard(results, figures)  # leave the module's page as the other tests expect


# -- the runs index -------------------------------------------------------------------------------


def test_the_runs_index_links_each_run_to_its_dashboard(run: tuple[Results, list[Figure]]) -> None:
    results, figures = run
    runs_dir = results.store.root.parent
    write_dashboard(results, figures)
    RunStore.create(runs_dir, results.state.config, "r2-no-report")
    index = write_runs_index(runs_dir)
    page = Tags(index.read_text())
    hrefs = [a["href"] for t, a in page.tags if t == "a"]
    assert hrefs == ["r1/report/index.html"]
    assert all((runs_dir / str(href)).is_file() for href in hrefs)
    text = " ".join(page.text)
    best = json.loads((results.store.root / "best.json").read_text())
    assert "r2-no-report" in text and "no dashboard yet" in text
    assert f"{best['value']:.4f}" in text
    ids = [t.strip() for t in page.text if t.strip() in {"r1", "r2-no-report"}]
    assert ids == ["r2-no-report", "r1"]  # newest first


# -- controller report --open -----------------------------------------------------------------------


def test_report_open_prints_the_dashboards_path(run: tuple[Results, list[Figure]]) -> None:
    results, figures = run
    page = write_dashboard(results, figures)
    proc = controller("report", "r1", "--open", "--runs-dir", str(results.store.root.parent))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(page)


def test_report_open_without_a_dashboard_names_resume(run: tuple[Results, list[Figure]], tmp_path: Path) -> None:
    RunStore.create(tmp_path, run[0].state.config, "bare")
    proc = controller("report", "bare", "--open", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "controller resume bare" in one_line_error(proc)
