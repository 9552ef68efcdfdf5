"""What the paper says, as data: every number a `Number` resolved from the run's records.

The templates receive only strings (escaped when rendered), names (set in code), record
quotations and `Number`s; a bare int or float in the context cannot be printed (the
renderer refuses it), so nothing in the paper is typed by hand.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.figures import Figure
from controller.paper.bib import Bibliography
from controller.paper.numbers import RECOMMENDED_SEEDS, Number, Sources, pointer

if TYPE_CHECKING:
    from controller.report import Results

AGGREGATES = "aggregates.json"
BEST = "best.json"
META = "meta.json"
RUN = "run.json"
JOURNAL = "journal.json"
DISPLAY_NAMES = {"digits": "digits", "mnist": "MNIST", "cifar10": "CIFAR-10", "resnet18": "ResNet-18", "cnn": "CNN"}
ARM_FIELDS = (
    ("validation", "n", "count"),
    ("validation", "mean", "metric"),
    ("validation", "std", "metric"),
    ("validation", "ci_low", "metric"),
    ("validation", "ci_high", "metric"),
    ("vs_baseline", "diff", "delta"),
    ("vs_baseline", "p_value", "p"),
    ("vs_baseline", "p_holm", "p"),
    ("vs_baseline", "hedges_g", "effect"),
)
TEST_FIELDS = (("n", "count"), ("mean", "metric"), ("std", "metric"), ("ci_low", "metric"), ("ci_high", "metric"))
SAFE_LABEL = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class PaperFigure:
    """A figure as the paper shows it: files copied into paper/figures/."""

    label: str
    """File- and LaTeX-label-safe name."""
    number: str
    """`Figure N`, for the Markdown text (LaTeX numbers its own)."""
    title: str
    caption: str
    png: str | None
    """Path relative to paper/, or None when the figure has no PNG."""
    pdf: str | None


@dataclass
class Content:
    """The templates' context, the prose placeholders and the names prose may use."""

    context: dict[str, Any]
    values: dict[str, Number] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)


def record_sources(results: Results, aggregate: Mapping[str, Any], best: Mapping[str, Any] | None) -> Sources:
    """The records the paper draws from: the report's tables as written, the rest from disk."""
    documents = dict(Sources.from_run(results.store.root).documents)
    roundtrip: dict[str, Any] = {
        AGGREGATES: aggregate,
        RUN: results.state.model_dump(mode="json"),
        JOURNAL: [o.model_dump(mode="json") for o in results.history],
    }
    if best is not None:
        roundtrip[BEST] = best
    # Through JSON and back, so pointers see what the files hold (string keys, lists).
    documents.update({name: json.loads(json.dumps(doc, default=str)) for name, doc in roundtrip.items()})
    if best is None:
        documents.pop(BEST, None)  # a progress snapshot: an older best.json is not this paper's
    return Sources(documents)


def _maybe(src: Sources, source: str, path: str, kind: Any) -> Number | None:
    return src.number(source, path, kind) if src.has(source, path) else None


def arm_row(src: Sources, name: str, verdict: str | None) -> dict[str, Any]:
    """One arm's line of a results table."""
    row: dict[str, Any] = {"name": name, "verdict": verdict}
    for group, key, kind in ARM_FIELDS:
        row[key] = _maybe(src, AGGREGATES, pointer("arms", name, group, key), kind)
    row["eligible"] = bool(src.get(AGGREGATES, pointer("arms", name, "eligible")))
    suspects = src.get(AGGREGATES, pointer("arms", name, "suspect_attempts"), [])
    row["suspect"] = [
        src.number(AGGREGATES, pointer("arms", name, "suspect_attempts", i), "count") for i in range(len(suspects))
    ]
    return row


def _hypotheses(src: Sources) -> list[dict[str, Any]]:
    rows = []
    for i, outcome in enumerate(src.get(JOURNAL, "", [])):
        hypothesis = outcome["hypothesis"]
        rows.append(
            {
                "id": hypothesis["id"],
                "arm": f"novelty:{hypothesis['id']}",
                "iteration": src.number(JOURNAL, pointer(i, "iteration"), "count"),
                "statement": hypothesis["statement"],
                "supported": bool(outcome["supported"]),
                "threshold": _maybe(src, JOURNAL, pointer(i, "hypothesis", "success_threshold"), "metric"),
                "components": [f"module {s}" for s in sorted(hypothesis.get("modules", {}))]
                + [f"hyperparameter {k}" for k in sorted(hypothesis.get("hyper", {}))],
                "citations": [str(c) for c in hypothesis.get("citations", [])],
            }
        )
    return rows


def _setup(src: Sources, results: Results) -> dict[str, Any]:
    config = results.state.config
    shape = src.get(META, "/input_shape", [])
    env = src.documents.get("environment.json", {})
    gpus = [str(g.get("name", g)) if isinstance(g, dict) else str(g) for g in env.get("gpus", [])]
    hyper = src.get(AGGREGATES, pointer("arms", "baseline", "hyper"), {}) or {}
    return {
        "dataset": config.dataset,
        "dataset_display": DISPLAY_NAMES.get(config.dataset, config.dataset),
        "splits": {key: _maybe(src, META, f"/{key}", "count") for key in ("n_train", "n_val", "n_test")},
        "split_seed": _maybe(src, META, "/split_seed", "count"),
        "classes": _maybe(src, META, "/num_classes", "count"),
        "input_shape": [src.number(META, pointer("input_shape", i), "count") for i in range(len(shape))],
        "arch": config.arch,
        "pretrained": config.pretrained,
        "seeds": [src.number(RUN, pointer("config", "seeds", i), "count") for i in range(len(config.seeds))],
        "n_seeds": src.number(RUN, "/config/seeds", "count", "len"),
        "budget": src.number(RUN, "/config/budget_s", "seconds"),
        "host": str(env.get("host") or "unknown"),
        "platform": str(env.get("platform") or "unknown"),
        "backend": str(env.get("backend") or "unknown"),
        "gpus": gpus,
        "image": env.get("image"),
        "image_id": env.get("image_id"),
        "baseline_hyper": [
            (key, src.number(AGGREGATES, pointer("arms", "baseline", "hyper", key), "hyper"))
            if src.has(AGGREGATES, pointer("arms", "baseline", "hyper", key))
            else (key, str(value))
            for key, value in hyper.items()
        ],
    }


def _held_out(src: Sources, results: Results) -> dict[str, Any]:
    """The selected arm and its one test evaluation, or why there is none."""
    chosen = results.chosen[0].name if results.chosen else None
    held: dict[str, Any] = {"final": results.final, "arm": chosen, "test": None, "reason": None}
    if chosen is not None:
        held["validation"] = arm_row(src, chosen, None)
    if BEST not in src.documents:
        return held
    if src.get(BEST, "/value") is None:
        held["reason"] = str(src.get(BEST, "/reason") or "no test result was recorded")
        return held
    test: dict[str, Any] = {key: _maybe(src, BEST, pointer("test", key), kind) for key, kind in TEST_FIELDS}
    per_seed = src.get(BEST, "/per_seed", {})
    test["per_seed"] = [(seed, src.number(BEST, pointer("per_seed", seed), "metric")) for seed in per_seed]
    numbers = src.get(BEST, "/attempts/test", []) or []
    test["attempts"] = [src.number(BEST, pointer("attempts", "test", i), "count") for i in range(len(numbers))]
    held["arm"] = str(src.get(BEST, "/arm"))
    held["test"] = test
    return held


def _limitations(src: Sources, results: Results, rows: list[dict[str, Any]]) -> dict[str, Any]:
    state = results.state
    return {
        "weaker": state.integrity == "weaker",
        "status": state.status,
        "message": state.message,
        "limits": [hit.detail for hit in state.limits_hit],
        "suspect": [(row["name"], row["suspect"]) for row in rows if row["suspect"]],
        "few_seeds": len(state.config.seeds) < RECOMMENDED_SEEDS,
        "recommended_seeds": src.number("method", "/recommended_seeds", "count"),
        "ineligible": [row["name"] for row in rows if not row["eligible"]],
        "required_seeds": _maybe(src, AGGREGATES, "/required_seeds", "count"),
    }


def copy_figures(figures: list[Figure], folder: Path) -> tuple[list[PaperFigure], list[str]]:
    """Copy each figure's PNG and PDF into paper/figures/; figures with neither are left out."""
    out: list[PaperFigure] = []
    warnings: list[str] = []
    target = folder / "figures"
    for figure in figures:
        base = SAFE_LABEL.sub("-", figure.name).strip("-") or "figure"
        label = base if base not in {f.label for f in out} else f"{base}-{len(out) + 1}"
        copied: dict[str, str | None] = {}
        for suffix, path in (("png", figure.png), ("pdf", figure.pdf)):
            if path.is_file():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target / f"{label}.{suffix}")
                copied[suffix] = f"figures/{label}.{suffix}"
            else:
                copied[suffix] = None
        if not copied["png"] and not copied["pdf"]:
            warnings.append(f"figure {figure.name!r} left out: neither {figure.png} nor {figure.pdf} exists")
            continue
        number = f"Figure {len(out) + 1}"
        out.append(PaperFigure(label, number, figure.title, figure.caption, copied["png"], copied["pdf"]))
    return out, warnings


def _prose_values(
    src: Sources, rows: list[dict[str, Any]], setup: dict[str, Any], held: dict[str, Any]
) -> dict[str, Number]:
    values: dict[str, Number] = {}
    for row in rows:
        for _, key, _ in ARM_FIELDS:
            if row.get(key) is not None:
                values[f"arm:{row['name']}.{key}"] = row[key]
    for key, number in (held.get("test") or {}).items():
        if isinstance(number, Number):
            values[f"test:{key}"] = number
    for key, number in setup["splits"].items():
        if number is not None:
            values[f"split:{key}"] = number
    values["seeds:count"] = setup["n_seeds"]
    values["alpha"] = src.number("method", "/alpha", "hyper")
    if src.get(JOURNAL, ""):
        values["hypotheses:count"] = src.number(JOURNAL, "", "count", "len")
        values["hypotheses:supported"] = src.number(JOURNAL, "", "count", "count_true", "supported")
    return values


def build_content(results: Results, src: Sources, figures: list[PaperFigure], bibliography: Bibliography) -> Content:
    """The templates' context for this run."""
    hypotheses = _hypotheses(src)
    verdicts = {h["arm"]: ("supported" if h["supported"] else "not supported") for h in hypotheses}
    names = list(src.get(AGGREGATES, "/arms", {}))
    rows = [arm_row(src, name, verdicts.get(name)) for name in names]
    setup = _setup(src, results)
    held = _held_out(src, results)
    baseline_conf = pointer("arms", names[0], "validation", "confidence") if names else ""
    plan = src.documents.get("plan.json") or {}
    context = {
        "run_id": results.state.run_id,
        "task": results.task.name,
        "metric": results.task.metric.name,
        "higher_is_better": results.task.metric.higher_is_better,
        "objective": plan.get("objective"),
        "hypotheses": hypotheses,
        "n_hypotheses": src.number(JOURNAL, "", "count", "len") if hypotheses else None,
        "n_supported": src.number(JOURNAL, "", "count", "count_true", "supported") if hypotheses else None,
        "alpha": src.number("method", "/alpha", "hyper"),
        "confidence": _maybe(src, AGGREGATES, baseline_conf, "percent") if names else None,
        "required_seeds": _maybe(src, AGGREGATES, "/required_seeds", "count"),
        "setup": setup,
        "main_rows": [r for r in rows if not r["name"].startswith("ablation:")],
        "ablation_rows": [r for r in rows if r["name"].startswith("ablation:")],
        "baseline": next((r for r in rows if r["name"] == "baseline"), None),
        "held": held,
        "figures": figures,
        "bib": bibliography,
        "limitations": _limitations(src, results, rows),
        "agent": results.state.config.agent,
    }
    known = {*names, *(h["id"] for h in hypotheses), results.state.config.dataset, results.state.config.arch}
    known |= {DISPLAY_NAMES[n] for n in known if n in DISPLAY_NAMES} | set(DISPLAY_NAMES.values())
    return Content(context, _prose_values(src, rows, setup, held), known)
