"""The research loop: plan -> code -> guard -> repair -> run -> analyze -> refine -> report.

The story of a run, on two screens: `run` plans and iterates until a stopping rule, then
reports; `iterate` codes and guards the hypothesis's modules, expands and shrinks the
matrix, trains and scores every arm x seed, and analyzes. The machinery sits beside it:
AttemptRunner (attempts.py) runs jobs, RunData (data.py) owns the splits, Trial (trial.py)
builds one arm x seed's jobs, the Ledger (ledger.py) counts, selection.py and matrix.py
decide, report.py writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import structlog

from controller.agents.base import IterationOutcome
from controller.attempts import AttemptRunner, InterruptedRunError, StopRequestedError
from controller.coding import Coder
from controller.context import LoopContext, StagePolicies
from controller.data import RunData
from controller.errors import BudgetExceededError
from controller.ledger import AdmissionRefusedError, IterationLimitError
from controller.llm import LLMClient
from controller.matrix import expand, novelty_arm, shrink_to_budget
from controller.outputs import write_outputs
from controller.plan import Arm, Hypothesis, Matrix, ModuleCode, Plan
from controller.registry import AttemptRecord, BestSoFar, LimitHit, RunState
from controller.report import Results
from controller.research import plan_from_literature
from controller.runlog import configure_run_logging
from controller.selection import (
    arm_stats,
    attribute,
    attribution_note,
    choose_eligible,
    counted,
    judge,
    needs_retest,
    repeated_seeds,
    required_seeds,
)
from controller.sizing import Room, Sizing, baseline_sd, estimated_pair_s, retest_seeds, size_iteration
from controller.stats import ArmStats
from controller.store import eval_key, train_key
from controller.trial import Trial

__all__ = ["InterruptedRunError", "LoopContext", "ResearchLoop", "StagePolicies"]

PROGRESS_INTERVAL_S = 60.0
"""Real seconds between two progress snapshots of the outputs (the first is always written)."""


class ResearchLoop:
    """Runs one research run to completion, interruption, failure or budget."""

    def __init__(self, ctx: LoopContext) -> None:
        self.ctx, self.store, self.state, self.task = ctx, ctx.store, ctx.state, ctx.task
        self.ledger = ctx.ledger
        configure_run_logging(ctx.store.root / "events.jsonl")
        self.log = structlog.get_logger("sandlab.loop").bind(run_id=ctx.state.run_id)
        self.attempts = AttemptRunner(
            ctx.store,
            ctx.state,
            ctx.sandbox,
            ctx.ledger,
            min_timeout_s=ctx.task.min_timeout,
            progress=ctx.progress,
            resources=ctx.resources,
        )
        self.data = RunData(ctx.store, ctx.state.config, ctx.task, self.attempts, ctx.policies.train, ctx.progress)
        self.trial = Trial(
            ctx.task, ctx.state.config, self.data, self.attempts, ctx.policies.train, ctx.policies.evaluate
        )
        self.coder = Coder(ctx.task, ctx.agent, self.attempts, self.data, ctx.policies.guard, self._charge_agent)
        self.arms: dict[str, Arm] = {}
        self.scores: dict[str, dict[int, AttemptRecord]] = {}
        self.history: list[IterationOutcome] = []
        self.plan: Plan | None = None
        self.iteration = 0
        self._timer: threading.Timer | None = None
        self._last_progress: float | None = None

    def interrupt(self) -> None:
        """SIGINT/SIGTERM: kill running containers; the run unwinds as `interrupted`."""
        self.attempts.interrupt()

    # -- the whole run ----------------------------------------------------------------------

    def run(self) -> RunState:
        """Plan, iterate until a stopping rule, then report. Returns the final state.

        Whatever goes wrong inside (an LLM endpoint gone for good, a bug) ends the run as
        `failed`, with its reason and a report of what finished; it stays resumable.
        """
        with structlog.contextvars.bound_contextvars(run_id=self.state.run_id):  # LLM-layer events too
            return self._run()

    def _run(self) -> RunState:
        self._timer = threading.Timer(max(self.ledger.remaining_s(), 0), self.attempts.deadline_reached)
        self._timer.daemon = True
        self._timer.start()
        status = "finished"
        try:
            self._set_stage("prepare")
            self.data.prepare()
            self.data.record_environment(self.ctx.sandbox, self.ctx.policies.guard, self.state.run_id)
            plan = self.plan = self.make_plan()
            hypothesis: Hypothesis | None = plan.hypotheses[0]
            while hypothesis is not None and not self.should_stop(plan):
                self.history.append(self.iterate(hypothesis))
                self.store.write("journal.json", [o.model_dump(mode="json") for o in self.history])
                self.write_progress("the run is still going; the test split is evaluated once, at the end")
                hypothesis = self.ctx.agent.refine(self.task, plan, self.history)
                self._charge_agent()
            status = "stopped" if self.store.stop_requested() else "finished"
        except InterruptedRunError:
            self.state.status = "interrupted"
            self.state.message = "interrupted: containers killed; `controller resume` continues"
            self.attempts.save()
            self.write_progress("interrupted before the test split was scored; `controller resume` ends it", force=True)
            raise
        except StopRequestedError:
            status = "stopped"
        except BudgetExceededError as exc:
            self._limit("budget", str(exc))
        except Exception as exc:  # no failure may leave run.json saying `running`
            status = "failed"
            self.state.message = f"failed: {type(exc).__name__}: {exc}; `controller resume` continues"
            self.log.exception("run.failed", error=str(exc))
            self.ctx.progress(f"run failed: {type(exc).__name__}: {exc}")
        finally:
            if self._timer is not None:
                self._timer.cancel()
        self.state.status = status  # type: ignore[assignment]
        self.finalize()
        self.state.stage = "done"
        self.attempts.save()
        return self.state

    def should_stop(self, plan: Plan) -> bool:
        """Stopping rules: iterations, patience, target, budget, stop request."""
        best = (self.state.best.mean, self.state.best.n) if self.state.best else None
        reasons = plan.stopping.reasons(self.iteration, [o.supported for o in self.history], best)
        if self.attempts.deadline.is_set() or self.ledger.expired():
            reasons.append("wall-clock budget spent")
        elif self.ledger.available_s() < self.attempts.min_timeout("train") + self.attempts.min_timeout("eval"):
            reasons.append("no job fits in the budget left before the report reserve")
        if self.store.stop_requested():
            reasons.append("stop requested")
        if reasons:
            self.log.info("loop.stop", reasons=reasons)
            self.ctx.progress(f"stopping: {'; '.join(reasons)}")
        return bool(reasons)

    def make_plan(self) -> Plan:
        stored = self.store.read("plan.json")
        if stored is not None:
            return Plan.model_validate(stored)
        self._set_stage("plan")
        if self.state.config.research is not None:  # literature, novelty, the planning session
            llm = client if isinstance(client := getattr(self.ctx.agent, "client", None), LLMClient) else None
            plan = plan_from_literature(
                self.store, self.state.config, self.task, llm, self.ctx.progress, self.attempts.checkpoint
            )
        else:
            plan = self.ctx.agent.plan(self.task, self.state.config.seeds)
        if self.state.config.matrix:
            plan = plan.model_copy(update={"matrix": Matrix.model_validate(self.state.config.matrix)})
        self._charge_agent()
        self.store.write("plan.json", plan)
        self.log.info("plan.written", hypotheses=[h.id for h in plan.hypotheses])
        self.ctx.progress(f"plan: {len(plan.hypotheses)} hypothesis(es), seeds {plan.seeds}")
        return plan

    # -- one iteration ----------------------------------------------------------------------

    def iterate(self, hypothesis: Hypothesis) -> IterationOutcome:
        self.iteration = self.attempts.iteration = self.state.iteration = self.iteration + 1
        self.ledger.start_iteration()
        self.log = self.log.bind(iteration=self.iteration)
        self.ctx.progress(f"iteration {self.iteration}: {hypothesis.id} - {hypothesis.statement}")
        arms: list[Arm] = []
        notes: list[str] = []
        sizing: Sizing | None = None
        try:
            self._set_stage("code")
            modules = {slot: self.coder.write(slot, hypothesis) for slot in sorted(hypothesis.modules)}
            matrix = self.plan.matrix if self.plan is not None else Matrix()
            for round_ in range(self.ledger.limits.repairs_per_module + 1):  # repair what crashes training
                hyper = self.trial.sweep(hypothesis, modules, matrix.sweep)
                novelty = novelty_arm(self.task, hypothesis, modules, hyper)
                arms = expand(self.task, hypothesis, novelty, matrix, self.coder.guarded_suites(matrix))
                sizing = self.size(hypothesis, arms)
                arms = self.fit_to_budget(arms, sizing.seeds)
                self._set_stage("run")
                self.run_arms(arms, sizing.seeds)
                crash = self.crashed(arms, sizing.seeds, modules)
                if crash is None or round_ == self.ledger.limits.repairs_per_module:
                    break
                modules[crash[0].slot] = self.coder.repair_after_training(hypothesis, *crash)
                notes.append(f"{crash[0].slot} crashed training ({crash[1].reason}); repaired and trained again")
                for arm in arms:  # the next round's arms carry the repaired module
                    self.arms.pop(arm.name, None)
        except (IterationLimitError, AdmissionRefusedError) as cut:
            self._cut(cut, notes)
        self._set_stage("analyze")
        outcome = self.analyze(hypothesis, arms, notes)
        if sizing is not None:
            outcome.power, outcome.adequate, outcome.seeds = sizing.note, sizing.power.adequate, len(sizing.seeds)
        self.ledger.end_iteration()
        return outcome

    def size(self, hypothesis: Hypothesis, arms: list[Arm]) -> Sizing:
        """The iteration's seeds: enough to detect the claimed effect, when the budget allows."""
        sizing = size_iteration(
            self.task, hypothesis, seeds=self.state.config.seeds, arms=len(arms), room=self.room(),
            measured_sd=baseline_sd(self.task, self.scores.get(arms[0].key, {})),
            train_fraction=self.state.config.train_fraction,
        )  # fmt: skip
        self.ctx.progress(f"  power: {sizing.note}")
        return sizing

    def room(self) -> Room:
        pair_s = estimated_pair_s(self.task, self.attempts.index.values(), self.state.config.train_fraction)
        attempts_left, wall_left = self.ledger.iteration_room()
        return Room(pair_s, self.ledger.available_s(), self.ctx.parallel, attempts_left, wall_left)

    def fit_to_budget(self, arms: list[Arm], seeds: list[int]) -> list[Arm]:
        """Shrink the matrix (ablations first, last first; never baseline, novelty or seeds)."""
        left = {arm.key: sum(train_key(arm.key, s) not in self.attempts.index for s in seeds) for arm in arms}
        room = self.room()
        kept, dropped, estimate = shrink_to_budget(arms, left, room.pair_s, room.available_s, room.parallel)
        if dropped:
            available = room.available_s
            detail = (
                f"{len(arms)} arms x {len(seeds)} seeds need about {estimate:.0f}s but {available:.0f}s "
                f"remain; dropped {', '.join(dropped)}"
            )
            self.log.warning("matrix.shrunk", dropped=dropped, estimate_s=estimate, available_s=available)
            self._limit("matrix.shrunk", detail)
        for arm in kept:
            self.arms.setdefault(arm.name, arm)
        return kept

    def crashed(
        self, arms: list[Arm], seeds: list[int], modules: dict[str, ModuleCode]
    ) -> tuple[ModuleCode, AttemptRecord] | None:
        """The first train or eval job of these arms that crashed in a module the agent wrote."""
        written = {slot: m for slot, m in modules.items() if m.origin in {"agent", "repair"}}
        for arm, seed, key in ((a, s, k) for a in arms for s in seeds for k in (train_key, eval_key)):
            record = self.attempts.index.get(key(arm.key, seed))
            carried = {s: m for s, m in written.items() if s in arm.modules and arm.modules[s].digest == m.digest}
            if record is None or record.status not in {"error", "oom"}:  # a GPU OOM names its frames too
                continue
            if module := self.coder.culprit(record, carried):
                return module, record
        return None

    def run_arms(self, arms: list[Arm], seeds: list[int]) -> None:
        """Every arm x seed, `parallel` at a time; each scored pair lands in `scores`."""
        pairs = [(arm, seed) for arm in arms for seed in seeds]
        if self.ctx.parallel > 1:
            with ThreadPoolExecutor(self.ctx.parallel, thread_name_prefix="job") as executor:
                list(executor.map(lambda pair: self.score(*pair), pairs))
        else:
            for arm, seed in pairs:
                self.score(arm, seed)

    def score(self, arm: Arm, seed: int) -> None:
        record = self.trial.train_and_evaluate(arm, seed)
        if record is None or record.host_score is None:
            return
        with self.attempts.lock:
            self.scores.setdefault(arm.key, {})[seed] = record
            self._update_best()
            twin = repeated_seeds(self.scores[arm.key]).get(seed)
        why = record.suspect_reason if record.suspect else None if twin is None else f"predicts as seed {twin} does"
        flag = f"  [SUSPECT: not counted] {why}" if why else ""
        self.ctx.progress(
            f"  {arm.name} seed {seed}: host-scored val {self.task.metric.name} {record.host_score:.4f}{flag}"
        )

    # -- analysis -----------------------------------------------------------------------------

    def stats_of(self, arms: Iterable[Arm]) -> dict[str, ArmStats]:
        metric = self.task.metric.name
        return {arm.name: s for arm in arms if (s := arm_stats(arm.name, self.scores.get(arm.key, {}), metric))}

    def analyze(self, hypothesis: Hypothesis, arms: list[Arm], notes: list[str]) -> IterationOutcome:
        """The iteration's family of comparisons (Holm-corrected), the novelty's verdict, and
        a second look at its ablations when the first could not say what carried the gain."""
        outcome = judge(self.iteration, hypothesis, self.stats_of(arms), self.task.metric.higher_is_better)
        if unclear := needs_retest(outcome.attribution):
            outcome.attribution = self.retest(hypothesis, arms, unclear, notes) or outcome.attribution
        self.log.info("analysis", hypothesis=hypothesis.id, p_holm=outcome.p_holm.get(f"novelty:{hypothesis.id}"),
                      supported=outcome.supported, attribution=outcome.attribution)  # fmt: skip
        if outcome.attribution:
            notes.append(attribution_note(outcome.attribution))
        outcome.notes = notes
        try:
            summary = self.ctx.agent.review(self.task, outcome).summary
        except IterationLimitError as cut:  # the iteration's own limits; the run goes on
            self._limit(cut.limit, cut.detail)
            summary = f"review skipped ({cut})"
        self._charge_agent()
        outcome.notes.append(summary)
        self.ctx.progress(f"  analysis: {summary}")
        return outcome

    def retest(self, hypothesis: Hypothesis, arms: list[Arm], unclear: list[str], notes: list[str]) -> dict[str, str]:
        """The second look: fresh seeds for the novelty and its unclear ablations, when the
        budget left pays for them; the verdict itself stays the first look's."""
        again = [a for a in arms if a.name in {f"novelty:{hypothesis.id}", *map(hypothesis.ablation_arm, unclear)}]
        done = sorted({seed for arm in arms for seed in self.scores.get(arm.key, {})})
        fresh = retest_seeds(done or self.state.config.seeds, len(again), self.room())
        if not fresh:
            notes.append(f"ablations: a re-test of {', '.join(unclear)} at more seeds does not fit the budget left")
            return {}
        self.ctx.progress(f"  ablations unclear ({', '.join(unclear)}): re-testing on seeds {fresh[0]}-{fresh[-1]}")
        try:
            self.run_arms(again, fresh)
        except (IterationLimitError, AdmissionRefusedError) as cut:
            self._cut(cut, notes)
        verdicts = attribute(hypothesis, self.stats_of(arms), self.task.metric.higher_is_better)
        self.log.info("attribution.retest", seeds=fresh, arms=[a.name for a in again], attribution=verdicts)
        notes.append(f"ablations re-tested on seeds {fresh[0]}-{fresh[-1]} (second look, alpha/2 each)")
        return verdicts

    def finalize(self) -> None:
        """Select the best eligible arm, evaluate it once on the test split, write the report."""
        self._charge_agent()  # whatever a failed call spent (its retries) is counted too
        self._set_stage("report")
        chosen = self._choose_best()
        tests: list[AttemptRecord] = []
        note = ""
        if chosen is not None:
            arm = chosen[0]
            trains = {seed: self.attempts.index[train_key(arm.key, seed)] for seed in counted(self.scores[arm.key])}
            try:
                tests = self.trial.test(arm, trains)
            except (BudgetExceededError, InterruptedRunError, StopRequestedError) as exc:
                note = f"test split not evaluated: {exc}"
            except Exception as exc:  # the report is written whatever the test job's fate
                note = f"test split not evaluated: {type(exc).__name__}: {exc}"
        self._write(self.results(tests, note))

    def write_progress(self, note: str, *, force: bool = False) -> None:
        """The outputs as they stand (tables, figures, paper.md, dashboard), no test, no PDF.

        At most once a PROGRESS_INTERVAL_S of real time unless forced: a dashboard that
        reloads every few seconds needs no redraw per quick iteration.
        """
        now = time.monotonic()
        if not force and self._last_progress is not None and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        self._write(self.results(note=note, final=False))

    def _write(self, results: Results) -> None:
        for problem in write_outputs(results):  # never raises: problems are listed instead
            self.ctx.progress(f"  report: {problem}")

    def results(self, tests: Sequence[AttemptRecord] = (), note: str = "", *, final: bool = True) -> Results:
        """Everything the report needs, as data (the report runs no jobs)."""
        client = getattr(self.ctx.agent, "client", None)
        return Results(
            store=self.store,
            state=self.state,
            task=self.task,
            history=self.history,
            arms=dict(self.arms),
            scores={k: dict(v) for k, v in self.scores.items()},
            index=dict(self.attempts.index),
            required_seeds=required_seeds(self.state.config.seeds),
            chosen=self._choose_best(),
            tests=list(tests),
            note=note,
            data_shape=self.data.shape(),
            policies={"train": self.ctx.policies.train.name, "evaluate": self.ctx.policies.evaluate.name},
            final=final,
            llm=client if final and isinstance(client, LLMClient) else None,  # prose and review: once, at the end
        )

    def _choose_best(self) -> tuple[Arm, ArmStats] | None:
        arms, seeds = list(self.arms.values()), self.state.config.seeds
        return choose_eligible(arms, self.scores, self.stats_of(arms), seeds, self.task.metric.higher_is_better)

    def _update_best(self) -> None:
        chosen = self._choose_best()
        self.state.best = BestSoFar(arm=chosen[0].name, mean=chosen[1].mean, n=chosen[1].n) if chosen else None

    # -- bookkeeping -------------------------------------------------------------------------

    def _charge_agent(self) -> None:
        usage = getattr(self.ctx.agent, "usage", None)
        if usage is not None:
            self.ledger.charge_llm(usage)

    def _cut(self, cut: IterationLimitError | AdmissionRefusedError, notes: list[str]) -> None:
        """A per-iteration limit or a refused job: recorded, and the iteration goes on to analysis."""
        if isinstance(cut, IterationLimitError):
            self._limit(cut.limit, cut.detail)
            notes.append(f"iteration cut: {cut}")
        else:
            self._limit("budget.admission", str(cut))
            notes.append(f"budget: {cut}")

    def _limit(self, limit: str, detail: str) -> None:
        self.state.limits_hit.append(LimitHit(limit=limit, iteration=self.iteration, detail=detail))
        self.log.warning("limit.hit", limit=limit, detail=detail)
        self.ctx.progress(f"  limit hit: {limit}: {detail}")
        self.attempts.save()

    def _set_stage(self, stage: str) -> None:
        self.state.stage = stage
        self.attempts.save()
