"""write_paper: the run's paper draft (paper.md, main.tex, references.bib, main.pdf).

The draft is written from the report's own tables (`aggregates`, `best_summary`) and the
run's records; figures come in ready-made and are copied beside it. The LaTeX build is the
one effect that may fail, and its failure is data: `PaperOutcome.error`, with the log tail
in paper/latex.log, while paper.md and main.tex stand.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

from controller.figures import Figure
from controller.paper.bib import Bibliography, build_bibliography, render_bibliography
from controller.paper.claims import backing
from controller.paper.content import PaperFigure, build_content, copy_figures, record_sources
from controller.paper.latex import LATEX_TIMEOUT_S, CompileResult, build_pdf, plain_ascii, run_chktex
from controller.paper.prose import PROSE_SECTIONS, Paragraph, Rejected, write_prose
from controller.paper.render import Renderer
from controller.paper.trace import HAS_DIGIT
from controller.store import write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from controller.report import Results

log = structlog.get_logger(__name__)

PAPER_DIR = "paper"
MARKDOWN = "paper.md"
TEX = "main.tex"
BIB = "references.bib"
NUMBERS = "numbers.json"
LATEX_LOG = "latex.log"
CHKTEX_LOG = "chktex.log"
BRACES = re.compile(r"[{}]")
TEX_ACCENT = re.compile(r"\\[\"'`^~=.]|\\[A-Za-z]+\s*")


@dataclass(frozen=True)
class PaperOutcome:
    """What write_paper wrote, and what went wrong with the PDF if anything did."""

    folder: Path
    markdown: Path
    tex: Path
    bibliography: Path
    numbers: Path
    pdf: Path | None
    """main.pdf, when it was asked for and built."""
    figures: list[PaperFigure] = field(default_factory=list)
    citations: list[str] = field(default_factory=list)
    """Every cite key the text uses (all in references.bib)."""
    prose: Literal["template", "llm"] = "template"
    prose_rejected: list[Rejected] = field(default_factory=list)
    """Model sentences dropped (an invented number, an unknown placeholder, an unbacked claim)."""
    chktex: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    """Why there is no main.pdf when one was asked for (LaTeX missing, failed, timed out)."""
    latex_log: Path | None = None


def _references(bibliography: Bibliography) -> list[dict[str, str]]:
    """The Markdown reference list (LaTeX has bibtex): key, authors, year, title, venue."""
    lines = []
    for entry in bibliography.entries:
        fields = {f.key.lower(): TEX_ACCENT.sub("", BRACES.sub("", str(f.value))) for f in entry.fields}
        venue = (
            fields.get("journal") or fields.get("booktitle") or fields.get("howpublished") or fields.get("institution")
        )
        parts = [fields.get("author", ""), f"({fields['year']})" if "year" in fields else "", fields.get("title", "")]
        text = " ".join(p for p in parts if p) + (f". {venue}." if venue else ".")
        lines.append({"key": entry.key, "text": plain_ascii(text)})
    return lines


def _prose_context(context: dict[str, Any]) -> dict[str, Any]:
    """What the model sees: names, verdicts and directions, never a number."""
    rows = {r["name"]: r for r in context["main_rows"] + context["ablation_rows"]}

    def direction(name: str) -> str:
        diff = rows.get(name, {}).get("diff")
        if diff is None:
            return "not compared"
        return "above the baseline" if diff.value > 0 else "below the baseline" if diff.value < 0 else "equal to it"

    def no_digits(text: str | None) -> str:
        return HAS_DIGIT.sub("#", text or "")

    hypotheses = [
        {"id": h["id"], "arm": h["arm"], "statement": no_digits(h["statement"]), "supported": h["supported"]}
        for h in context["hypotheses"]
    ]
    arms = [{"name": n, "direction": direction(n), "verdict": rows[n]["verdict"]} for n in rows if n != "baseline"]
    return {
        "task": context["task"],
        "metric": context["metric"],
        "objective": no_digits(context["objective"]),
        "dataset": context["setup"]["dataset"],
        "arch": context["setup"]["arch"],
        "hypotheses": hypotheses,
        "arms": arms,
        "selected": context["held"]["arm"],
        "tested": context["held"]["test"] is not None,
        "weaker": context["limitations"]["weaker"],
    }


def write_paper(
    results: Results, figures: list[Figure], *, compile_pdf: bool, latex_timeout_s: float = LATEX_TIMEOUT_S
) -> PaperOutcome:
    """paper/ in the run folder: paper.md, main.tex, references.bib, numbers.json, figures/,
    and main.pdf when `compile_pdf` (LaTeX problems are reported in the outcome, never raised)."""
    from controller.report import aggregates, best_summary  # report imports this package: no cycle

    root = results.store.root
    folder = root / PAPER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    aggregate = aggregates(results)
    best = best_summary(results) if results.final else None
    src = record_sources(results, aggregate, best)
    bibliography = build_bibliography(root, results.state.config)
    write_text_atomic(folder / BIB, render_bibliography(bibliography))
    paper_figures, warnings = copy_figures(figures, folder)
    warnings += [f"literature record skipped: {s}" for s in bibliography.skipped]
    content = build_content(results, src, paper_figures, bibliography)
    backed = backing(aggregate, src.get("journal.json", "", []), results.task.metric.higher_is_better)

    prose: dict[str, list[Paragraph]] = {}
    rejected: list[Rejected] = []
    if results.llm is not None:
        prose, rejected, prose_error = write_prose(
            results.llm, _prose_context(content.context), content.values, content.names, bibliography.keys, backed
        )
        if prose_error:
            warnings.append(f"LLM prose not written ({prose_error}); the template's prose stands in")
    context = {
        **content.context,
        "prose": {section: prose.get(section, []) for section in PROSE_SECTIONS},
        "prose_by_llm": bool(prose),
        "references": _references(bibliography),
    }

    ledgers: dict[str, list[dict[str, Any]]] = {}
    for name, fmt, template in ((MARKDOWN, "md", "paper.md.j2"), (TEX, "tex", "main.tex.j2")):
        renderer = Renderer(fmt)  # type: ignore[arg-type]
        write_text_atomic(folder / name, renderer.render(template, context))
        ledgers[name] = [n.provenance() for n in renderer.inserted]
    write_json_atomic(
        folder / NUMBERS,
        {
            "rule": "every number printed in paper.md and main.tex, in order, with the record it was read from",
            **ledgers,
            "prose": {
                "written_by": "llm" if prose else "template",
                "rejected": [r.__dict__ for r in rejected],
            },
        },
    )
    citations = sorted({*bibliography.dataset, *bibliography.model, *bibliography.statistics, *bibliography.literature})
    chktex = run_chktex(folder / TEX)
    write_text_atomic(folder / CHKTEX_LOG, "\n".join(chktex) + ("\n" if chktex else ""))
    outcome = PaperOutcome(
        folder=folder,
        markdown=folder / MARKDOWN,
        tex=folder / TEX,
        bibliography=folder / BIB,
        numbers=folder / NUMBERS,
        pdf=None,
        figures=paper_figures,
        citations=citations,
        prose="llm" if prose else "template",
        prose_rejected=rejected,
        chktex=chktex,
        warnings=warnings,
    )
    if not compile_pdf:
        for stale in (folder / "main.pdf", folder / LATEX_LOG):  # an older draft's PDF is not this one's
            stale.unlink(missing_ok=True)
        return outcome
    return _with_pdf(outcome, latex_timeout_s)


def _with_pdf(outcome: PaperOutcome, timeout_s: float) -> PaperOutcome:
    """Build main.pdf; a failure of any kind becomes the outcome's error and latex.log."""
    try:
        built = build_pdf(outcome.folder, TEX, timeout_s)
    except Exception as exc:  # the Markdown paper must survive whatever the toolchain does
        log.exception("paper.latex_failed", error=str(exc))
        built = CompileResult(None, f"LaTeX build failed: {type(exc).__name__}: {exc}")
    if built.error is None:
        (outcome.folder / LATEX_LOG).unlink(missing_ok=True)
        return replace(outcome, pdf=built.pdf)
    log_path = outcome.folder / LATEX_LOG
    write_text_atomic(log_path, f"{built.error}\n\n{built.log_tail}")
    log.warning("paper.pdf_missing", error=built.error)
    return replace(outcome, error=built.error, latex_log=log_path)


def numbers_ledger(folder: Path) -> dict[str, Any]:
    """paper/numbers.json as written ({} when absent or unreadable)."""
    try:
        data = json.loads((folder / NUMBERS).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
