"""review_paper: the draft checked against the run's records, and (with an LLM) refereed.

The offline checks always run and decide `ok`: every number traced (see trace.py), every
quotation a record verbatim, every claim of improvement backed (claims.py), the test split
used exactly once and for the selected arm only, enough seeds, every figure referenced,
every citation key resolved. The LLM review is advice: it never changes `ok`, and an LLM
failure is recorded in it rather than raised.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import BaseModel, ConfigDict, Field

from controller.agents.base import trim
from controller.paper.bib import bib_keys
from controller.paper.claims import backing, unbacked_claims
from controller.paper.latex import escape_tex
from controller.paper.numbers import RECOMMENDED_SEEDS, Sources
from controller.paper.render import escape_md
from controller.paper.trace import HAS_DIGIT, Format, compare_numbers, numbers_in, quotations, summarize_problems
from controller.paper.writer import BIB, MARKDOWN, TEX, PaperOutcome, numbers_ledger
from controller.store import write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from controller.report import Results

log = structlog.get_logger(__name__)

REVIEW_JSON = "review.json"
REVIEW_MD = "review.md"
REVIEW_PAPER_CHARS = 24_000
"""How much of paper.md the LLM reviewer reads (head and tail; the file keeps it all)."""
FILES: tuple[tuple[str, Format], ...] = ((MARKDOWN, "md"), (TEX, "tex"))
MD_CITE = re.compile(r"\[@([^\]]*)\]")
TEX_CITE = re.compile(r"\\cite[pt]?\{([^}]*)\}")


class PaperReview(BaseModel):
    """A NeurIPS-style review of the draft."""

    model_config = ConfigDict(extra="forbid")

    summary: str
    """What the paper claims, in the reviewer's words."""
    strengths: list[str]
    weaknesses: list[str]
    soundness: int = Field(ge=1, le=10)
    presentation: int = Field(ge=1, le=10)
    contribution: int = Field(ge=1, le=10)
    overall: int = Field(ge=1, le=10)
    decision: Literal["accept", "weak accept", "borderline", "weak reject", "reject"]


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def _read(path: Path) -> str | None:
    return path.read_text(errors="replace") if path.is_file() else None


def check_numbers(folder: Path, sources: Sources, name: str, fmt: Format) -> dict[str, Any]:
    """Every number in the file is, in order, a recorded one that still resolves to its record."""
    text = _read(folder / name)
    entries = numbers_ledger(folder).get(name)
    if text is None or not isinstance(entries, list):
        return _check(f"numbers traced ({name})", False, f"{name} or its entries in numbers.json are missing")
    found = numbers_in(text, fmt)
    recorded = [
        str(e.get("printed")) for e in entries if isinstance(e, dict) and HAS_DIGIT.search(str(e.get("printed")))
    ]
    problems = compare_numbers(found, recorded)
    problems += [p for e in entries if isinstance(e, dict) and (p := sources.verify(e))]
    detail = summarize_problems(problems) if problems else f"all {len(found)} numbers traced to the run's records"
    return _check(f"numbers traced ({name})", not problems, detail)


def record_texts(sources: Sources, outcome: PaperOutcome) -> set[str]:
    """Texts the paper may quote verbatim: statements, objective, reasons, limits, figure captions."""
    docs = sources.documents
    texts = {h.get("hypothesis", {}).get("statement") for h in docs.get("journal.json", []) if isinstance(h, dict)}
    plan = docs.get("plan.json") or {}
    texts |= {h.get("statement") for h in plan.get("hypotheses", []) if isinstance(h, dict)} | {plan.get("objective")}
    texts |= {(docs.get("best.json") or {}).get("reason"), (docs.get("run.json") or {}).get("message")}
    texts |= {hit.get("detail") for hit in (docs.get("run.json") or {}).get("limits_hit", []) if isinstance(hit, dict)}
    texts |= {f.caption for f in outcome.figures} | {f.title for f in outcome.figures}
    return {t for t in texts if isinstance(t, str)}


def check_quotations(folder: Path, sources: Sources, outcome: PaperOutcome) -> dict[str, Any]:
    records = record_texts(sources, outcome)
    escapes: dict[Format, Callable[[str], str]] = {"md": escape_md, "tex": escape_tex}
    bad: list[str] = []
    count = 0
    for name, fmt in FILES:
        allowed = {escapes[fmt](r) for r in records}
        quoted = quotations(_read(folder / name) or "", fmt)
        count += len(quoted)
        bad += [f"{name}: {q[:80]!r}" for q in quoted if q not in allowed]
    detail = (
        f"quotation not from the run's records: {summarize_problems(bad)}"
        if bad
        else f"{count} quotations, each a record verbatim"
    )
    return _check("quotations are records", not bad, detail)


def check_claims(folder: Path, sources: Sources, higher_is_better: bool) -> dict[str, Any]:
    backed = backing(
        sources.documents.get("aggregates.json") or {}, sources.documents.get("journal.json") or [], higher_is_better
    )
    problems = [f"{name}: {p}" for name, fmt in FILES for p in unbacked_claims(_read(folder / name) or "", fmt, backed)]
    detail = (
        summarize_problems(problems) if problems else "every claim of improvement has a Holm-corrected p below alpha"
    )
    return _check("claims backed", not problems, detail)


def check_test_once(results: Results, sources: Sources) -> dict[str, Any]:
    best = sources.documents.get("best.json")
    if best is None:
        return _check("test split used once", False, "best.json is missing (a progress snapshot has no test result)")
    tests = [a for a in results.store.attempts() if a.kind == "test"]
    arm_key = best.get("arm_key")
    if arm_key is None:
        detail = f"no arm was selected ({best.get('reason')}); {len(tests)} test attempts"
        return _check("test split used once", False, detail)
    mine = [a.number for a in tests if a.arm_key == arm_key]
    others = [a.number for a in tests if a.arm_key != arm_key]
    recorded = (best.get("attempts") or {}).get("test")
    seeds = [a.seed for a in tests if a.arm_key == arm_key]
    # One job per seed, each seed once, and exactly the jobs best.json reports.
    ok = bool(mine) and len(set(seeds)) == len(seeds) and not others and recorded == mine
    detail = (
        f"test attempts for the selected arm: {mine or 'none'}; for other arms: {others or 'none'}; "
        f"best.json names {recorded}"
    )
    return _check("test split used once", ok, detail)


def check_seeds(sources: Sources) -> dict[str, Any]:
    seeds = sources.get("run.json", "/config/seeds", []) or []
    selected_n = sources.get("best.json", "/validation/n")
    ok = len(seeds) >= RECOMMENDED_SEEDS and (selected_n is None or selected_n >= RECOMMENDED_SEEDS)
    detail = f"{len(seeds)} seeds per arm (at least {RECOMMENDED_SEEDS} needed)"
    if selected_n is not None:
        detail += f"; the selected arm has {selected_n} scored"
    return _check("seeds", ok, detail)


def check_figures(folder: Path, outcome: PaperOutcome) -> dict[str, Any]:
    md, tex = _read(folder / MARKDOWN) or "", _read(folder / TEX) or ""
    problems = []
    for f in outcome.figures:
        if f"(#fig-{f.label})" not in md:
            problems.append(f"{f.label}: not referenced in paper.md")
        if f"\\ref{{fig:{f.label}}}" not in tex or f"\\label{{fig:{f.label}}}" not in tex:
            problems.append(f"{f.label}: not referenced (or not labelled) in main.tex")
        problems += [f"{f.label}: {p} missing" for p in (f.png, f.pdf) if p and not (folder / p).is_file()]
    detail = summarize_problems(problems) if problems else f"{len(outcome.figures)} figures, each referenced"
    return _check("figures referenced", not problems, detail)


def check_citations(folder: Path) -> dict[str, Any]:
    keys = bib_keys(folder / BIB)
    used = {
        k.strip().lstrip("@") for m in MD_CITE.finditer(_read(folder / MARKDOWN) or "") for k in m.group(1).split(";")
    }
    used |= {k.strip() for m in TEX_CITE.finditer(_read(folder / TEX) or "") for k in m.group(1).split(",")}
    missing = sorted(k for k in used - keys if k)
    detail = (
        f"unresolved cite keys: {', '.join(missing)}" if missing else f"{len(used)} cite keys, all in references.bib"
    )
    return _check("citations resolve", not missing, detail)


def _llm_review(results: Results, folder: Path, checks: list[dict[str, Any]]) -> dict[str, Any] | None:
    client = results.llm
    if client is None:
        return None
    env = Environment(
        loader=PackageLoader("controller", "prompts"),
        undefined=StrictUndefined,
        autoescape=False,  # noqa: S701 - a prompt, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
    )
    paper = trim(_read(folder / MARKDOWN) or "", REVIEW_PAPER_CHARS)
    prompt = env.get_template("paper_review.j2").render(paper=paper, checks=checks)
    try:
        review = client.complete_structured([{"role": "user", "content": prompt}], PaperReview)
    except Exception as exc:  # advice only: a failed review is recorded, the paper stands
        log.warning("paper.review_failed", error=str(exc))
        return {"model": client.model, "error": f"{type(exc).__name__}: {exc}"}
    return {"model": client.model, **review.model_dump()}


def _review_md(review: dict[str, Any]) -> str:
    lines = ["# Review of the paper draft", "", f"Offline checks: **{'pass' if review['ok'] else 'FAIL'}**", ""]
    lines += ["| check | ok | detail |", "|---|---|---|"]
    lines += [
        f"| {c['name']} | {'yes' if c['ok'] else '**no**'} | {escape_md(c['detail'])} |" for c in review["checks"]
    ]
    llm = review["llm_review"]
    if llm is not None:
        lines += ["", f"## LLM review ({escape_md(llm.get('model', ''))})", ""]
        if "error" in llm:
            lines.append(f"Not available: {escape_md(llm['error'])}")
        else:
            lines += [escape_md(llm["summary"]), "", "**Strengths**", ""]
            lines += [f"- {escape_md(s)}" for s in llm["strengths"]] + ["", "**Weaknesses**", ""]
            lines += [f"- {escape_md(w)}" for w in llm["weaknesses"]] + [""]
            scores = ", ".join(f"{k} {llm[k]}" for k in ("soundness", "presentation", "contribution", "overall"))
            lines.append(f"Scores (1 to 10): {scores}. Decision: **{llm['decision']}**.")
    return "\n".join(lines) + "\n"


def review_paper(results: Results, outcome: PaperOutcome) -> dict[str, Any]:
    """Check the draft against the records (and referee it with the LLM when there is one);
    writes paper/review.json and paper/review.md; never raises for what the checks find."""
    folder = outcome.folder
    sources = Sources.from_run(results.store.root)
    checks = [check_numbers(folder, sources, name, fmt) for name, fmt in FILES]
    checks += [
        check_quotations(folder, sources, outcome),
        check_claims(folder, sources, results.task.metric.higher_is_better),
        check_test_once(results, sources),
        check_seeds(sources),
        check_figures(folder, outcome),
        check_citations(folder),
    ]
    review: dict[str, Any] = {"ok": all(c["ok"] for c in checks), "checks": checks}
    review["llm_review"] = _llm_review(results, folder, checks)
    write_json_atomic(folder / REVIEW_JSON, review)
    write_text_atomic(folder / REVIEW_MD, _review_md(review))
    return review
