"""Every run ends with something to read and look at: interrupted, out of budget, or without LaTeX."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.attempts import InterruptedRunError
from tests.controller.fakes import FakeSandbox, make_loop


def _readable(root: Path) -> None:
    assert (root / "report" / "index.html").is_file()
    assert (root / "paper" / "paper.md").is_file()
    assert (root / "report" / "summary.md").is_file()
    assert (root / "aggregates.json").is_file()


def test_an_interrupted_run_still_leaves_its_dashboard_and_paper(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    loop = make_loop(tmp_path, sandbox, seeds=2)
    sandbox.on_run = lambda kind, job: loop.interrupt() if len(sandbox.calls) == 12 else None
    with pytest.raises(InterruptedRunError):
        loop.run()
    root = loop.store.root
    _readable(root)
    assert not (root / "best.json").exists()  # no test number exists yet, and none is invented
    assert "interrupted" in (root / "report" / "summary.md").read_text().lower()
    assert '<meta http-equiv="refresh"' in (root / "report" / "index.html").read_text()  # not final yet


def test_a_run_out_of_budget_still_leaves_its_dashboard_and_paper(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, FakeSandbox(job_seconds=30), budget_s=240, reserve_s=60, seeds=2)
    state = loop.run()
    assert any(h.limit.startswith("budget") or h.limit == "matrix.shrunk" for h in state.limits_hit)
    _readable(loop.store.root)


def test_a_run_whose_latex_fails_keeps_its_markdown_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no latexmk, no pdflatex: the PDF cannot be built
    loop = make_loop(tmp_path, FakeSandbox(), seeds=2)
    assert loop.run().status == "finished"
    root = loop.store.root
    _readable(root)
    assert not (root / "paper" / "main.pdf").exists()
    problems = json.loads((root / "report" / "problems.json").read_text())
    assert any(p.startswith("paper:") for p in problems)
    assert "Problems writing this report" in (root / "report" / "summary.md").read_text()
    assert json.loads((root / "best.json").read_text())["value"] is not None  # the results stand
