"""LaTeX at the edges: escaping untrusted text, finding the toolchain, compiling, linting.

Nothing here raises for a missing or failing LaTeX: the paper's Markdown and .tex stand on
their own, and a compile failure is reported as data (`CompileResult.error`) with the log
tail kept beside them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

LATEX_TIMEOUT_S = 120.0
"""Wall-clock limit for one latexmk run (pdflatex, bibtex, reruns) of the paper."""
CHKTEX_TIMEOUT_S = 30.0
VERSION_PROBE_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 20_000
"""How much of latexmk's output and main.log is kept in paper/latex.log on a failure."""
REQUIRED_FILES = (
    "graphicx.sty",
    "hyperref.sty",
    "natbib.sty",
    "amsmath.sty",
    "geometry.sty",
    "booktabs.sty",
    "plainnat.bst",
)
"""What main.tex.j2 loads: texlive-latex-base plus booktabs from texlive-latex-recommended."""
INSTALL_FIX = "apt-get install texlive-latex-recommended latexmk chktex"

_TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "%": r"\%",
    "_": r"\_",
    "^": r"\textasciicircum{}",
    "~": r"\textasciitilde{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    '"': "''",
}
TEX_SYMBOLS = {
    "\u00d7": r"$\times$",
    "\u2265": r"$\geq$",
    "\u2264": r"$\leq$",
    "\u00b1": r"$\pm$",
    "\u2248": r"$\approx$",
    "\u2192": r"$\rightarrow$",
    "\u00b7": r"$\cdot$",
    "\u03b1": r"$\alpha$",
    "\u03c3": r"$\sigma$",
    "\u03bc": r"$\mu$",
    "\u0394": r"$\Delta$",
}
"""Symbols a caption or a statement may well use (n \u2265 3, \u00b1 std), set as math."""
ASCII_FALLBACK = {
    "\u2212": "-",
    "\u2013": "-",
    "\u2014": "-",
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": "'",
    "\u201d": "'",
}
_TEX_TEXT_LIGATURES = re.compile(r"(?<=-)-|(?<=`)`|(?<=')'")
_LATEX_ERROR = re.compile(r"^(?:! |\S+\.tex:\d+: ).*$", re.MULTILINE)
"""A TeX error line, in the classic (`! ...`) or the -file-line-error (`./main.tex:12: ...`) style."""


def plain_ascii(text: str) -> str:
    """Fold to printable ASCII: accents dropped, common symbols spelled out, the rest '?'.

    pdflatex without extra packages stops at characters it has no glyph for (emoji, CJK), so
    untrusted text must not reach it raw.
    """
    out = []
    for char in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(char):
            continue
        if char.isspace():
            out.append(" ")
        elif " " <= char <= "~" or char in TEX_SYMBOLS:
            out.append(char)
        elif char in ASCII_FALLBACK:
            out.append(ASCII_FALLBACK[char])
        elif not unicodedata.category(char).startswith("C"):
            out.append("?")
    return "".join(out)


def escape_tex(text: str) -> str:
    """Untrusted text as LaTeX that prints it literally (no command, no math, no ligature)."""
    escaped = "".join(_TEX_SPECIALS.get(char) or TEX_SYMBOLS.get(char) or char for char in plain_ascii(text))
    # `--`, ``` `` ``` and `''` would print as dashes and curly quotes: break them up.
    return _TEX_TEXT_LIGATURES.sub(lambda m: "{}" + m.group(0), escaped)


@dataclass(frozen=True)
class CompileResult:
    """What one latexmk run produced."""

    pdf: Path | None
    error: str | None = None
    log_tail: str = ""


def _version(command: list[str]) -> str | None:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=VERSION_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def missing_tex_files() -> list[str]:
    """The packages main.tex.j2 needs that kpsewhich cannot find (all of them without kpsewhich)."""
    if shutil.which("kpsewhich") is None:
        return list(REQUIRED_FILES)
    missing = []
    for name in REQUIRED_FILES:
        try:
            proc = subprocess.run(
                ["kpsewhich", name], capture_output=True, text=True, timeout=VERSION_PROBE_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            missing.append(name)
            continue
        if proc.returncode != 0 or not proc.stdout.strip():
            missing.append(name)
    return missing


def latex_available() -> tuple[bool, str]:
    """Whether main.pdf can be built here, and the versions (or what is missing) in a line."""
    tools = {name: shutil.which(name) for name in ("latexmk", "pdflatex", "bibtex")}
    absent = [name for name, path in tools.items() if path is None]
    if absent:
        return False, f"{', '.join(absent)} not found"
    missing = missing_tex_files()
    if missing:
        return False, f"LaTeX packages missing: {', '.join(missing)}"
    versions = [
        _version(["latexmk", "-v"]) or "latexmk (version unknown)",
        _version(["pdflatex", "--version"]) or "pdflatex (version unknown)",
    ]
    chktex = _version(["chktex", "--version"]) if shutil.which("chktex") else None
    versions.append(chktex.split(" - ")[0] if chktex else "chktex not found (no lint of main.tex)")
    return True, "; ".join(versions)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """latexmk runs pdflatex and bibtex as children: end the whole process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(text: str) -> str:
    return (
        text
        if len(text) <= LOG_TAIL_CHARS
        else f"[... {len(text) - LOG_TAIL_CHARS} characters cut ...]\n{text[-LOG_TAIL_CHARS:]}"
    )


def build_pdf(folder: Path, tex_name: str = "main.tex", timeout_s: float = LATEX_TIMEOUT_S) -> CompileResult:
    """Run latexmk in `folder` under a timeout; never raises for a LaTeX problem."""
    ok, detail = latex_available()
    pdf = folder / Path(tex_name).with_suffix(".pdf").name
    pdf.unlink(missing_ok=True)  # a stale PDF must not pass for this draft's
    if not ok:
        return CompileResult(None, f"LaTeX not available ({detail}); fix: {INSTALL_FIX}")
    # Paranoid file access: bibliography fields from the literature stage reach LaTeX, and
    # nothing they say may read (or write) files outside the paper folder.
    env = {**os.environ, "openin_any": "p", "openout_any": "p", "shell_escape": "f"}
    command = [
        "latexmk",
        "-pdf",
        "-g",
        "-norc",
        "-interaction=nonstopmode",
        "-halt-on-error",
        "-file-line-error",
        tex_name,
    ]
    try:
        proc = subprocess.Popen(
            command,
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,
            env=env,
        )
    except OSError as exc:
        return CompileResult(None, f"latexmk could not start: {exc}")
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        log = _read_log(folder, tex_name)
        pdf.unlink(missing_ok=True)
        return CompileResult(None, f"latexmk did not finish within {timeout_s:g} s", _tail(log))
    log = _read_log(folder, tex_name)
    if proc.returncode != 0 or not pdf.is_file():
        first = _LATEX_ERROR.search(log) or _LATEX_ERROR.search(output)
        reason = first.group(0) if first else "see latex.log"
        return CompileResult(None, f"latexmk failed (exit {proc.returncode}): {reason}", _tail(output + "\n" + log))
    return CompileResult(pdf)


def _read_log(folder: Path, tex_name: str) -> str:
    path = folder / Path(tex_name).with_suffix(".log").name
    return path.read_text(errors="replace") if path.is_file() else ""


def run_chktex(tex: Path) -> list[str]:
    """chktex's warnings for the file, one a line ([] when chktex is absent)."""
    if shutil.which("chktex") is None:
        return []
    try:
        proc = subprocess.run(
            ["chktex", "-q", "-v0", "-I0", tex.name],
            cwd=tex.parent,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=CHKTEX_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"chktex did not run: {type(exc).__name__}"]
    return [line for line in proc.stdout.splitlines() if line.strip()]
