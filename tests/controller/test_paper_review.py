"""The paper's review: offline checks against the records, and the LLM's referee report.

The offline review must catch a paper that drifted from its records: any changed number,
a claim without a significant test, too few seeds, an unresolved citation, an unreferenced
figure, a quotation that is not a record, a test split used twice.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controller.llm import LLMClient, RetryPolicy
from controller.paper import PaperOutcome, review_paper, write_paper
from controller.paper.trace import NUMBER, Format, mask
from controller.report import Results
from tests.controller.fake_openai import FakeOpenAI, Reply
from tests.controller.test_paper import finished_run, tiny_figures, write_draft

FAST_RETRY = RetryPolicy(attempts=2, backoff_base_s=0.01, backoff_max_s=0.02, retry_after_max_s=0.1)
REVIEW = {
    "summary": "An automated study on digits; one hypothesis held.",
    "strengths": ["every number traced"],
    "weaknesses": ["one dataset"],
    "soundness": 7,
    "presentation": 6,
    "contribution": 3,
    "overall": 5,
    "decision": "borderline",
}


@pytest.fixture
def drafted(tmp_path: Path) -> tuple[Results, PaperOutcome]:
    results = finished_run(tmp_path)
    return results, write_draft(results, tmp_path)


def _check(review: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in review["checks"] if c["name"] == name)


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, count))


def _change_number(path: Path, fmt: Format, index: int) -> tuple[str, str]:
    """Change the last digit of the index-th number the paper asserts; returns (old, new)."""
    text = path.read_text()
    offset = text.find("\\begin{document}") + len("\\begin{document}") if fmt == "tex" else 0
    match = list(NUMBER.finditer(mask(text, fmt)))[index]
    old = match.group(0)
    new = old[:-1] + str((int(old[-1]) + 1) % 10)  # a numeric literal always ends in a digit
    begin, end = match.start() + offset, match.end() + offset
    assert text[begin:end] == old
    path.write_text(text[:begin] + new + text[end:])
    return old, new


def test_the_offline_review_passes_a_paper_written_from_the_records(drafted: tuple[Results, PaperOutcome]) -> None:
    results, outcome = drafted
    review = review_paper(results, outcome)
    assert review["ok"], [c for c in review["checks"] if not c["ok"]]
    assert {c["name"] for c in review["checks"]} == {
        "numbers traced (paper.md)",
        "numbers traced (main.tex)",
        "quotations are records",
        "claims backed",
        "test split used once",
        "seeds",
        "figures referenced",
        "citations resolve",
    }
    assert review["llm_review"] is None
    saved = json.loads((outcome.folder / "review.json").read_text())
    assert saved == review and "Offline checks: **pass**" in (outcome.folder / "review.md").read_text()


@pytest.mark.parametrize("position", [0, 1, 5, 12, 30, 60, -20, -1])
def test_changing_any_number_in_paper_md_fails_the_review(drafted: tuple[Results, PaperOutcome], position: int) -> None:
    results, outcome = drafted
    old, new = _change_number(outcome.markdown, "md", position)
    review = review_paper(results, outcome)
    check = _check(review, "numbers traced (paper.md)")
    assert not review["ok"] and not check["ok"]
    assert f"printed {new} where the records give {old}" in check["detail"]


@pytest.mark.parametrize("position", [3, -2])
def test_changing_a_number_in_main_tex_fails_the_review(drafted: tuple[Results, PaperOutcome], position: int) -> None:
    results, outcome = drafted
    old, new = _change_number(outcome.tex, "tex", position)
    check = _check(review_paper(results, outcome), "numbers traced (main.tex)")
    assert not check["ok"] and new in check["detail"] and old in check["detail"]


def test_an_added_number_is_untraced(drafted: tuple[Results, PaperOutcome]) -> None:
    results, outcome = drafted
    _edit(outcome.markdown, "## Discussion\n\n", "## Discussion\n\nAccuracy rose by 12.5 points.\n")
    check = _check(review_paper(results, outcome), "numbers traced (paper.md)")
    assert not check["ok"] and "untraced number(s) 12.5" in check["detail"]


def test_editing_numbers_json_along_with_the_paper_is_still_caught(drafted: tuple[Results, PaperOutcome]) -> None:
    results, outcome = drafted
    old, new = _change_number(outcome.markdown, "md", 0)
    ledger = json.loads(outcome.numbers.read_text())
    first = next(e for e in ledger["paper.md"] if e["printed"] == old)
    first["printed"] = new
    outcome.numbers.write_text(json.dumps(ledger))
    check = _check(review_paper(results, outcome), "numbers traced (paper.md)")
    assert not check["ok"] and f"the record now gives {old!r}" in check["detail"]


@pytest.mark.parametrize(
    "claim",
    [
        "The `novelty:shift-mlp` arm improves accuracy over the baseline.",
        "Hypothesis `cutout` is supported.",
        "The method clearly outperforms the baseline.",
        "Both `novelty:wide-lr` and `novelty:cutout` beat the baseline.",
    ],
)
def test_a_claim_without_a_significant_test_fails_the_review(drafted: tuple[Results, PaperOutcome], claim: str) -> None:
    results, outcome = drafted
    _edit(outcome.markdown, "## Discussion\n\n", f"## Discussion\n\n{claim}\n")
    check = _check(review_paper(results, outcome), "claims backed")
    assert not check["ok"] and claim[:40] in check["detail"]


def test_a_claim_about_the_supported_hypothesis_passes(drafted: tuple[Results, PaperOutcome]) -> None:
    results, outcome = drafted
    _edit(
        outcome.markdown,
        "## Discussion\n\n",
        "## Discussion\n\n`novelty:wide-lr` improves on the baseline, but `cutout` was not supported.\n",
    )
    assert _check(review_paper(results, outcome), "claims backed")["ok"]


def test_a_claim_in_latex_is_checked_too(drafted: tuple[Results, PaperOutcome]) -> None:
    results, outcome = drafted
    _edit(
        outcome.tex,
        "\\section{Discussion}\n",
        "\\section{Discussion}\n\\texttt{novelty:noise-bnmlp} improves accuracy.\n",
    )
    check = _check(review_paper(results, outcome), "claims backed")
    assert not check["ok"] and "main.tex" in check["detail"] and "noise-bnmlp" in check["detail"]


def test_fewer_than_three_seeds_fails_the_seeds_check(tmp_path: Path) -> None:
    results = finished_run(tmp_path, seeds=2)
    outcome = write_draft(results, tmp_path)
    review = review_paper(results, outcome)
    seeds = _check(review, "seeds")
    assert not review["ok"] and not seeds["ok"] and "2 seeds per arm (at least 3 needed)" in seeds["detail"]
    assert "**Fewer seeds than recommended** (3)" in outcome.markdown.read_text()


def test_an_unresolved_cite_key_fails_the_review(drafted: tuple[Results, PaperOutcome]) -> None:
    results, outcome = drafted
    _edit(outcome.markdown, "## Discussion\n\n", "## Discussion\n\nAs shown before [@nobody2020].\n")
    _edit(outcome.tex, "\\section{Discussion}\n", "\\section{Discussion}\nAs shown \\citep{welch1947,ghost2021}.\n")
    check = _check(review_paper(results, outcome), "citations resolve")
    assert not check["ok"] and check["detail"] == "unresolved cite keys: ghost2021, nobody2020"


def test_an_unreferenced_figure_fails_the_review(drafted: tuple[Results, PaperOutcome]) -> None:
    results, outcome = drafted
    _edit(outcome.markdown, "[Figure 1](#fig-validation_by_arm)", "Figure 1")
    _edit(outcome.tex, "Figure~\\ref{fig:validation_by_arm}", "The figure")
    check = _check(review_paper(results, outcome), "figures referenced")
    assert not check["ok"] and "not referenced in paper.md" in check["detail"] and "main.tex" in check["detail"]


def test_a_quotation_that_is_not_a_record_fails_the_review(drafted: tuple[Results, PaperOutcome]) -> None:
    results, outcome = drafted
    text = outcome.markdown.read_text()
    quoted = re.search(r"<q>(A wider trunk.*?)</q>", text)
    assert quoted is not None
    outcome.markdown.write_text(text.replace(quoted.group(1), "A wider trunk (128 channels) wins by 9 points."))
    review = review_paper(results, outcome)
    assert not _check(review, "quotations are records")["ok"]
    assert _check(review, "numbers traced (paper.md)")["ok"]  # quoted digits are the record's, not the paper's


def test_a_second_test_evaluation_fails_the_test_once_check(drafted: tuple[Results, PaperOutcome]) -> None:
    results, outcome = drafted
    best = json.loads((results.store.root / "best.json").read_text())
    source = results.store.attempt_dir(best["attempts"]["test"][0])
    extra = results.store.attempt_dir(9999)
    shutil.copytree(source, extra)
    record = json.loads((extra / "attempt.json").read_text())
    (extra / "attempt.json").write_text(json.dumps({**record, "number": 9999, "arm_key": "someotherarm"}))
    check = _check(review_paper(results, outcome), "test split used once")
    assert not check["ok"] and "for other arms: [9999]" in check["detail"]


def test_a_seed_tested_twice_fails_the_test_once_check(drafted: tuple[Results, PaperOutcome]) -> None:
    results, outcome = drafted
    assert _check(review_paper(results, outcome), "test split used once")["ok"]
    best = json.loads((results.store.root / "best.json").read_text())
    source = results.store.attempt_dir(best["attempts"]["test"][0])
    extra = results.store.attempt_dir(9998)
    shutil.copytree(source, extra)
    record = json.loads((extra / "attempt.json").read_text())
    (extra / "attempt.json").write_text(json.dumps({**record, "number": 9998}))  # same arm, same seed
    assert not _check(review_paper(results, outcome), "test split used once")["ok"]


def _client(fake: FakeOpenAI, root: Path) -> LLMClient:
    return LLMClient("gpt-4o-mini", base_url=fake.base_url, api_key="k", retry=FAST_RETRY, cache_dir=root / "llm-cache")


def test_the_models_invented_digits_never_reach_the_paper(tmp_path: Path) -> None:
    results = finished_run(tmp_path)
    prose = {
        "abstract": (
            "We study {{cite:welch1947}} hypotheses on digits. "
            "The `novelty:wide-lr` arm reached {{arm:novelty:wide-lr.mean}} on validation. "
            "Accuracy rose to 97.3% in our best run. "
            "The novelty:cutout arm improves accuracy by {{arm:novelty:cutout.diff}}. "
            "The held-out test gave {{test:mean}} and {{test:median}}."
        ),
        "introduction": "Seven ideas were tried across 5 iterations.\n\nWe ran {{hypotheses:count}} hypotheses.",
        "discussion": "Hypothesis wide-lr is supported with a Holm-corrected p of {{arm:novelty:wide-lr.p_holm}}.",
        "conclusion": "",
    }
    with FakeOpenAI() as fake:
        fake.script(Reply(json.dumps(prose)), Reply(json.dumps(REVIEW)))
        results = replace(results, llm=_client(fake, results.store.root))
        outcome = write_paper(results, tiny_figures(tmp_path / "figs"), compile_pdf=False)
        review = review_paper(results, outcome)
        prompt = fake.requests[0]["messages"][-1]["content"]
    assert not re.search(r"\d", re.sub(r"\{\{[^{}]*\}\}", "", prompt.split("Placeholders you may use:")[0]))
    md, tex = outcome.markdown.read_text(), outcome.tex.read_text()
    abstract = md.split("## Abstract")[1].split("## Introduction")[0]
    assert outcome.prose == "llm"
    assert "The `novelty:wide-lr` arm reached 0.8600 on validation." in abstract
    assert "97.3" not in md and "97.3" not in tex and "Seven ideas" not in md and "median" not in md
    assert "novelty:cutout` arm improves" not in md
    assert f"We ran {len(results.history)} hypotheses." in md and "Holm-corrected p of 0.011" in md
    reasons = {r.reason.split(" ")[0] + " " + r.reason.split(" ")[1] for r in outcome.prose_rejected}
    assert reasons == {"invented number", "claim about", "unknown placeholder"}
    assert len(json.loads(outcome.numbers.read_text())["prose"]["rejected"]) == 4
    assert review["ok"], [c for c in review["checks"] if not c["ok"]]
    assert review["llm_review"]["decision"] == "borderline" and review["llm_review"]["overall"] == 5
    saved = json.loads((outcome.folder / "review.json").read_text())
    assert (
        saved["llm_review"]["model"] == "gpt-4o-mini"
        and "Decision: **borderline**" in (outcome.folder / "review.md").read_text()
    )


def test_llm_failures_are_recorded_and_never_raised(tmp_path: Path) -> None:
    results = finished_run(tmp_path)
    with FakeOpenAI() as fake:  # nothing scripted: every request is an HTTP 500
        results = replace(results, llm=_client(fake, results.store.root))
        outcome = write_paper(results, tiny_figures(tmp_path / "figs"), compile_pdf=False)
        review = review_paper(results, outcome)
    assert outcome.prose == "template" and any(
        "LLM prose not written (LLMUnavailableError" in w for w in outcome.warnings
    )
    assert review["ok"] and review["llm_review"]["error"].startswith("LLMUnavailableError")
    assert "Not available: LLMUnavailableError" in (outcome.folder / "review.md").read_text()


def test_an_invalid_review_reply_is_recorded_not_raised(tmp_path: Path) -> None:
    results = finished_run(tmp_path)
    with FakeOpenAI() as fake:
        fake.script(*(Reply("{}") for _ in range(3)), *(Reply(json.dumps({**REVIEW, "overall": 11})) for _ in range(3)))
        results = replace(results, llm=_client(fake, results.store.root))
        outcome = write_paper(results, tiny_figures(tmp_path / "figs"), compile_pdf=False)
        review = review_paper(results, outcome)
        assert fake.unscripted == []
    assert any("LLM prose not written (LLMOutputError" in w for w in outcome.warnings)
    assert "LLMOutputError" in review["llm_review"]["error"] and review["ok"]
