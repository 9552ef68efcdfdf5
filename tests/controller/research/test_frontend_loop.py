"""The front-end inside the loop: a topic becomes literature, a session and a plan the loop
runs; its findings land in the memory; an interrupted front-end resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.cli.research import adopt_plan, load_plan_file
from controller.loop import InterruptedRunError
from controller.plan import Plan
from controller.registry import ResearchConfig, RunConfig
from controller.research import plan_from_literature
from controller.research.memory import read_memory
from controller.store import RunStore
from controller.tasks import load_task
from tests.controller.fakes import FakeSandbox, make_loop

TOPIC = "data augmentation for small digit datasets"


def _corpus(tmp_path: Path) -> Path:
    path = tmp_path / "mine.bib"
    path.write_text(
        "@article{mine2025shift,\n  author = {Doe, Jane},\n  title = {Shift augmentation for tiny digit datasets},\n"
        "  journal = {Workshop on Small Data},\n  year = {2025}\n}\n"
    )
    return path


def test_a_topic_run_writes_literature_session_and_plan_then_runs_the_plan(tmp_path: Path) -> None:
    research = ResearchConfig(topic=TOPIC, sources=[], corpus=str(_corpus(tmp_path)))
    loop = make_loop(tmp_path, FakeSandbox(), research=research)
    state = loop.run()
    root = loop.store.root
    assert state.status == "finished"
    for name in (
        "literature/papers.jsonl",
        "literature/summaries.jsonl",
        "literature/novelty.json",
        "literature/sources.json",
        "planning/session.jsonl",
        "plan.json",
    ):
        assert (root / name).is_file(), name
    papers = [json.loads(line) for line in (root / "literature/papers.jsonl").read_text().splitlines()]
    assert any(p["sources"] == ["corpus"] and p["key"] == "mine2025shift" for p in papers)
    assert all(p["bibtex"].startswith("@") for p in papers)
    plan = Plan.model_validate_json((root / "plan.json").read_text())
    tested = [o["hypothesis"]["id"] for o in json.loads((root / "journal.json").read_text())]
    assert tested == [h.id for h in plan.hypotheses][: len(tested)] and tested
    # The paper ties each claim to its papers, and references.bib holds them.
    bib = (root / "paper" / "references.bib").read_text()
    cited = {c for h in plan.hypotheses for c in h.citations}
    assert cited and all(key in bib for key in cited)
    summary = (root / "report" / "summary.md").read_text()
    assert "## From the literature" in summary and "rejected as too close to [" in summary
    # The findings memory got one line per tested hypothesis, with the baseline's sd for the next pilot.
    findings = read_memory(tmp_path / "runs" / "memory.jsonl")
    assert [f.hypothesis for f in findings] == tested
    assert all(f.run_id == "r1" and f.verdict in {"supported", "refuted", "underpowered"} for f in findings)
    assert findings[0].baseline_sd is not None and findings[0].pair_s is not None


def test_an_interrupted_front_end_resumes_without_redoing_finished_stages(tmp_path: Path) -> None:
    research = ResearchConfig(topic=TOPIC, sources=[])
    loop = make_loop(tmp_path, FakeSandbox(), research=research)
    checkpoint = loop.attempts.checkpoint

    def interrupt_during_planning() -> None:  # Ctrl-C while the session is under way
        if (loop.store.root / "planning/session.jsonl").is_file():
            loop.attempts.interrupted.set()
        checkpoint()

    loop.attempts.checkpoint = interrupt_during_planning  # type: ignore[method-assign]
    with pytest.raises(InterruptedRunError):
        loop.run()
    assert loop.store.load_state().status == "interrupted"
    root = loop.store.root
    assert not (root / "plan.json").exists()
    papers_before = (root / "literature/papers.jsonl").stat().st_mtime_ns
    summaries_before = (root / "literature/summaries.jsonl").read_text()
    resumed = make_loop(tmp_path, FakeSandbox(), research=research)
    state = resumed.run()
    assert state.status == "finished"
    assert (root / "literature/papers.jsonl").stat().st_mtime_ns == papers_before
    assert (root / "literature/summaries.jsonl").read_text() == summaries_before
    assert Plan.model_validate_json((root / "plan.json").read_text()).topic == TOPIC


def test_an_edited_plan_runs_as_written_with_its_literature(tmp_path: Path) -> None:
    research = ResearchConfig(topic=TOPIC, sources=[], plan_only=True)
    config = RunConfig(budget_s=3600, report_reserve_s=60, research=research)
    planned, _ = RunStore.create(tmp_path / "runs", config, "p1")
    plan = plan_from_literature(planned, config, load_task("digits"), None, lambda line: None)
    planned.write("plan.json", plan)
    chosen = plan.hypotheses[-1].model_copy(update={"statement": "Edited by hand."})
    (planned.root / "plan.json").write_text(plan.model_copy(update={"hypotheses": [chosen]}).model_dump_json())
    loop = make_loop(tmp_path, FakeSandbox(), run_id="r2")
    adopt_plan(loop.store, load_plan_file(planned.root / "plan.json", "digits"), planned.root / "plan.json")
    assert (loop.store.root / "literature/papers.jsonl").is_file()
    assert not (loop.store.root / "literature/cache").exists()
    state = loop.run()
    journal = json.loads((loop.store.root / "journal.json").read_text())
    assert state.status == "finished"
    assert journal[0]["hypothesis"]["statement"] == "Edited by hand."
    assert all(o["hypothesis"]["id"].startswith(chosen.id) for o in journal)  # the plan, or built on it
