"""`controller plan`, and the front-end flags of `start`: the way a researcher types them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.plan import Plan
from controller.store import RunStore
from tests.controller.cli.support import controller, one_line_error

TOPIC = "data augmentation for small digit datasets"


def _plan(tmp_path: Path, *extra: str) -> Path:
    proc = controller("plan", "--topic", TOPIC, "--offline", "--run-id", "p1", "--runs-dir", str(tmp_path), *extra)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "controller start --plan" in proc.stdout
    return tmp_path / "p1"


def test_plan_writes_every_front_end_file_and_stops_before_training(tmp_path: Path) -> None:
    idea = tmp_path / "idea.md"
    idea.write_text("# Shifts\nSmall random translations should help a tiny digit set.\n")
    root = _plan(tmp_path, "--idea", str(idea))
    for name in (
        "literature/papers.jsonl",
        "literature/summaries.jsonl",
        "literature/novelty.json",
        "planning/session.jsonl",
        "plan.json",
    ):
        assert (root / name).is_file(), name
    state = RunStore(root).load_state()
    assert state.status == "planned" and state.totals.attempts == 0
    assert not any((root / "attempts").iterdir())
    assert state.config.research is not None and state.config.research.idea is not None
    turns = [json.loads(line) for line in (root / "planning/session.jsonl").read_text().splitlines()]
    assert {t["role"] for t in turns} == {"pi", "engineer", "reviewer"}
    assert "Seed idea considered: # Shifts" in turns[0]["content"]
    Plan.model_validate_json((root / "plan.json").read_text())


def test_a_planned_run_is_not_resumed_but_started_with_its_plan(tmp_path: Path) -> None:
    _plan(tmp_path)
    proc = controller("resume", "p1", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "controller start --plan" in one_line_error(proc)


def test_an_interrupted_plan_resumes_to_a_plan(tmp_path: Path) -> None:
    root = _plan(tmp_path)
    store = RunStore(root)
    state = store.load_state()
    state.status, state.owner_pid = "interrupted", None
    store.save_state(state)
    (root / "plan.json").unlink()
    papers = (root / "literature/papers.jsonl").read_text()
    proc = controller("resume", "p1", "--runs-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert store.load_state().status == "planned" and (root / "plan.json").is_file()
    assert (root / "literature/papers.jsonl").read_text() == papers
    assert "summarising" not in proc.stdout  # finished stages are not redone


def _edited(tmp_path: Path, change: dict[str, object]) -> Path:
    root = _plan(tmp_path)
    plan = json.loads((root / "plan.json").read_text())
    plan.update(change)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(plan))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hypotheses": [{"id": "Bad Id!", "statement": "x"}]}, "is not a valid plan: hypotheses.0.id"),
        ({"task": "cifar"}, "the plan is for task 'cifar'"),
        ({"hypotheses": []}, "has no hypothesis to test"),
    ],
)
def test_a_bad_edited_plan_is_one_line_and_creates_nothing(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = _edited(tmp_path, change)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = controller("start", "--plan", str(path), "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and message in one_line_error(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_plan_file_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text("{not json")
    proc = controller("start", "--plan", str(path), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "--plan: cannot read" in one_line_error(proc)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--idea", "IDEA"], "give --topic"),
        (["--topic", "  "], "--topic: empty"),
        (["--topic", "x", "--sources", "google"], "--sources: unknown source 'google'"),
        (["--topic", "x", "--corpus", "CORPUS"], "CORPUS"),
        (["--topic", "x", "--plan", "IDEA"], "leave out --topic"),
    ],
)
def test_bad_front_end_flags_are_one_line_naming_the_fix(tmp_path: Path, args: list[str], message: str) -> None:
    idea = tmp_path / "idea.md"
    idea.write_text("an idea")
    corpus = tmp_path / "broken.jsonl"
    corpus.write_text("{not json\n")
    mapping = {"IDEA": str(idea), "CORPUS": str(corpus)}
    runs = tmp_path / "runs"
    proc = controller("start", *[mapping.get(a, a) for a in args], "--runs-dir", str(runs))
    assert proc.returncode == 2
    assert message.replace("CORPUS", str(corpus)) in one_line_error(proc)
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize(
    ("dataset", "message"),
    [("imagenet", "--dataset: unknown dataset 'imagenet'"), ("imagefolder:", "--dataset imagefolder needs a path")],
)
def test_plan_refuses_a_dataset_name_no_dataset_answers_to(tmp_path: Path, dataset: str, message: str) -> None:
    proc = controller("plan", "--topic", TOPIC, "--offline", "--dataset", dataset, "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and message in one_line_error(proc)
    assert not any(tmp_path.iterdir())


def test_first_seed_must_not_be_negative(tmp_path: Path) -> None:
    proc = controller("start", "--first-seed", "-1", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "--first-seed" in one_line_error(proc)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "slurm"], "--executor: unknown executor 'slurm'; use local or ray"),
        (["--fork-server"], "--fork-server is for --backend local"),
        (["--executor", "ray", "--ray-address", "127.0.0.1:9"], "cannot join the Ray cluster at 127.0.0.1:9"),
        (["--ray-address", "127.0.0.1:9"], "--ray-address is for --executor ray"),
        (["--allow-weaker"], "--allow-weaker is for --backend local"),
        (["--model", "gpt-x"], "--model gpt-x is for --agent llm"),
        (["--arch", "resnet18", "--pretrained", "pyproject.toml"], "not a torch.save file"),
    ],
)
def test_bad_executor_flags_are_one_line_naming_the_fix(tmp_path: Path, args: list[str], message: str) -> None:
    runs = tmp_path / "runs"
    proc = controller("start", *args, "--runs-dir", str(runs))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in one_line_error(proc)
    assert not runs.exists() or not any(runs.iterdir())
