"""The report reads results and writes files; every number in it traces to a host-scored attempt."""

from __future__ import annotations

import json
from pathlib import Path

from controller.report import best_summary
from tests.controller.fakes import META, FakeSandbox, held_out_records, make_loop, markdown_table_shapes


def test_best_config_records_what_a_rerun_must_rebuild(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, FakeSandbox(), seeds=2)
    loop.run()
    config = json.loads((loop.store.root / "best_config.json").read_text())
    assert config["dataset"] == "digits" and config["model"] == {"arch": "cnn", "pretrained": None}
    assert config["input_shape"] == META["input_shape"] and config["num_classes"] == META["num_classes"]
    assert config["normalisation"] == {"mean": META["mean"], "std": META["std"]}
    best = json.loads((loop.store.root / "best.json").read_text())
    assert config["arm"] == best["arm"] and config["seeds"] == [0, 1]


def test_every_reported_test_number_traces_to_its_attempt(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, FakeSandbox(), seeds=2)
    loop.run()
    best = json.loads((loop.store.root / "best.json").read_text())
    tests = [json.loads((loop.store.attempt_dir(n) / "attempt.json").read_text()) for n in best["attempts"]["test"]]
    assert all(t["kind"] == "test" and t["score_split"] == "test" for t in tests)
    assert [t["seed"] for t in tests] == [0, 1]
    assert [t["host_scores"][f"s{t['seed']}"] for t in tests] == list(best["per_seed"].values())
    assert best["test"]["ci_high"] <= 1.0  # clipped to the metric's range
    summary = (loop.store.root / "report" / "summary.md").read_text()
    assert f"{best['value']:.4f}" in summary and "Not sealed" not in summary


def test_every_table_in_the_summary_is_a_well_formed_markdown_table(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, FakeSandbox(), seeds=2)
    loop.run()
    shapes = markdown_table_shapes((loop.store.root / "report" / "summary.md").read_text())
    assert len(shapes) >= 2, "the arms and the attempts tables"
    for shape in shapes:
        assert len(shape) >= 3 and len(set(shape)) == 1, shape  # header, delimiter and rows agree


def test_a_run_with_no_eligible_arm_reports_no_test_number_and_why(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, FakeSandbox(), seeds=1)  # below the two seeds selection needs
    loop.run()
    best = json.loads((loop.store.root / "best.json").read_text())
    assert best["value"] is None and "2 host-scored" in best["reason"]
    assert not (loop.store.root / "best_config.json").exists()
    assert not [r for r in loop.store.attempts() if r.kind == "test"]
    assert loop.state.best is None  # nor a best-so-far on one seed


def test_the_test_number_counts_the_seeds_validation_counted_and_no_suspect_one(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, FakeSandbox(), seeds=2)
    loop.run()
    results = loop.results(held_out_records(loop))
    assert results.chosen is not None
    arm = results.chosen[0]
    record = results.scores[arm.key][0]
    results.scores[arm.key][7] = record.model_copy(update={"seed": 7, "suspect": True, "host_score": 1.0})
    best = best_summary(results)
    assert list(best["per_seed"]) == ["s0", "s1"] and len(best["attempts"]["train"]) == 2
