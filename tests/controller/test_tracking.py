"""log_to_mlflow against a real MLflow store, read back with MLflow's own client (no mocks).

One FakeSandbox run (a few seconds with its report, figures and paper) is shared by the
module; each test logs it into a store of its own. Its first training job is scripted to report a loss
curve, a metric whose name MLflow would refuse, and an accuracy far above what the host
scores, so that arm x seed is suspect.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pytest
from structlog.testing import capture_logs

from controller import tracking
from controller.report import Results
from controller.tracking import log_to_mlflow
from sandbox.events import MetricEvent
from tests.controller.fakes import Canned, FakeSandbox, make_loop

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

IN_CI = bool(os.environ.get("CI"))
EXPERIMENT = "sandlab-digits"
LOSS_CURVE = [2.0, 1.0, 0.5]
CLAIMED = 0.999
"""What the scripted job claims on its own holdout; the host scores about 0.8."""


@pytest.fixture(scope="module")
def mlflow_client_class() -> type[MlflowClient]:
    try:
        from mlflow import MlflowClient
    except ImportError:
        message = "mlflow is not installed: pip install -e '.[dev]' (or 'sandlab[mlflow]')"
        if IN_CI:
            pytest.fail(f"CI is set but {message}: the MLflow tests must run in CI")
        pytest.skip(message)
    return MlflowClient


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Results:
    """A finished run, as the final report sees it, with MLflow switched on in its config."""
    sandbox = FakeSandbox()
    curve = [MetricEvent(name="train_loss", value=v, step=i) for i, v in enumerate(LOSS_CURVE)]
    extra = [MetricEvent(name="acc@1 (val)", value=0.5), MetricEvent(name="holdout_accuracy", value=CLAIMED, step=2)]
    sandbox.script("train", Canned(events=curve + extra), then_honest=True)
    loop = make_loop(tmp_path_factory.mktemp("tracked"), sandbox, seeds=2)
    loop.state.config.mlflow = False  # the loop's own report must not log: each test does
    loop.run()
    results = loop.results()
    config = results.state.config.model_copy(update={"mlflow": True})
    return replace(results, state=results.state.model_copy(update={"config": config}))


@pytest.fixture(scope="module")
def artefacts(finished: Results, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two files of the run, and a folder from outside it."""
    notes = tmp_path_factory.mktemp("outside") / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("a note")
    root = finished.store.root
    return [root / "best.json", root / "report" / "summary.md", notes]


@pytest.fixture(scope="module")
def logged(
    finished: Results,
    artefacts: list[Path],
    mlflow_client_class: type[MlflowClient],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[MlflowClient, str]:
    """The shared run logged once into a store of its own: (client, parent run id)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        parent_id = log_to_mlflow(finished, artefacts)
    assert parent_id is not None
    return mlflow_client_class(tracking_uri=uri), parent_id


def _runs(client: MlflowClient) -> list[Run]:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id], max_results=1000))


def _children(client: MlflowClient, parent_id: str) -> list[Run]:
    return [r for r in _runs(client) if r.data.tags.get("mlflow.parentRunId") == parent_id]


def _scored(results: Results) -> set[tuple[str, str]]:
    return {(key, str(seed)) for key, seeds in results.scores.items() for seed in seeds}


def _scripted_train(results: Results) -> tuple[str, int]:
    """(arm key, seed) of the training job that reported the loss curve."""
    for record in results.store.attempts():
        events = results.store.attempt_events(record.number)
        if record.kind == "train" and any(getattr(e, "name", "") == "train_loss" for e in events):
            assert record.arm_key is not None and record.seed is not None
            return record.arm_key, record.seed
    pytest.fail("no training attempt reported the scripted loss curve")


def test_a_run_is_one_mlflow_run_tagged_with_its_id_holding_config_totals_and_results(
    finished: Results, logged: tuple[MlflowClient, str]
) -> None:
    client, parent_id = logged
    parents = [r for r in _runs(client) if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in parents] == [parent_id]
    parent = parents[0]
    state = finished.state
    assert parent.data.tags["sandlab.run_id"] == state.run_id
    assert parent.info.run_name == state.run_id
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sandlab.status"] == "finished"
    assert parent.data.params["dataset"] == "digits"
    assert parent.data.params["seeds"] == "[0, 1]"
    assert parent.data.params["budget_s"] == "3600.0"
    metrics = parent.data.metrics
    assert metrics["total_attempts"] == state.totals.attempts > 0
    assert metrics["total_wall_s"] == pytest.approx(state.totals.wall_s)
    assert {"total_cost_usd", "total_tokens"} <= metrics.keys()
    assert finished.chosen is not None
    assert metrics["best_val_accuracy_mean"] == pytest.approx(finished.chosen[1].mean)
    best = finished.store.read("best.json")
    assert best is not None and best["value"] is not None
    assert metrics["test_accuracy"] == pytest.approx(best["value"])
    assert parent.data.tags["sandlab.best_arm"] == finished.chosen[0].name


def test_each_arm_and_seed_is_a_nested_run_with_its_config_and_host_score(
    finished: Results, logged: tuple[MlflowClient, str]
) -> None:
    client, parent_id = logged
    children = _children(client, parent_id)
    by_key = {(r.data.tags["sandlab.arm_key"], r.data.tags["sandlab.seed"]): r for r in children}
    assert len(by_key) == len(children)
    assert set(by_key) == _scored(finished)
    arms = {arm.key: arm for arm in finished.arms.values()}
    for (key, seed), run in by_key.items():
        arm, record = arms[key], finished.scores[key][int(seed)]
        assert run.info.status == "FINISHED"
        assert run.data.tags["sandlab.run_id"] == finished.state.run_id
        assert run.data.tags["sandlab.arm"] == run.data.params["arm"]
        assert run.data.params["seed"] == seed
        assert run.data.params["dataset"] == "digits"
        assert run.data.params["trunk"] == "cnn"
        for slot, module in arm.modules.items():
            assert run.data.params[f"module.{slot}"] == module.digest
        for name, value in arm.hyper.items():
            assert run.data.params[f"hyper.{name}"] == (value if isinstance(value, str) else json.dumps(value))
        assert run.data.metrics["val_accuracy"] == pytest.approx(record.host_score)


def test_a_suspect_seed_is_flagged_with_its_reason(finished: Results, logged: tuple[MlflowClient, str]) -> None:
    client, parent_id = logged
    key, seed = _scripted_train(finished)
    flags = {
        (r.data.tags["sandlab.arm_key"], r.data.tags["sandlab.seed"]): r.data.tags for r in _children(client, parent_id)
    }
    suspect = flags.pop((key, str(seed)))
    assert suspect["sandlab.suspect"] == "true"
    assert f"claimed {CLAIMED:.4f}" in suspect["sandlab.suspect_reason"]
    assert {tags["sandlab.suspect"] for tags in flags.values()} == {"false"}


def test_training_telemetry_is_a_curve_with_steps_under_its_own_prefix(
    finished: Results, logged: tuple[MlflowClient, str]
) -> None:
    client, parent_id = logged
    key, seed = _scripted_train(finished)
    (run,) = [
        r
        for r in _children(client, parent_id)
        if (r.data.tags["sandlab.arm_key"], r.data.tags["sandlab.seed"]) == (key, str(seed))
    ]
    history = client.get_metric_history(run.info.run_id, "telemetry/train_loss")
    assert sorted((m.step, m.value) for m in history) == list(enumerate(LOSS_CURVE))
    assert [m.value for m in client.get_metric_history(run.info.run_id, "telemetry/acc_1__val_")] == [0.5]
    assert run.data.metrics["telemetry/holdout_accuracy"] == CLAIMED
    assert run.data.metrics["val_accuracy"] < CLAIMED  # the score is the host's, never the claim


def test_the_given_artefacts_are_attached_to_the_parent_run(logged: tuple[MlflowClient, str]) -> None:
    client, parent_id = logged
    top = {f.path for f in client.list_artifacts(parent_id)}
    assert {"best.json", "report", "notes"} <= top
    assert [f.path for f in client.list_artifacts(parent_id, "report")] == ["report/summary.md"]
    assert [f.path for f in client.list_artifacts(parent_id, "notes")] == ["notes/a.txt"]
    # Beside the SQLite database, not in ./mlruns of whatever folder the tests run from.
    stored = Path(urlparse(client.get_run(parent_id).info.artifact_uri).path)
    assert (stored / "best.json").is_file()
    database = Path(client.tracking_uri.removeprefix("sqlite:///"))
    assert stored.is_relative_to(database.parent / "artifacts")
    assert not stored.is_relative_to(Path.cwd())


def test_logging_again_updates_the_same_runs_instead_of_adding_any(
    finished: Results, artefacts: list[Path], mlflow_client_class: type[MlflowClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A progress snapshot mid-run, the final report, then a repeat (as after a resume):
    one parent run throughout, in the run folder's own store, its seeds added as they come."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    baseline = finished.arms["baseline"].key
    running = finished.state.model_copy(update={"status": "running", "iteration": 1})
    progress = replace(finished, state=running, scores={baseline: finished.scores[baseline]}, chosen=None, final=False)
    first = log_to_mlflow(progress, [])
    db = finished.store.root / "mlruns" / "mlflow.db"
    assert db.is_file()
    client = mlflow_client_class(tracking_uri=f"sqlite:///{db}")
    assert first is not None
    assert client.get_run(first).info.status == "RUNNING"
    assert {r.data.tags["sandlab.arm_key"] for r in _children(client, first)} == {baseline}

    level = logging.getLogger("mlflow").level
    assert log_to_mlflow(finished, artefacts) == first
    assert log_to_mlflow(finished, artefacts) == first
    assert logging.getLogger("mlflow").level == level  # quieted for the call only
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert len(_runs(client)) == 1 + len(_scored(finished))
    assert len(_children(client, first)) == len(_scored(finished))
    assert client.get_run(first).info.status == "FINISHED"
    assert len(client.get_metric_history(first, "total_attempts")) == 1  # unchanged: not logged again
    key, seed = _scripted_train(finished)
    (scripted,) = [
        r
        for r in _children(client, first)
        if r.data.tags["sandlab.arm_key"] == key and r.data.tags["sandlab.seed"] == str(seed)
    ]
    assert len(client.get_metric_history(scripted.info.run_id, "telemetry/train_loss")) == len(LOSS_CURVE)
    assert (finished.store.root / "mlruns" / "artifacts").is_dir()


def _folder_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_an_unwritable_store_is_a_warning_and_leaves_the_run_as_it_was(
    finished: Results,
    artefacts: list[Path],
    mlflow_client_class: type[MlflowClient],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tests run as root, which file modes do not stop: the database's folder is a file instead.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker / 'mlflow.db'}")
    before = _folder_digest(finished.store.root)
    with capture_logs() as logs:
        assert log_to_mlflow(finished, artefacts) is None
    warnings = [e for e in logs if e["event"] == "tracking.failed"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert warnings[0]["reason"] and warnings[0]["run_id"] == finished.state.run_id
    assert _folder_digest(finished.store.root) == before
    assert finished.store.load_state().status == "finished"


def test_tracking_switched_off_logs_nothing(finished: Results, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    config = finished.state.config.model_copy(update={"mlflow": False})
    off = replace(finished, state=finished.state.model_copy(update={"config": config}))
    with capture_logs() as logs:
        assert log_to_mlflow(off, [finished.store.root / "best.json"]) is None
    assert not db.exists()
    assert logs == []


def test_without_mlflow_installed_it_says_once_how_to_enable_it(
    finished: Results, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets when it is not installed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking._say_how_to_enable.cache_clear()
    with capture_logs() as logs:
        assert log_to_mlflow(finished, []) is None
        assert log_to_mlflow(finished, []) is None
    tracking._say_how_to_enable.cache_clear()
    said: list[dict[str, Any]] = [e for e in logs if e["event"] == "tracking.mlflow_missing"]
    assert len(said) == 1
    assert said[0]["log_level"] == "info"
    assert "pip install 'sandlab[mlflow]'" in said[0]["hint"]
    assert not (tmp_path / "mlflow.db").exists()
