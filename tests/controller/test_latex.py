"""The paper's LaTeX edge: escaping, the toolchain check, latexmk under a timeout, chktex.

Tests that need a real texlive fail when it is missing and CI is set (a skip there would
hide a broken PDF), and skip with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from controller import doctor
from controller.llm import LLMClient
from controller.paper import latex, latex_available, review_paper
from controller.paper.latex import escape_tex
from controller.paper.render import Renderer
from controller.report import Results
from sandbox.backends.docker import EngineHealth
from tests.controller.fake_openai import FakeOpenAI, Reply
from tests.controller.test_paper import finished_run, write_draft
from tests.controller.test_paper_review import FAST_RETRY


def require_latex() -> None:
    ok, detail = latex_available()
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"LaTeX is required in CI ({detail}); install: {latex.INSTALL_FIX}")
    pytest.skip(f"LaTeX not available here: {detail}")


@pytest.fixture
def results(tmp_path: Path) -> Results:
    return finished_run(tmp_path)


def test_main_pdf_compiles_with_latexmk(results: Results, tmp_path: Path) -> None:
    require_latex()
    outcome = write_draft(results, tmp_path, compile_pdf=True)
    assert outcome.error is None, (outcome.folder / "latex.log").read_text() if outcome.latex_log else ""
    assert outcome.pdf == outcome.folder / "main.pdf" and outcome.pdf.read_bytes().startswith(b"%PDF")
    log = (outcome.folder / "main.log").read_text(errors="replace")
    assert "Citation" not in log or "undefined" not in log  # every \citep resolved through bibtex
    assert "Reference `" not in log  # every \ref resolved
    assert review_paper(results, outcome)["ok"]


def test_escaped_run_text_compiles(tmp_path: Path) -> None:
    require_latex()
    nasty = "a\\b {c} $d$ & e % f # g _ h ^ i ~ j < k > l | m \"n\" -- o `` p '' 🚀 café \x07"
    renderer = Renderer("tex")
    body = f"{escape_tex(nasty)}\n\n{renderer.code(nasty)}\n\n{renderer.quote(nasty)}\n"
    (tmp_path / "main.tex").write_text(
        "\\documentclass{article}\\newcommand{\\record}[1]{#1}\\begin{document}\n" + body + "\\end{document}\n"
    )
    result = latex.build_pdf(tmp_path, "main.tex")
    assert result.error is None and result.pdf is not None
    if subprocess.run(["which", "pdftotext"], capture_output=True, check=False).returncode == 0:
        text = subprocess.run(["pdftotext", str(result.pdf), "-"], capture_output=True, text=True, check=True).stdout
        assert text.count("a\\b {c} $d$ & e % f # g") == 3  # printed literally, three times
        assert "café" not in text and "cafe" in text


def test_a_latex_timeout_is_an_error_and_the_markdown_stands(results: Results, tmp_path: Path) -> None:
    require_latex()
    outcome = write_draft(results, tmp_path, compile_pdf=True, latex_timeout_s=0.01)
    assert outcome.pdf is None and outcome.error == "latexmk did not finish within 0.01 s"
    assert not (outcome.folder / "main.pdf").exists()
    assert outcome.latex_log == outcome.folder / "latex.log" and outcome.latex_log.is_file()
    assert "## Results" in outcome.markdown.read_text() and outcome.tex.is_file()


def test_broken_latex_is_an_error_with_the_log_tail_kept(
    results: Results, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_latex()
    render = Renderer.render

    def broken(self: Renderer, template: str, context: dict[str, object]) -> str:
        text = render(self, template, context)
        return text.replace("\\maketitle", "\\maketitle\n\\thiscommanddoesnotexist") if self.fmt == "tex" else text

    monkeypatch.setattr(Renderer, "render", broken)
    outcome = write_draft(results, tmp_path, compile_pdf=True)
    assert outcome.pdf is None and outcome.error is not None
    assert outcome.error.startswith("latexmk failed (exit") and "Undefined control sequence" in outcome.error
    assert "thiscommanddoesnotexist" in (outcome.folder / "latex.log").read_text()
    assert "## Abstract" in outcome.markdown.read_text()


def test_missing_latex_is_an_error_not_an_exception(
    results: Results, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(latex.shutil, "which", lambda name: None)
    assert latex_available() == (False, "latexmk, pdflatex, bibtex not found")
    outcome = write_draft(results, tmp_path, compile_pdf=True)
    assert outcome.pdf is None and outcome.error is not None
    assert "LaTeX not available" in outcome.error and latex.INSTALL_FIX in outcome.error
    assert outcome.markdown.is_file() and outcome.tex.is_file() and outcome.chktex == []


def test_no_pdf_is_built_unless_asked(results: Results, tmp_path: Path) -> None:
    outcome = write_draft(results, tmp_path, compile_pdf=False)
    assert outcome.pdf is None and outcome.error is None and not (outcome.folder / "main.pdf").exists()


def test_chktex_warnings_are_recorded(results: Results, tmp_path: Path) -> None:
    require_latex()
    if latex.shutil.which("chktex") is None:
        pytest.skip("chktex not installed")
    outcome = write_draft(results, tmp_path)
    logged = (outcome.folder / "chktex.log").read_text().splitlines()
    assert logged == outcome.chktex
    assert all(line.startswith("main.tex:") for line in logged)


def test_escape_tex_leaves_no_command_math_or_ligature() -> None:
    assert escape_tex("\\input{x}") == "\\textbackslash{}input\\{x\\}"
    assert escape_tex("$1 & 2% #_^~") == "\\$1 \\& 2\\% \\#\\_\\textasciicircum{}\\textasciitilde{}"
    assert escape_tex("a -- b ``c''") == "a -{}- b `{}`c'{}'"
    assert escape_tex("café 🚀\n") == "cafe ? "


def test_the_doctor_has_a_latex_row_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # An unreachable engine keeps run_checks from probing Docker (no container is started here).
    monkeypatch.setattr(doctor, "check_engine", lambda: EngineHealth("unix:///nonexistent.sock", error="unreachable"))
    monkeypatch.setattr(doctor, "latex_available", lambda: (False, "latexmk not found"))
    row = next(c for c in doctor.run_checks() if c.name == "LaTeX (paper PDF)")
    assert row.status == "warn" and row.fix == "apt-get install texlive-latex-recommended latexmk chktex"
    assert "Markdown paper and the dashboard are written anyway" in row.detail
    monkeypatch.setattr(doctor, "latex_available", lambda: (True, "Latexmk 4.79; pdfTeX 3.14"))
    assert doctor.latex_check() == doctor.Check("LaTeX (paper PDF)", "ok", "Latexmk 4.79; pdfTeX 3.14")


def test_a_paper_with_model_prose_compiles(results: Results, tmp_path: Path) -> None:
    require_latex()
    prose = {
        "abstract": "The `novelty:wide-lr` arm reached {{arm:novelty:wide-lr.mean}} {{cite:welch1947,holm1979}}.",
        "introduction": "Braces {x} & $math$ \\section{x} stay text. We ran 100 tests.",
        "discussion": "Hypothesis wide-lr is supported.",
        "conclusion": "Nothing more.",
    }
    with FakeOpenAI() as fake:
        fake.script(Reply(json.dumps(prose)))
        client = LLMClient("gpt-4o-mini", base_url=fake.base_url, api_key="k", retry=FAST_RETRY)
        outcome = write_draft(replace(results, llm=client), tmp_path, compile_pdf=True)
    tex = outcome.tex.read_text()
    assert outcome.error is None and outcome.pdf is not None and outcome.prose == "llm"
    assert "\\texttt{novelty:wide-lr} arm reached 0.8600 \\citep{welch1947,holm1979}." in tex
    assert "Braces \\{x\\} \\& \\$math\\$ \\textbackslash{}section\\{x\\} stay text." in tex
    assert "We ran" not in tex  # the sentence with an invented number was dropped whole
