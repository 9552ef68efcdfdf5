"""One arm x seed: train in one container, predict in another (no labels), score on the host.

A trial keeps no state: it builds JobSpecs, hands them to the AttemptRunner, and returns
the records. Where those records count (an arm's seeds, a sweep's points, the final test)
is the loop's decision.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import structlog

from controller.attempts import AttemptRunner, JobSpec, harness
from controller.data import PUBLIC_DATA_MOUNT, RunData
from controller.matrix import baseline_modules, grid_points, tag, task_defaults
from controller.plan import RESERVED_HYPER, Arm, Hyper, Hypothesis, ModuleCode, Value
from controller.registry import AttemptKind, AttemptRecord, RunConfig
from controller.scoring import InvalidPredictionsError, accuracy, is_suspect, load_predictions, telemetry_claim
from controller.store import WEIGHTS, eval_key, heldout_key, train_key
from controller.tasks import Task
from sandbox.policy import Policy
from sandbox.results import AttemptResult

PREDICTIONS = "out/predictions.json"
SWEEP_SEED_OFFSET = 10_000
"""Sweeps run on seeds outside the run's own (10000 + the first seed)."""
STAGING_SLACK_BYTES = 4 * 1024**2
"""Room left in the evaluation workspace for code, config and the predictions it writes."""


class Trial:
    """Builds and runs the train, evaluate and test jobs of one run."""

    def __init__(
        self,
        task: Task,
        config: RunConfig,
        data: RunData,
        attempts: AttemptRunner,
        train_policy: Policy,
        evaluate_policy: Policy,
    ) -> None:
        self.task, self.config, self.data, self.attempts = task, config, data, attempts
        self.train_policy, self.evaluate_policy = train_policy, evaluate_policy
        self.log = structlog.get_logger("sandlab.trial")

    # -- jobs ---------------------------------------------------------------------------------

    def train(self, arm: Arm, seed: int) -> AttemptRecord:
        """Train one seed; ok only with regular-file weights the evaluation can take."""
        files = {**self.task.code(), **self.module_files(arm)}
        config = {**self.config_for(arm, seed), "data_dir": PUBLIC_DATA_MOUNT}
        if self.config.pretrained:
            files["pretrained.pt"] = Path(self.config.pretrained).read_bytes()
            config["pretrained"] = "pretrained.pt"
        files["config.json"] = json.dumps(config).encode()
        metric = self.task.metric.name

        def claim(result: AttemptResult, outputs: Path) -> dict[str, Any]:
            return {"telemetry_score": telemetry_claim(result.events, metric)}

        return self.attempts.execute(
            JobSpec(
                key=train_key(arm.key, seed),
                kind="train",
                policy=self.data.with_train_split(self.train_policy),
                timeout_s=self.task.timeouts.train,
                command=harness("run", "--job", self.task.entrypoints.train, "--config", "config.json"),
                files=files,
                arm=arm,
                seed=seed,
                keep_outputs=True,
                required_outputs={WEIGHTS: "missing_weights"},
                max_output_bytes=self.max_weights_bytes(),
                follow_up_s=self.attempts.min_timeout("eval"),
                scorer=claim,
            )
        )

    def evaluate(self, arm: Arm, seed: int, train: AttemptRecord) -> AttemptRecord:
        """Predict the validation split with one seed's weights; score and check its telemetry."""
        models = {f"s{seed}": self.attempts.store.weights_path(train.number)}
        return self._predict(eval_key(arm.key, seed), "eval", arm, models, "val", train=train, seed=seed)

    def test(self, arm: Arm, trains: dict[int, AttemptRecord]) -> list[AttemptRecord]:
        """The one test-split evaluation of the selected arm: one job per seed, as validation.

        Never every seed's weights in one job: generated code that loads them all could answer
        with an ensemble of the seeds, and the report would print an ensemble's accuracy as
        the mean of single models, with a spread it never had.
        """
        return [
            self._predict(
                heldout_key(arm.key, seed),
                "test",
                arm,
                {f"s{seed}": self.attempts.store.weights_path(record.number)},
                "test",
                seed=seed,
                final=True,
            )
            for seed, record in sorted(trains.items())
        ]

    def train_and_evaluate(self, arm: Arm, seed: int) -> AttemptRecord | None:
        """Both jobs of an arm x seed; None when training failed (its record says why)."""
        train = self.train(arm, seed)
        if train.status != "ok":
            self.attempts.progress(f"  {arm.name} seed {seed}: training {train.status} ({train.reason})")
            return None
        return self.evaluate(arm, seed, train)

    def sweep(self, hypothesis: Hypothesis, modules: dict[str, ModuleCode], grid: dict[str, list[Value]]) -> Hyper:
        """The novelty's hyperparameters: the grid point with the best validation score.

        Each point trains on a sweep seed outside the run's seeds; the winner is then trained
        afresh on the run's seeds by the loop, and only those count for the novelty (reusing
        the seed that won would bias its mean upward).
        """
        hyper: Hyper = {**task_defaults(self.task), **hypothesis.hyper}
        if not grid:
            return hyper
        seed = SWEEP_SEED_OFFSET + self.config.seeds[0]
        every_slot = {**baseline_modules(self.task), **modules}  # what the novelty arm will train with
        scored: list[tuple[float, Hyper]] = []
        for point in grid_points(grid):
            arm = Arm(name=f"sweep:{hypothesis.id}@{tag(point)}", modules=every_slot, hyper={**hyper, **point})
            record = self.train_and_evaluate(arm, seed)
            if record is not None and record.host_score is not None and not record.suspect:
                better = record.host_score if self.task.metric.higher_is_better else -record.host_score
                scored.append((better, arm.hyper))
        if not scored:
            return hyper
        best = max(scored, key=lambda item: item[0])[1]
        chosen = {k: best[k] for k in grid}
        self.log.info("sweep.selected", hypothesis=hypothesis.id, chosen=chosen, tried=len(scored))
        self.attempts.progress(f"  sweep selected {chosen} for {hypothesis.id} (validation, sweep seed {seed})")
        return best

    def _predict(
        self,
        key: str,
        kind: AttemptKind,
        arm: Arm,
        models: dict[str, Path],
        split: str,
        *,
        train: AttemptRecord | None = None,
        seed: int | None = None,
        final: bool = False,
    ) -> AttemptRecord:
        files = {**self.task.code(), **self.module_files(arm)}
        for name, path in models.items():
            files[f"models/{name}.pt"] = path.read_bytes()
        files["inputs.npy"] = self.data.inputs(split)
        files["config.json"] = json.dumps({**self.config_for(arm, 0), "models": sorted(models)}).encode()
        return self.attempts.execute(
            JobSpec(
                key=key,
                kind=kind,
                policy=self.evaluate_policy,
                timeout_s=self.task.timeouts.predict,
                command=harness("run", "--job", self.task.entrypoints.predict, "--config", "config.json"),
                files=files,
                arm=arm,
                seed=seed,
                required_outputs={PREDICTIONS: "invalid_predictions"},
                final=final,
                scorer=lambda result, outputs: self._score(outputs, sorted(models), split, train),
            )
        )

    # -- host-side scoring ----------------------------------------------------------------------

    def _score(self, outputs: Path, models: list[str], split: str, train: AttemptRecord | None) -> dict[str, Any]:
        labels = self.data.labels()
        try:
            predictions = load_predictions(
                outputs / PREDICTIONS, models=models, count=len(labels[split]), classes=labels["classes"]
            )
        except InvalidPredictionsError as exc:
            return {"status": "error", "reason": f"invalid_predictions: {exc}"}
        per_model = {name: accuracy(p, labels[split]) for name, p in predictions.items()}
        mean = sum(per_model.values()) / len(per_model)
        update: dict[str, Any] = {"host_scores": per_model, "host_score": mean, "score_split": split}
        if len(predictions) == 1:
            (only,) = predictions.values()
            update["predictions_digest"] = hashlib.sha256(json.dumps(only).encode()).hexdigest()
            update["wrong_indices"] = [i for i, (p, t) in enumerate(zip(only, labels[split], strict=True)) if p != t]
        if train is not None and train.telemetry_score is not None:
            claim = train.telemetry_score
            update["telemetry_score"] = claim
            bounded = self.task.metric.name == "accuracy"
            if is_suspect(
                claim,
                mean,
                self.task.metric.higher_is_better,
                bounded=bounded,
                n_claim=self.holdout_size(),
                n_host=len(labels[split]),
            ):
                update["suspect"] = True
                update["suspect_reason"] = f"training telemetry claimed {claim:.4f} but the host scored {mean:.4f}"
        return update

    # -- configuration ----------------------------------------------------------------------------

    def config_for(self, arm: Arm, seed: int) -> dict[str, Any]:
        """The job config: task defaults, the run's trunk, the arm's hyperparameters, the data's shape."""
        return {
            **self.task.defaults,
            "arch": self.config.arch,
            **{k: v for k, v in arm.hyper.items() if k not in RESERVED_HYPER},  # as recorded arms may hold
            "seed": seed,
            **self.data.shape(),
            "threads": max(1, int(self.train_policy.cpus)),
        }

    def module_files(self, arm: Arm) -> dict[str, bytes]:
        """Every slot's module file: the arm's, else the slot's baseline (an arm recorded before
        the task declared a slot trains as it did then)."""
        modules = {**baseline_modules(self.task), **arm.modules}
        return {self.task.slots[s].file: m.code.encode() for s, m in modules.items()}

    def holdout_size(self) -> int | None:
        """Samples in the training job's own holdout (what its telemetry is measured on)."""
        n_train = self.data.meta.get("n_train")
        fraction = float(self.task.defaults.get("holdout_fraction", 0) or 0)
        return math.ceil(int(n_train) * fraction) if n_train and fraction else None

    def max_weights_bytes(self) -> int:
        """The largest weights file an evaluation job (validation or test) can stage beside its inputs."""
        inputs = max((self.data.dir / "eval" / f"{split}_inputs.npy").stat().st_size for split in ("val", "test"))
        room = int(self.evaluate_policy.workspace_size) - inputs - STAGING_SLACK_BYTES
        return max(room, 0)
