"""Everything a run leaves for the researcher, written after every iteration and at the end.

Tables first (aggregates, best, best_config), then the figures, the paper draft and its
review, the dashboard, the index over all runs, summary.md, and MLflow. Each step after the
tables is guarded: a step that fails (LaTeX missing, a figure without data, MLflow down)
is recorded in report/problems.json and shown in the report, and never loses the run or
the other steps. Only the final snapshot compiles the PDF and logs to MLflow.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from controller.dashboard import write_dashboard, write_runs_index
from controller.figures import Figure, make_figures
from controller.findings import remember
from controller.paper import PaperOutcome, review_paper, write_paper
from controller.report import Results, write_summary, write_tables
from controller.tracking import log_to_mlflow

T = TypeVar("T")
log = structlog.get_logger("sandlab.outputs")


def _step(name: str, action: Callable[[], T], problems: list[str], default: T) -> T:
    try:
        return action()
    except Exception as exc:  # one failing output must not cost the others, nor the run
        log.warning("outputs.step_failed", step=name, error=f"{type(exc).__name__}: {exc}")
        problems.append(f"{name}: {type(exc).__name__}: {exc}")
        return default


def write_outputs(results: Results) -> list[str]:
    """Write every output of the snapshot; return the problems met (also in problems.json).

    Never raises: the run's own records stand whatever happens to its report.
    """
    root = results.store.root
    problems: list[str] = []
    tables = _step("tables", lambda: write_tables(results), problems, None)
    if tables is None:
        _step("problems", lambda: results.store.write("report/problems.json", problems), [], None)
        return problems
    aggregate, best = tables
    figures: list[Figure] = _step(
        "figures", lambda: make_figures(results, root / "report" / "figures", problems=problems), problems, []
    )
    paper: PaperOutcome | None = _step(
        "paper", lambda: write_paper(results, figures, compile_pdf=results.final), problems, None
    )
    review: dict[str, Any] | None = None
    if paper is not None:
        if paper.error:
            problems.append(f"paper: {paper.error}")
        review = _step("paper review", lambda: review_paper(results, paper), problems, None)
    summary = _step("summary", lambda: write_summary(results, aggregate, best, problems), problems, None)
    _step("dashboard", lambda: write_dashboard(results, figures, review=review, problems=problems), problems, None)
    _step("runs index", lambda: write_runs_index(root.parent), problems, None)
    if results.final:
        _step("findings memory", lambda: remember(results, aggregate), problems, 0)
        artefacts = [p for p in (summary, root / "report" / "index.html", root / "best.json") if p and p.exists()]
        artefacts += [f.png for f in figures] + [f.pdf for f in figures]
        if paper is not None:
            artefacts += [p for p in (paper.markdown, paper.tex, paper.pdf) if p is not None and p.exists()]
        _step("mlflow", lambda: log_to_mlflow(results, artefacts), problems, None)
    _step("problems", lambda: results.store.write("report/problems.json", problems), [], None)
    return problems


def artefact_paths(root: Path) -> dict[str, Path]:
    """Where a researcher finds each output of a run."""
    return {
        "dashboard": root / "report" / "index.html",
        "summary": root / "report" / "summary.md",
        "paper": root / "paper" / "paper.md",
        "pdf": root / "paper" / "main.pdf",
        "review": root / "paper" / "review.md",
    }
