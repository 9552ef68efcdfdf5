"""Figures from the run registry: real PNG and PDF files, skipped without data, isolated failures.

A full FakeSandbox run (no Docker) gives the registry; a variant of the fake reports
per-epoch telemetry, as the digits task's train.py does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from controller import figures
from controller.figures import ablation_deltas, make_figures, telemetry_by_arm
from controller.registry import RunConfig
from controller.report import Results
from controller.store import RunStore
from sandbox.base import Job
from sandbox.events import MetricEvent
from tests.controller.fakes import Canned, FakeSandbox, held_out_records, make_loop

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PDF_MAGIC = b"%PDF-"
EPOCHS = 3
ALL_FIGURES = ["validation_by_arm", "ablation_deltas", "learning_curves", "budget", "attempt_outcomes"]


class EpochTelemetry(FakeSandbox):
    """Training jobs report holdout accuracy and train loss for every epoch (or nothing)."""

    def __init__(self, *, telemetry: bool = True) -> None:
        super().__init__()
        self.telemetry = telemetry

    def honest(self, kind: str, job: Job) -> Canned:
        canned = super().honest(kind, job)
        if kind != "train":
            return canned
        if not self.telemetry:
            return replace(canned, events=[])
        final = next(e.value for e in canned.events if isinstance(e, MetricEvent))
        events = []
        for epoch in range(EPOCHS):
            events.append(MetricEvent(name="train_loss", value=1.0 / (epoch + 1), step=epoch))
            events.append(MetricEvent(name="holdout_accuracy", value=final - 0.1 * (EPOCHS - 1 - epoch), step=epoch))
        return replace(canned, events=events)


def finished(tmp_path: Path, sandbox: FakeSandbox) -> Results:
    loop = make_loop(tmp_path, sandbox)
    loop.run()
    return loop.results(held_out_records(loop))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    return finished(tmp_path_factory.mktemp("run"), EpochTelemetry())


def test_every_figure_is_a_real_png_and_pdf_with_a_deterministic_name(results: Results, tmp_path: Path) -> None:
    made = make_figures(results, tmp_path)
    assert [f.name for f in made] == ALL_FIGURES
    for figure in made:
        assert figure.png == tmp_path / f"{figure.name}.png"
        assert figure.pdf == tmp_path / f"{figure.name}.pdf"
        assert figure.png.read_bytes().startswith(PNG_MAGIC)
        assert figure.pdf.read_bytes().startswith(PDF_MAGIC)
        assert figure.png.stat().st_size < 200_000, f"{figure.name}.png is too big to inline"
        assert figure.title and figure.caption
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}.{ext}" for n in ALL_FIGURES for ext in ("png", "pdf")
    )


def test_learning_curves_say_they_are_telemetry_and_host_scores_say_they_are_host_scored(
    results: Results, tmp_path: Path
) -> None:
    captions = {f.name: f.caption for f in make_figures(results, tmp_path)}
    assert "training telemetry (holdout carved from train), not the host score" in captions["learning_curves"]
    assert "host-scored" in captions["validation_by_arm"].lower()
    assert "LLM dollars are known only as the run's total" in captions["budget"]


def test_the_pdf_is_the_same_bytes_when_made_again(results: Results, tmp_path: Path) -> None:
    first = make_figures(results, tmp_path / "a")
    second = make_figures(results, tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert a.pdf.read_bytes() == b.pdf.read_bytes(), a.name


def test_learning_curves_read_every_seed_and_epoch_of_each_arms_training(results: Results) -> None:
    curves = telemetry_by_arm(results)
    assert set(curves) == set(results.arms)  # sweep points and the test job are not arms
    baseline = curves["baseline"]
    assert set(baseline) == {"holdout_accuracy", "train_loss"}
    assert sorted(baseline["train_loss"]) == results.state.config.seeds
    assert all(sorted(points) == list(range(EPOCHS)) for points in baseline["holdout_accuracy"].values())


def test_ablation_deltas_are_the_ablation_minus_its_own_novelty(results: Results) -> None:
    deltas = {label: (diff, low, high) for label, diff, low, high in ablation_deltas(results)}
    stats = results.stats()
    diff, low, high = deltas["wide-lr-no-width"]
    assert diff == pytest.approx(stats["ablation:wide-lr-no-width"].mean - stats["novelty:wide-lr"].mean)
    assert diff < 0  # the fake makes width 64 better
    assert low is not None and high is not None and low < diff < high
    assert all(label.startswith(tuple(o.hypothesis.id for o in results.history)) for label in deltas)


def test_a_run_without_telemetry_or_ablations_skips_those_figures(tmp_path: Path) -> None:
    quiet = finished(tmp_path / "run", EpochTelemetry(telemetry=False))
    made = make_figures(replace(quiet, history=[]), tmp_path / "figs")
    assert [f.name for f in made] == ["validation_by_arm", "budget", "attempt_outcomes"]
    assert not (tmp_path / "figs" / "learning_curves.png").exists()
    assert not (tmp_path / "figs" / "ablation_deltas.pdf").exists()


def test_a_run_with_no_attempts_makes_no_figures_and_no_error(results: Results, tmp_path: Path) -> None:
    empty, state = RunStore.create(tmp_path / "runs", RunConfig(budget_s=600), "empty")
    blank = replace(results, store=empty, state=state, history=[], arms={}, scores={}, chosen=None, tests=[])
    problems: list[str] = []
    assert make_figures(blank, tmp_path / "figs", problems=problems) == []
    assert problems == []


def test_one_failing_figure_does_not_stop_the_others(
    results: Results, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_: Results) -> None:
        msg = "axis exploded"
        raise ValueError(msg)

    monkeypatch.setattr(figures, "PLOTS", (("broken", "Broken", broken), *figures.PLOTS))
    problems: list[str] = []
    made = make_figures(results, tmp_path, problems=problems)
    assert [f.name for f in made] == ALL_FIGURES
    assert problems == ["figure broken failed: ValueError: axis exploded"]
    assert not (tmp_path / "broken.png").exists()
