"""The paper draft: written from the run's records, every number inserted and recorded.

A full FakeSandbox run (no Docker) gives the records; figures are tiny files made here
(the real ones come from controller.figures).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controller.figures import Figure
from controller.paper import PaperOutcome, review_paper, write_paper
from controller.paper.bib import build_bibliography
from controller.paper.numbers import Sources
from controller.paper.render import PaperRenderError, Renderer
from controller.paper.trace import HAS_DIGIT, numbers_in
from controller.registry import RunConfig
from controller.report import Results
from sandbox.results import Status
from tests.controller.fakes import Canned, FakeSandbox, held_out_records, make_loop, markdown_table_shapes

# A 1x1 PNG and a one-page PDF: enough for the paper to copy, show and compile.
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5f1e2d90000000049454e44ae426082"
)
TINY_PDF = b"""%PDF-1.4
1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] >> endobj
trailer << /Root 1 0 R >>
%%EOF
"""


def tiny_figures(
    folder: Path, caption: str = "Validation accuracy per arm, mean and 95% CI, host-scored."
) -> list[Figure]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "by_arm.png").write_bytes(TINY_PNG)
    (folder / "by_arm.pdf").write_bytes(TINY_PDF)
    return [
        Figure("validation_by_arm", "Validation accuracy by arm", caption, folder / "by_arm.png", folder / "by_arm.pdf")
    ]


def finished_run(tmp_path: Path, seeds: int = 3) -> Results:
    """A finished FakeSandbox run, as the report sees it (with its one test evaluation)."""
    loop = make_loop(tmp_path, FakeSandbox(), seeds=seeds)
    loop.run()
    return loop.results(held_out_records(loop))


def write_draft(results: Results, tmp_path: Path, **kwargs: Any) -> PaperOutcome:
    return write_paper(results, tiny_figures(tmp_path / "figs"), compile_pdf=kwargs.pop("compile_pdf", False), **kwargs)


@pytest.fixture
def results(tmp_path: Path) -> Results:
    return finished_run(tmp_path)


def _aggregates(results: Results) -> dict[str, Any]:
    return json.loads((results.store.root / "aggregates.json").read_text())


def test_the_paper_has_every_section_in_markdown_and_latex(results: Results, tmp_path: Path) -> None:
    outcome = write_draft(results, tmp_path)
    md, tex = outcome.markdown.read_text(), outcome.tex.read_text()
    for heading in (
        "Abstract",
        "Introduction",
        "Method",
        "Experimental setup",
        "Results",
        "Ablations",
        "Held-out test",
        "Discussion",
        "Limitations",
        "Conclusion",
        "Reproducibility",
        "References",
    ):
        assert f"# {heading}" in md, heading
    for section in (
        "\\begin{abstract}",
        "\\section{Introduction}",
        "\\section{Experimental setup}",
        "\\subsection{Ablations}",
        "\\subsection{Held-out test}",
        "\\section{Limitations}",
        "\\section*{Reproducibility}",
        "\\bibliography{references}",
    ):
        assert section in tex, section
    assert "`controller rerun r1`" in md and "\\texttt{controller rerun r1}" in tex


def test_the_results_tables_print_the_aggregates(results: Results, tmp_path: Path) -> None:
    outcome = write_draft(results, tmp_path)
    md = outcome.markdown.read_text()
    wide = _aggregates(results)["arms"]["novelty:wide-lr"]
    v, c = wide["validation"], wide["vs_baseline"]
    row = next(line for line in md.splitlines() if line.startswith("| `novelty:wide-lr` |"))
    assert f"{v['mean']:.4f} ± {v['std']:.4f}" in row
    assert f"[{v['ci_low']:.4f}, {v['ci_high']:.4f}]" in row
    assert f"{c['diff']:+.4f}" in row and f"{c['p_value']:.3f}" in row and f"{c['p_holm']:.3f}" in row
    assert f"{c['hedges_g']:.2f}" in row and row.rstrip().endswith("| supported |")
    ablation = next(line for line in md.splitlines() if line.startswith("| `ablation:wide-lr-no-width` |"))
    assert "not supported" not in ablation and "| 3 |" in ablation
    best = json.loads((results.store.root / "best.json").read_text())
    assert f"test accuracy {best['test']['mean']:.4f} ± {best['test']['std']:.4f}" in md
    numbers = ", ".join(str(n) for n in best["attempts"]["test"])
    assert len(best["attempts"]["test"]) == 3 and f"(one job per seed: attempts {numbers})" in md


def test_every_table_in_the_paper_is_a_well_formed_markdown_table(results: Results, tmp_path: Path) -> None:
    shapes = markdown_table_shapes(write_draft(results, tmp_path).markdown.read_text())
    assert len(shapes) >= 2, "the main results and the ablations"
    for shape in shapes:
        assert len(shape) >= 3 and len(set(shape)) == 1, shape


def test_every_printed_number_is_recorded_in_order_with_a_resolving_source(results: Results, tmp_path: Path) -> None:
    outcome = write_draft(results, tmp_path)
    ledger = json.loads(outcome.numbers.read_text())
    sources = Sources.from_run(results.store.root)
    for name, fmt in (("paper.md", "md"), ("main.tex", "tex")):
        entries = ledger[name]
        printed = [e["printed"] for e in entries if HAS_DIGIT.search(e["printed"])]
        assert numbers_in((outcome.folder / name).read_text(), fmt) == printed  # type: ignore[arg-type]
        assert len(printed) > 50
        assert all(sources.verify(e) is None for e in entries)
        assert {e["source"] for e in entries} >= {
            "aggregates.json",
            "best.json",
            "run.json",
            "journal.json",
            "meta.json",
        }
    mean = next(e for e in ledger["paper.md"] if e["pointer"] == "/arms/novelty:wide-lr/validation/mean")
    assert mean == {
        "printed": "0.8600",
        "value": 0.86,
        "kind": "metric",
        "source": "aggregates.json",
        "pointer": "/arms/novelty:wide-lr/validation/mean",
    }


def test_the_setup_names_splits_seeds_budget_hardware_and_image(results: Results, tmp_path: Path) -> None:
    meta = results.store.root / "data" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "n_val": 288, "n_test": 360, "split_seed": 0}))
    env_path = results.store.root / "environment.json"
    env = json.loads(env_path.read_text())
    env_path.write_text(json.dumps({**env, "image": "sandlab-runner:latest", "image_id": "sha256:5ddcf603c5d1"}))
    md = write_draft(results, tmp_path).markdown.read_text()
    assert "1000 training, 288 validation and 360 test examples" in md and "(split seed 0)" in md
    assert "**Seeds**: 0, 1, 2" in md and "**Budget**: 3600 s" in md
    assert f"host `{env['host']}`" in md and "no GPU (CPU only)" in md
    assert "`sandlab-runner:latest`, digest `sha256:5ddcf603c5d1`" in md
    assert "`lr` 0.003" in md and "`width` 32" in md


def test_figures_are_copied_beside_the_paper_and_referenced(results: Results, tmp_path: Path) -> None:
    outcome = write_draft(results, tmp_path)
    assert (outcome.folder / "figures" / "validation_by_arm.png").read_bytes() == TINY_PNG
    assert (outcome.folder / "figures" / "validation_by_arm.pdf").read_bytes() == TINY_PDF
    md, tex = outcome.markdown.read_text(), outcome.tex.read_text()
    assert (
        "[Figure 1](#fig-validation_by_arm)" in md
        and "![Validation accuracy by arm](figures/validation_by_arm.png)" in md
    )
    assert "Figure~\\ref{fig:validation_by_arm}" in tex and "\\label{fig:validation_by_arm}" in tex
    assert "figures/validation_by_arm.pdf" in tex


def test_a_figure_without_files_is_left_out_with_a_warning(results: Results, tmp_path: Path) -> None:
    ghost = Figure("ghost", "Ghost", "Nothing here.", tmp_path / "no.png", tmp_path / "no.pdf")
    outcome = write_paper(results, [ghost], compile_pdf=False)
    assert outcome.figures == [] and any("ghost" in w for w in outcome.warnings)
    assert "ghost" not in outcome.tex.read_text()


def test_run_text_is_escaped_so_it_cannot_become_latex_or_markdown(results: Results, tmp_path: Path) -> None:
    plan_path = results.store.root / "plan.json"
    nasty = "Beat \\input{/etc/passwd} & $x^2$ at 50% #1 ~ {a_b} `code` <b>*x*</b> | done -- 3 '' 🚀"
    plan_path.write_text(json.dumps({**json.loads(plan_path.read_text()), "objective": nasty}))
    outcome = write_paper(results, tiny_figures(tmp_path / "figs", caption=nasty), compile_pdf=False)
    tex, md = outcome.tex.read_text(), outcome.markdown.read_text()
    assert "\\input{" not in tex and "$x^2$" not in tex and "50%" not in tex
    assert "\\textbackslash{}input\\{/etc/passwd\\} \\& \\$x\\textasciicircum{}" in tex
    assert nasty not in md and "<b>" not in md
    assert "&amp; \\$x^2\\$ at 50% \\#1 \\~ {a\\_b} \\`code\\` \\<b\\>\\*x\\*\\</b\\> \\| done" in md
    review = review_paper(results, outcome)  # quoted digits are the records', not numbers to trace
    assert review["ok"], [c for c in review["checks"] if not c["ok"]]


def test_a_progress_snapshot_has_no_test_numbers_and_says_why(results: Results, tmp_path: Path) -> None:
    snapshot = replace(results, final=False, tests=[])
    outcome = write_draft(snapshot, tmp_path)
    md = outcome.markdown.read_text()
    assert "progress snapshot" in md and "test accuracy" not in md
    assert all(e["source"] != "best.json" for e in json.loads(outcome.numbers.read_text())["paper.md"])


def test_a_run_without_a_test_result_gives_the_reason(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, FakeSandbox())
    loop.run()
    md = write_draft(loop.results(note="test split not evaluated: budget spent"), tmp_path).markdown.read_text()
    assert "No held-out test result: <q>test split not evaluated: budget spent</q>" in md


def test_weaker_integrity_and_a_failed_run_are_stated_as_limitations(results: Results, tmp_path: Path) -> None:
    state = results.state.model_copy(update={"integrity": "weaker", "status": "failed", "message": "failed: boom"})
    md = write_draft(replace(results, state=state), tmp_path).markdown.read_text()
    limitations = md.split("## Limitations")[1].split("## Conclusion")[0]
    assert "**integrity: weaker.**" in limitations and "private labels" in limitations
    assert "The run ended as `failed`: <q>failed: boom</q>" in limitations


def test_the_bibliography_holds_what_the_run_used_and_the_literature_it_found(results: Results, tmp_path: Path) -> None:
    literature = results.store.root / "literature" / "papers.jsonl"
    literature.parent.mkdir()
    records = [
        {
            "title": "Cutout",
            "bibtex": "@article{devries2017cutout, title={Improved Regularization with Cutout}, year={2017}}",
        },
        {"title": "broken", "bibtex": "@article{broken, title={unterminated"},
        {"title": "duplicate", "bibtex": "@misc{welch1947, title={Not Welch}}"},
        {"title": "no bibtex"},
        {"title": "hostile", "bibtex": "@misc{evil2024, title={\\input{/etc/hostname} ^^5cinput{x}}, abstract={x}}"},
    ]
    literature.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    outcome = write_draft(results, tmp_path)
    bib = outcome.bibliography.read_text()
    for key in (
        "alpaydin1998digits",
        "pedregosa2011sklearn",
        "paszke2019pytorch",
        "welch1947",
        "holm1979",
        "devries2017cutout",
    ):
        assert f"{{{key}," in bib
    assert "Not Welch" not in bib and "lecun1998mnist" not in bib and "he2016resnet" not in bib
    assert "{evil2024," in bib and "\\input" not in bib and "^^" not in bib and "abstract" not in bib
    assert "@devries2017cutout" in outcome.markdown.read_text() and "devries2017cutout" in outcome.citations
    assert len([w for w in outcome.warnings if w.startswith("literature record skipped")]) == 4


def test_mnist_cifar_and_resnet_runs_cite_their_sources(tmp_path: Path) -> None:
    cifar = build_bibliography(tmp_path, RunConfig(budget_s=60, dataset="cifar10", arch="resnet18"))
    assert {"krizhevsky2009cifar", "he2016resnet", "marcel2010torchvision"} <= cifar.keys
    mnist = build_bibliography(tmp_path, RunConfig(budget_s=60, dataset="mnist"))
    assert "lecun1998mnist" in mnist.keys and "he2016resnet" not in mnist.keys


def test_the_templates_cannot_print_a_number_that_was_not_recorded() -> None:
    renderer = Renderer("md")
    with pytest.raises(PaperRenderError, match=r"not float 0\.97"):
        renderer.finalize(0.97)
    with pytest.raises(PaperRenderError, match="not int 3"):
        renderer.finalize(3)
    number = Sources({"run.json": {"config": {"seeds": [0, 1, 2]}}}).number("run.json", "/config/seeds", "count", "len")
    assert renderer.finalize(number) == "3" and renderer.inserted == [number]


def test_a_run_that_failed_before_scoring_anything_still_gets_a_paper_and_a_review(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    sandbox.script("prepare", Canned(status=Status.error, exit_code=1, stderr="no data"))
    loop = make_loop(tmp_path, sandbox)
    assert loop.run().status == "failed"
    results = loop.results()
    outcome = write_draft(results, tmp_path)
    md = outcome.markdown.read_text()
    assert "No hypothesis finished an iteration." in md and "No held-out test result: <q>" in md
    assert "The run ended as `failed`" in md
    review = review_paper(results, outcome)
    assert not review["ok"] and not next(c for c in review["checks"] if c["name"] == "test split used once")["ok"]
    assert next(c for c in review["checks"] if c["name"] == "numbers traced (paper.md)")["ok"]


def test_a_draft_without_a_pdf_removes_an_older_pdf(results: Results, tmp_path: Path) -> None:
    folder = results.store.root / "paper"
    folder.mkdir(exist_ok=True)  # the run itself may have written its paper already
    (folder / "main.pdf").write_bytes(TINY_PDF)
    assert write_draft(results, tmp_path).pdf is None and not (folder / "main.pdf").exists()
