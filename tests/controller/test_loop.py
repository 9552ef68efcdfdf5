"""The loop's logic with a FakeSandbox: admission, limits, repairs, rollback, resume, integrity."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from controller.agents.base import GuardFailure
from controller.agents.offline import OfflineAgent
from controller.ledger import IterationLimits
from controller.loop import StagePolicies
from controller.plan import Hypothesis, ModuleCode
from controller.registry import RunConfig
from controller.store import RunStore
from controller.tasks import Prior, Task
from controller.wiring import stage_policies
from sandbox.base import Job
from sandbox.events import ExceptionEvent, Frame, MetricEvent, StageEvent
from sandbox.results import Status
from tests.controller.fakes import N_LABELS, TASK, Canned, FakeSandbox, SimulatedKill, attempt_calls, make_loop


def test_a_full_run_fills_the_registry_and_reports_a_host_scored_test_number(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    loop = make_loop(tmp_path, sandbox)
    state = loop.run()
    root = loop.store.root
    assert state.status == "finished"
    for name in (
        "run.json",
        "plan.json",
        "events.jsonl",
        "best.json",
        "best_config.json",
        "aggregates.json",
        "report/summary.md",
        "journal.json",
    ):
        assert (root / name).is_file(), name
    best = json.loads((root / "best.json").read_text())
    assert best["split"] == "test" and best["scored_by"] == "host" and best["selected_on"] == "validation"
    assert best["arm"].startswith(("novelty:wide-lr", "ablation:wide-lr", "novelty:shift-mlp+w64"))
    assert best["value"] == pytest.approx(sum(best["per_seed"].values()) / 3)
    plan = json.loads((root / "plan.json").read_text())
    hyp = plan["hypotheses"][0]
    assert "success_threshold" in hyp and {"max_iterations", "patience"} <= set(plan["stopping"])
    assert "metric" not in hyp and "stopping_rule" not in hyp  # nothing enforced them: not in the model
    attempt_dirs = sorted(p.name for p in (root / "attempts").iterdir())
    assert attempt_dirs == [f"{n:04d}" for n in range(1, len(attempt_dirs) + 1)]
    first = root / "attempts" / "0001"
    assert {"attempt.json", "stdout.log", "stderr.log", "events.jsonl"} <= {p.name for p in first.iterdir()}
    events = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]
    finished = [e for e in events if e["event"] == "attempt.finished"]
    assert finished and all(e["run_id"] == "r1" and "iteration" in e for e in finished[1:])
    # the labels exist only in the host's data folder, sealed, never in an attempt folder
    private = root / "data" / "private"
    assert (private / "labels.json").is_file()
    assert private.stat().st_mode & 0o777 == 0o700 and (private / "labels.json").stat().st_mode & 0o777 == 0o600
    assert not list((root / "attempts").rglob("labels.json"))
    assert sorted(p.name for p in (root / "data" / "public").iterdir()) == ["train.npz"]
    # training sees the train split through one read-only mount and nothing labelled besides
    for kind, job, policy in sandbox.calls:
        if kind == "train":
            assert [(m.source, m.target) for m in policy.data_mounts] == [(str(root / "data" / "public"), "/data/public")]
        if kind in {"train", "guard", "predict"}:
            assert not any("labels" in name or "val" in name or "test" in name for name in job.files if name != "inputs.npy")


def test_test_split_is_evaluated_once_for_the_selected_configuration(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    make_loop(tmp_path, sandbox).run()
    test_jobs = [
        job for kind, job, _ in sandbox.calls if kind == "predict" and job.files["inputs.npy"] == b"test-inputs"
    ]
    # Once per seed, each job holding that seed's weights alone (never an ensemble's worth).
    assert [json.loads(job.files["config.json"])["models"] for job in test_jobs] == [["s0"], ["s1"], ["s2"]]


def test_admission_control_never_starts_a_job_that_does_not_fit(tmp_path: Path) -> None:
    sandbox = FakeSandbox(job_seconds=20)
    loop = make_loop(tmp_path, sandbox, budget_s=400, reserve_s=60)
    starts: list[tuple[float, float]] = []
    sandbox.on_run = lambda kind, job: starts.append((loop.ledger.remaining_s(), 0.0))
    state = loop.run()
    assert state.status == "finished"
    for (kind, job, policy), (remaining, _) in zip(sandbox.calls, starts, strict=True):
        if kind == "predict" and job.files["inputs.npy"] == b"test-inputs":
            assert policy.timeout <= remaining  # the final test evaluation may use the reserve
            continue
        assert policy.timeout <= remaining - 60 + 1e-6, (kind, policy.timeout, remaining)
        assert policy.timeout >= TASK.min_timeout
    assert any(hit.limit == "budget.admission" for hit in state.limits_hit) or state.totals.wall_s <= 400
    assert (loop.store.root / "report" / "summary.md").is_file()
    assert state.totals.wall_s <= 400
    # an arm x seed is admitted as a unit: no training job ran without time for its evaluation
    records = loop.store.attempts()
    evaluated = {(r.arm_key, r.seed) for r in records if r.kind == "eval"}
    trained = [(r.arm_key, r.seed) for r in records if r.kind == "train" and r.status == "ok"]
    assert trained and all(pair in evaluated for pair in trained)


def test_once_jobs_are_measured_the_last_minute_is_used_with_margin_not_a_fixed_floor(tmp_path: Path) -> None:
    from controller.attempts import MEASURED_MARGIN

    sandbox = FakeSandbox(job_seconds=4)
    loop = make_loop(tmp_path, sandbox, budget_s=300, reserve_s=60)
    seen: dict[str, int] = {}
    admitted: list[tuple[str, float, float]] = []  # kind, timeout, seconds left before the reserve

    def watch(kind: str, job: object) -> None:
        seen[kind] = seen.get(kind, 0) + 1
        admitted.append((kind, sandbox.calls[-1][2].timeout, loop.ledger.available_s()))

    sandbox.on_run = watch
    state = loop.run()
    assert state.status == "finished" and state.totals.wall_s <= 300
    # jobs were started with under the task's 30 s floor left: each with at least 3x the slowest of its kind
    late = [(kind, timeout) for kind, timeout, left in admitted if kind == "train" and left < TASK.min_timeout]
    assert late and all(timeout >= MEASURED_MARGIN * 4 for _, timeout in late)
    assert loop.attempts.min_timeout("train") == MEASURED_MARGIN * 4
    assert loop.attempts.min_timeout("never-ran") == TASK.min_timeout


def test_iteration_attempt_limit_cuts_the_iteration_and_is_logged(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    loop = make_loop(tmp_path, sandbox, limits=IterationLimits(attempts=4))
    state = loop.run()
    hits = [h for h in state.limits_hit if h.limit == "iteration.attempts"]
    assert hits and hits[0].iteration == 1
    per_iteration = {}
    for record in loop.store.attempts():
        if record.kind == "test":
            continue  # the final evaluation belongs to the report, not to an iteration
        per_iteration[record.iteration] = per_iteration.get(record.iteration, 0) + 1
    assert all(n <= 4 for it, n in per_iteration.items() if it >= 1)
    events = (loop.store.root / "events.jsonl").read_text()
    assert "limit.hit" in events


def _failed_guard(stage: str = "smoke") -> Canned:
    exc = ExceptionEvent(
        stage=stage,
        type="RuntimeError",
        message="mat1 and mat2 shapes cannot be multiplied",
        frames=[
            Frame(file="/workspace/gen/head.py", line=7, function="forward", source="return self.fc(x)", generated=True)
        ],
    )
    return Canned(status=Status.error, exit_code=1, events=[StageEvent(stage=stage, state="failed"), exc])


class ScriptedRepairAgent(OfflineAgent):
    """Offline planning, but repairs by returning a new module (recording what it was shown)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[GuardFailure] = []

    def repair(
        self,
        task: Task,
        slot: str,
        hypothesis: Hypothesis,
        module: ModuleCode,
        failure: GuardFailure,
        last_good: ModuleCode,
    ) -> ModuleCode:
        self.failures.append(failure)
        return ModuleCode(slot=slot, code=module.code + f"\n# repair {len(self.failures)}\n", origin="repair")


def test_repairs_are_bounded_then_the_module_rolls_back(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    sandbox.script("guard", Canned(), _failed_guard(), _failed_guard(), _failed_guard(), then_honest=True)  # augment ok, head fails 3x
    agent = ScriptedRepairAgent()
    loop = make_loop(tmp_path, sandbox, agent=agent, limits=IterationLimits(repairs_per_module=2))
    loop.ctx.state.config.seeds = [0]
    state = loop.run()
    assert len(agent.failures) == 2
    assert agent.failures[0].stage == "smoke" and "> /workspace/gen/head.py:7" in agent.failures[0].traceback
    assert state.totals.repairs == 2 and state.totals.rollbacks == 1
    guards = [r for r in loop.store.attempts() if r.kind == "guard" and r.slot == "head" and r.iteration == 1]
    assert len(guards) == 3
    novelty = loop.arms["novelty:shift-mlp"]
    assert novelty.modules["head"].code == TASK.baseline_code("head")


def test_a_successful_repair_is_used(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    sandbox.script("guard", Canned(), _failed_guard("import"), then_honest=True)
    agent = ScriptedRepairAgent()
    loop = make_loop(tmp_path, sandbox, agent=agent, seeds=1)
    state = loop.run()
    assert state.totals.repairs >= 1 and state.totals.rollbacks == 0
    assert loop.arms["novelty:shift-mlp"].modules["head"].code.endswith("# repair 1\n")


def test_offline_agent_repairs_by_rolling_back_to_the_last_good_module(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    sandbox.script("guard", Canned(), _failed_guard(), then_honest=True)
    loop = make_loop(tmp_path, sandbox, seeds=1)
    state = loop.run()
    assert state.totals.rollbacks >= 1
    assert loop.arms["novelty:shift-mlp"].modules["head"].origin == "rollback"


def test_resume_after_a_crash_loses_nothing_and_reruns_nothing(tmp_path: Path) -> None:
    reference = FakeSandbox()
    make_loop(tmp_path / "ref", reference, seeds=2).run()
    crashing = FakeSandbox()
    crashing.fail_after = 10  # prepare, the environment probe, then 8 more jobs
    with pytest.raises(SimulatedKill):
        make_loop(tmp_path, crashing, seeds=2).run()
    store = RunStore.open(tmp_path / "runs", "r1")
    before = {r.key: r.number for r in store.attempts()}
    assert len(before) == 9
    resumed = FakeSandbox()
    loop = make_loop(tmp_path, resumed, seeds=2)
    state = loop.run()
    after = {r.key: r.number for r in loop.store.attempts()}
    assert all(after[key] == number for key, number in before.items())  # nothing lost
    assert attempt_calls(resumed) == attempt_calls(reference) - 9  # nothing rerun
    assert len(after) == attempt_calls(reference)
    assert state.status == "finished"


def test_seeds_that_predict_exactly_alike_count_once(tmp_path: Path) -> None:
    # A module that pins the RNG trains one model whatever the seed: a zero spread would win
    # any Welch test by a hair. Its repeated seeds are not counted and the arm is not eligible.
    same = [i % 10 if i % 9 else (i + 1) % 10 for i in range(N_LABELS)]
    pinned = [Canned(files={"out/predictions.json": json.dumps({"predictions": {f"s{s}": same}}).encode()}) for s in (0, 1)]
    sandbox = FakeSandbox()
    sandbox.script("predict", *pinned, then_honest=True)
    loop = make_loop(tmp_path, sandbox, seeds=3)
    loop.run()
    evals = [r for r in loop.store.attempts() if r.kind == "eval" and r.arm == "baseline"]
    assert evals[0].predictions_digest == evals[1].predictions_digest != evals[2].predictions_digest
    baseline = json.loads((loop.store.root / "aggregates.json").read_text())["arms"]["baseline"]
    assert baseline["validation"]["n"] == 2 and baseline["eligible"] is False
    assert baseline["repeated_seeds"] == {"1": 0} and baseline["suspect_attempts"] == [evals[1].number]


def test_a_suspect_claim_is_flagged_and_never_counted(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    bogus = Canned(files={"out/model.pt": struct.pack("d", 0.81)}, events=[MetricEvent(name="accuracy", value=1.0)])
    sandbox.script("train", bogus, then_honest=True)
    loop = make_loop(tmp_path, sandbox, seeds=3)
    loop.run()
    evals = [r for r in loop.store.attempts() if r.kind == "eval"]
    first = evals[0]
    assert first.arm == "baseline" and first.seed == 0
    assert first.suspect is True and first.telemetry_score == 1.0
    assert first.host_score == pytest.approx(0.81)
    assert "claimed 1.0000" in (first.suspect_reason or "") and "0.8100" in (first.suspect_reason or "")
    honest = [r for r in evals if r is not first]
    assert honest and not any(r.suspect for r in honest)  # honest telemetry (last epoch) is not flagged
    aggregates = json.loads((loop.store.root / "aggregates.json").read_text())
    baseline = aggregates["arms"]["baseline"]
    assert baseline["validation"]["n"] == 2 and baseline["eligible"] is False  # the suspect seed never counts
    assert baseline["suspect_attempts"] == [first.number]
    best = json.loads((loop.store.root / "best.json").read_text())
    assert best["arm"] != "baseline"
    assert "Suspect attempts" in (loop.store.root / "report" / "summary.md").read_text()


def test_invalid_predictions_fail_the_evaluation(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    sandbox.script(
        "predict",
        Canned(files={}),
        Canned(files={"out/predictions.json": b'{"predictions": {"s1": [1, 2]}}'}),
        then_honest=True,
    )
    loop = make_loop(tmp_path, sandbox, seeds=3)
    loop.run()
    evals = [r for r in loop.store.attempts() if r.kind == "eval"]
    # first eval wrote nothing: invalid predictions; second: wrong shape
    assert evals[0].status == "error" and "invalid_predictions" in (evals[0].reason or "")
    assert evals[1].status == "error" and "wrong shape" in (evals[1].reason or "")
    assert evals[0].host_score is None and evals[1].host_score is None


def test_stop_request_ends_the_run_gracefully(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    loop = make_loop(tmp_path, sandbox)
    sandbox.on_run = lambda kind, job: loop.store.request_stop() if len(sandbox.calls) == 6 else None
    state = loop.run()
    assert state.status == "stopped"
    assert len([c for c in sandbox.calls if c[0] == "train"]) <= 3
    assert (loop.store.root / "best.json").is_file()


def test_environment_is_recorded_once(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    loop = make_loop(tmp_path, sandbox, seeds=1)
    loop.run()
    env = json.loads((loop.store.root / "environment.json").read_text())
    assert env["pip_freeze"] == ["torch==2.14.1", "numpy==2.4.6"]
    assert env["seeds"] == [0] and env["host"]
    assert [c[0] for c in sandbox.calls].count("env") == 1


def test_parallel_training_never_shares_a_gpu_and_gives_the_same_results(tmp_path: Path) -> None:
    import threading
    import time

    from controller.scheduler import ResourcePool

    sequential = FakeSandbox()
    make_loop(tmp_path / "seq", sequential).run()
    expected = json.loads((tmp_path / "seq" / "runs" / "r1" / "best.json").read_text())

    sandbox = FakeSandbox()
    in_use: set[int] = set()
    overlap: list[int] = []
    peak = [0]
    lock = threading.Lock()

    def on_run(kind: str, job: Any) -> None:
        if kind != "train":
            return
        policy = next(p for _, j, p in list(sandbox.calls) if j is job)
        ids = set(policy.gpus)  # explicit ids, granted by the pool
        with lock:
            overlap.extend(ids & in_use)
            in_use.update(ids)
            peak[0] = max(peak[0], len(in_use))
        time.sleep(0.02)
        with lock:
            in_use.difference_update(ids)

    sandbox.on_run = on_run
    base = stage_policies(RunConfig(budget_s=3600))
    policies = StagePolicies(guard=base.guard, train=base.train.with_overrides(gpus=1), evaluate=base.evaluate)
    pool = ResourcePool(cpus=64, memory=1024**4, gpu_ids=[0, 1])
    loop = make_loop(tmp_path, sandbox, policies=policies, resources=pool, parallel=4)
    loop.run()
    assert overlap == [] and peak[0] == 2
    best = json.loads((loop.store.root / "best.json").read_text())
    assert best["arm"] == expected["arm"] and best["value"] == pytest.approx(expected["value"])


def test_the_matrix_is_shrunk_to_the_budget_with_a_logged_reason(tmp_path: Path) -> None:
    sandbox = FakeSandbox(job_seconds=30)
    loop = make_loop(tmp_path, sandbox, budget_s=900, reserve_s=60)
    # The first estimate of a pair is the task's measured prior: here, what these fake jobs take.
    loop.task = loop.task.model_copy(update={"priors": [Prior(baseline_sd=0.01, pair_s=80, measured="fake 30 s jobs, with overhead")]})
    state = loop.run()
    hits = [h for h in state.limits_hit if h.limit == "matrix.shrunk"]
    assert hits and "dropped ablation:" in hits[0].detail
    trained_arms = {r.arm for r in loop.store.attempts() if r.kind == "train"}
    assert "baseline" in trained_arms and "novelty:shift-mlp" in trained_arms
    # what the hypothesis needs keeps all of its seeds: the ablations went first
    for arm in ("baseline", "novelty:shift-mlp"):
        seeds = {r.seed for r in loop.store.attempts() if r.kind == "train" and r.arm == arm}
        assert seeds == {0, 1, 2}, arm


def test_a_sweep_winner_is_retrained_on_fresh_seeds_before_it_counts(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    loop = make_loop(tmp_path, sandbox, seeds=3)
    loop.ctx.state.config.matrix = {"sweep": {"width": [32, 64]}}
    loop.run()
    records = loop.store.attempts()
    sweeps = [r for r in records if r.kind == "train" and (r.arm or "").startswith("sweep:") and r.iteration == 1]
    assert len(sweeps) == 2 and {r.seed for r in sweeps} == {10_000}  # outside the run's seeds
    novelty = loop.arms["novelty:shift-mlp"]
    assert novelty.hyper["width"] == 64  # the better point
    assert any(r.arm_key == novelty.key for r in sweeps)  # the winning point is the novelty's configuration
    counted = loop.scores[novelty.key]
    # only fresh seeds count for the novelty: the run's, and any a second look at ablations added
    events = [json.loads(line) for line in (loop.store.root / "events.jsonl").read_text().splitlines()]
    added = {seed for e in events if e["event"] == "attribution.retest" for seed in e["seeds"]}
    assert set(counted) - added == {0, 1, 2} and 10_000 not in counted
    assert all(r.key != f"eval/{novelty.key}/s10000" for r in counted.values())


def test_a_relative_runs_dir_still_gives_absolute_mount_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store, _ = RunStore.create(Path("runs"), RunConfig(budget_s=60), "rel")
    assert store.root.is_absolute() and store.root == tmp_path / "runs" / "rel"


class _HeadCrashesTraining(FakeSandbox):
    """Training crashes in the generated head (a frame of gen/head.py) until it is repaired."""

    status, type, message = Status.error, "RuntimeError", "mat1 and mat2 shapes cannot be multiplied (64x10 and 128x10)"

    def honest(self, kind: str, job: Job) -> Canned:
        head = job.files.get("gen/head.py", b"")
        if kind == "train" and head != TASK.baseline_code("head").encode() and b"# repair" not in head:
            exc = ExceptionEvent(
                stage="run",
                type=self.type,
                message=self.message,
                frames=[
                    Frame(file="/workspace/train.py", line=120, function="run", source="mean_loss = train_epoch("),
                    Frame(file="gen/head.py", line=9, function="forward", source="return self.out(x)", generated=True),
                ],
            )
            return Canned(status=self.status, exit_code=1, events=[StageEvent(stage="run", state="failed"), exc])
        return super().honest(kind, job)


class _HeadRunsOutOfGpuMemory(_HeadCrashesTraining):
    status, type, message = Status.oom, "OutOfMemoryError", "CUDA out of memory. Tried to allocate 80.00 GiB"


def test_a_module_that_crashes_training_is_repaired_from_the_traceback_guarded_again_and_trained(
    tmp_path: Path,
) -> None:
    from controller.agents.offline import LIBRARY
    from controller.plan import Plan, StoppingRules

    agent = ScriptedRepairAgent()
    loop = make_loop(tmp_path, _HeadCrashesTraining(), agent=agent, seeds=2)
    plan = Plan(task="digits", objective="o", topic="t", hypotheses=[LIBRARY[0]], stopping=StoppingRules(max_iterations=1))
    loop.store.write("plan.json", plan)
    state = loop.run()
    assert state.status == "finished"
    [failure] = agent.failures
    assert failure.stage == "train" and failure.exception_type == "RuntimeError"
    assert "> gen/head.py:9 in forward" in failure.traceback and "  /workspace/train.py:120" in failure.traceback
    assert state.totals.repairs == 1 and state.totals.rollbacks == 0
    records = loop.store.attempts()
    crashed = [r for r in records if r.kind == "train" and r.status == "error"]
    guards = [r for r in records if r.kind == "guard" and r.slot == "head"]
    assert crashed and len(guards) == 2 and guards[1].number > crashed[0].number  # guarded again after the crash
    novelty = loop.arms["novelty:shift-mlp"]
    assert novelty.modules["head"].code.endswith("# repair 1\n")
    trained = [r for r in records if r.kind == "train" and r.arm_key == novelty.key and r.status == "ok"]
    assert len(trained) == 2
    outcome = json.loads((loop.store.root / "journal.json").read_text())[0]
    assert any(note.startswith("head crashed training") for note in outcome["notes"])
    assert outcome["arm_means"].keys() >= {"baseline", "novelty:shift-mlp", "ablation:shift-mlp-no-augment"}


def test_a_gpu_oom_in_a_generated_module_goes_to_repair_with_its_reason(tmp_path: Path) -> None:
    from controller.agents.offline import LIBRARY
    from controller.plan import Plan, StoppingRules

    agent = ScriptedRepairAgent()
    loop = make_loop(tmp_path, _HeadRunsOutOfGpuMemory(), agent=agent, seeds=2)
    plan = Plan(task="digits", objective="o", topic="t", hypotheses=[LIBRARY[0]], stopping=StoppingRules(max_iterations=1))
    loop.store.write("plan.json", plan)
    assert loop.run().status == "finished"
    [failure] = agent.failures
    assert failure.exception_type == "OutOfMemoryError" and "CUDA out of memory" in failure.message
    assert loop.ctx.state.totals.repairs == 1
    assert any(r.kind == "train" and r.status == "oom" for r in loop.store.attempts())


def test_a_crash_in_task_code_is_not_blamed_on_a_module(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    trusted = ExceptionEvent(
        stage="run", type="OSError", message="disk full",
        frames=[Frame(file="/workspace/train.py", line=140, function="run", source="torch.save(...)")],
    )  # fmt: skip
    sandbox.script("train", Canned(status=Status.error, exit_code=1, events=[trusted]), then_honest=True)
    agent = ScriptedRepairAgent()
    loop = make_loop(tmp_path, sandbox, agent=agent, seeds=2)
    assert loop.run().status == "finished"
    assert agent.failures == [] and loop.ctx.state.totals.repairs == 0
