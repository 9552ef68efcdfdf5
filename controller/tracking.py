"""MLflow tracking: each sandlab run is one MLflow run, each arm x seed a run nested under it.

MLflow is an extra (`pip install 'sandlab[mlflow]'`), imported only here and only when
asked; `controller start --no-mlflow` turns tracking off. The store: MLFLOW_TRACKING_URI
when set, else SQLite in the run folder (runs/<id>/mlruns/mlflow.db, artefacts beside it),
read by MLflow's client and UI with no server. Not a `file:` store: MLflow 3 has frozen
it and refuses it unless MLFLOW_ALLOW_FILE_STORE is set.

log_to_mlflow is idempotent (it runs after iterations, at the end, after a resume): it
finds the MLflow run tagged with the sandlab run id and updates it. Params already there
stay (MLflow forbids changing them), a metric is logged only when its value changed, an
arm x seed's telemetry once. The scores are the host's; the job's own telemetry goes under
`telemetry/` and is never the score. Tracking must never lose a run: a failure is one
structlog warning with its reason, and None.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from controller.registry import RunConfig, RunState
from controller.store import RunStore, train_key
from sandbox.events import MetricEvent

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, Run, RunTag

    from controller.plan import Arm
    from controller.registry import AttemptRecord
    from controller.report import Results

log = structlog.get_logger("sandlab.tracking")

LOCAL_STORE_DIR = "mlruns"
"""The run's own MLflow store, relative to the run folder, used when no tracking URI is set."""
LOCAL_DB = "mlflow.db"
LOCAL_ARTIFACTS = "artifacts"
SQLITE = "sqlite:///"
EXPERIMENT_PREFIX = "sandlab-"
"""One experiment per task: sandlab-digits."""
RUN_ID_TAG = "sandlab.run_id"
LEVEL_TAG = "sandlab.level"
"""`run` for the sandlab run, `seed` for an arm x seed under it (parent and children share RUN_ID_TAG)."""
PARENT_TAG = "mlflow.parentRunId"
TELEMETRY_PREFIX = "telemetry/"
TOTALS = ("wall_s", "cost_usd", "llm_cost_usd", "gpu_cost_usd", "gpu_s", "tokens", "llm_calls", "attempts")
"""The run.json totals logged on the parent run, each as total_<name>, stepped by iteration."""
MLFLOW_STATUS = {"finished": "FINISHED", "stopped": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
"""The parent run's MLflow status by sandlab status; RUNNING otherwise."""
# MLflow's own limits (mlflow.utils.validation), kept here so a too-long value is cut
# rather than rejecting the whole batch it travels in.
MAX_KEY_CHARS = 250
MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
SEARCH_PAGE = 1000
OLDEST_FIRST = ["attributes.start_time ASC"]
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""A tracking server that is down costs the run ~40 s, not MLflow's default of minutes per
request (7 retries, 120 s timeout) out of the report's reserve; a value the user set wins."""
ENABLE_HINT = "pip install 'sandlab[mlflow]' to log runs to MLflow (or start runs with --no-mlflow)"
FAILURE_HINT = "the run and its report are unaffected; check MLFLOW_TRACKING_URI, or start runs with --no-mlflow"


def log_to_mlflow(results: Results, artefacts: list[Path]) -> str | None:
    """Log the run to MLflow; the MLflow run id, or None when tracking is off, absent or failed."""
    if not results.state.config.mlflow:
        return None
    bound = log.bind(run_id=results.state.run_id)
    try:
        try:
            from mlflow import MlflowClient
        except ImportError as exc:
            _say_how_to_enable(str(exc))
            return None
        with _mlflow_scope():
            uri = tracking_uri(results.store)
            parent_id = _log_run(MlflowClient(tracking_uri=uri), uri, results, artefacts)
    except Exception as exc:  # tracking must never cost the run: say why and go on
        bound.warning("tracking.failed", reason=f"{type(exc).__name__}: {exc}", hint=FAILURE_HINT)
        return None
    bound.info("tracking.logged", mlflow_run_id=parent_id, tracking_uri=uri)
    return parent_id


def tracking_uri(store: RunStore) -> str:
    """MLFLOW_TRACKING_URI when set; else the run's own SQLite store, created if missing."""
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    folder = store.root / LOCAL_STORE_DIR
    folder.mkdir(exist_ok=True)
    return f"{SQLITE}{folder / LOCAL_DB}"


@functools.cache
def _say_how_to_enable(reason: str) -> None:
    """Once per process (and reason): every snapshot of every run would otherwise repeat it."""
    log.info("tracking.mlflow_missing", reason=reason, hint=ENABLE_HINT)


@contextmanager
def _mlflow_scope() -> Iterator[None]:
    """HTTP_LIMITS, and MLflow kept off the console (it announces creating its tables at
    INFO on stderr, amid the run's progress lines), for this call only."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    added = [name for name in HTTP_LIMITS if name not in os.environ]
    os.environ.update({name: HTTP_LIMITS[name] for name in added})
    try:
        yield
    finally:
        logger.setLevel(level)
        for name in added:
            os.environ.pop(name, None)


def _log_run(client: MlflowClient, uri: str, results: Results, artefacts: list[Path]) -> str:
    """The parent run, its arm x seed runs, the artefacts, then the status; the parent's id."""
    experiment = _experiment_id(client, uri, results.task.name)
    parent = _parent_run(client, experiment, results.state)
    parent_id = str(parent.info.run_id)
    _log_parent(client, parent, results)
    _log_seed_runs(client, experiment, parent_id, results)
    _log_artefacts(client, parent_id, results.store.root, artefacts)
    _set_status(client, parent, results.state)
    return parent_id


# -- the MLflow objects -------------------------------------------------------------------


def _experiment_id(client: MlflowClient, uri: str, task: str) -> str:
    name = f"{EXPERIMENT_PREFIX}{task}"
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    # A SQLite store keeps artefacts beside its database; MLflow's default would be
    # ./mlruns in whatever folder the controller was started from. A server keeps its own.
    location = None
    if uri.startswith(SQLITE):
        location = (Path(uri.removeprefix(SQLITE)).absolute().parent / LOCAL_ARTIFACTS).as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except Exception:
        # Another run sharing the server may have created it between the two calls.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def _search(client: MlflowClient, experiment: str, filter_string: str) -> list[Run]:
    """Every active run matching the filter, oldest first, across pages."""
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            [experiment], filter_string, max_results=SEARCH_PAGE, order_by=OLDEST_FIRST, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _quoted(value: str) -> str:
    """A string literal for an MLflow search filter."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    msg = f"cannot search MLflow for {value!r}: it holds both quote characters"
    raise ValueError(msg)


def _parent_run(client: MlflowClient, experiment: str, state: RunState) -> Run:
    """The MLflow run of this sandlab run: found by its tag, created the first time."""
    found = _search(client, experiment, f"tags.`{RUN_ID_TAG}` = {_quoted(state.run_id)} and tags.`{LEVEL_TAG}` = 'run'")
    if found:
        return found[0]
    tags = {RUN_ID_TAG: state.run_id, LEVEL_TAG: "run"}
    return client.create_run(
        experiment, start_time=_millis(state.created_at.timestamp()), tags=tags, run_name=state.run_id
    )


def _set_status(client: MlflowClient, parent: Run, state: RunState) -> None:
    wanted = MLFLOW_STATUS.get(state.status, "RUNNING")
    run_id = parent.info.run_id
    if wanted == "RUNNING":
        if parent.info.status != "RUNNING":  # resumed after an end
            client.update_run(run_id, status="RUNNING")
    elif parent.info.status != wanted or parent.info.end_time is None:
        client.set_terminated(run_id, status=wanted)


# -- what is logged -----------------------------------------------------------------------


def run_params(config: RunConfig) -> dict[str, str]:
    """The run's configuration, one param per field (lists and dicts as JSON)."""
    return {key: _text(value) for key, value in config.model_dump(mode="json").items()}


def seed_params(results: Results, arm: Arm, seed: int) -> dict[str, str]:
    """What one arm x seed trained with: hyperparameters, module digests, data and trunk."""
    config = results.state.config
    params = {
        "arm": arm.name,
        "arm_key": arm.key,
        "seed": str(seed),
        "dataset": config.dataset,
        "trunk": str(arm.hyper.get("arch", config.arch)),
        "pretrained": _text(config.pretrained),
    }
    params.update({f"hyper.{key}": _text(value) for key, value in sorted(arm.hyper.items())})
    params.update({f"module.{slot}": module.digest for slot, module in sorted(arm.modules.items())})
    return params


def telemetry_series(events: Iterable[object]) -> dict[str, list[tuple[float, int, int]]]:
    """Every MetricEvent a training job reported, as (value, step, unix ms) by metric.

    All of them, not a chosen few: a task's jobs name their own metrics. An event without a
    step takes its place in its series.
    """
    series: dict[str, list[tuple[float, int, int]]] = {}
    for event in events:
        if isinstance(event, MetricEvent):
            points = series.setdefault(TELEMETRY_PREFIX + _key(event.name), [])
            step = event.step if event.step is not None else len(points)
            points.append((event.value, step, _millis(event.ts if event.ts > 0 else None)))
    return series


def _log_parent(client: MlflowClient, parent: Run, results: Results) -> None:
    state = results.state
    metric = results.task.metric.name
    values: dict[str, float] = {f"total_{name}": float(getattr(state.totals, name)) for name in TOTALS}
    if results.chosen is not None:
        values[f"best_val_{metric}_mean"] = results.chosen[1].mean
    best = results.store.read("best.json") or {}
    if isinstance(best.get("value"), int | float):
        values[f"test_{metric}"] = float(best["value"])
    tags = {
        "sandlab.status": state.status,
        "sandlab.task": results.task.name,
        "sandlab.run_dir": str(results.store.root),
        "sandlab.integrity": state.integrity,
        "sandlab.iteration": str(state.iteration),
        "sandlab.best_arm": results.chosen[0].name if results.chosen else "",
    }
    _update(client, parent, params=run_params(state.config), values=values, step=state.iteration, tags=tags)


def _log_seed_runs(client: MlflowClient, experiment: str, parent_id: str, results: Results) -> None:
    """One nested run per host-scored arm x seed, created once, then kept up to date."""
    existing = {
        (run.data.tags.get("sandlab.arm_key"), run.data.tags.get("sandlab.seed")): run
        for run in _search(client, experiment, f"tags.`{PARENT_TAG}` = {_quoted(parent_id)}")
    }
    metric = results.task.metric.name
    seen: set[str] = set()
    for arm in results.arms.values():
        if arm.key in seen:  # two names for one configuration: its seeds are logged once
            continue
        seen.add(arm.key)
        for seed, record in sorted(results.scores.get(arm.key, {}).items()):
            run = existing.get((arm.key, str(seed)))
            train = results.index.get(train_key(arm.key, seed))
            if run is None:
                began = (train or record).result.started_at.timestamp()
                tags = _seed_tags(results, parent_id, arm, seed, record, train)
                run = client.create_run(
                    experiment, start_time=_millis(began), tags=tags, run_name=f"{arm.name}/s{seed}"
                )
            values = {f"val_{metric}": record.host_score} if record.host_score is not None else {}
            _update(client, run, params=seed_params(results, arm, seed), values=values, step=0, tags={})
            if train is not None:
                _log_telemetry(client, run, results.store.attempt_events(train.number))
            if run.info.status != "FINISHED":  # scored: nothing more will happen to it
                ended = record.result.started_at.timestamp() + record.result.duration_s
                client.set_terminated(run.info.run_id, status="FINISHED", end_time=_millis(ended))


def _seed_tags(
    results: Results, parent_id: str, arm: Arm, seed: int, record: AttemptRecord, train: AttemptRecord | None
) -> dict[str, str]:
    return {
        RUN_ID_TAG: results.state.run_id,
        LEVEL_TAG: "seed",
        PARENT_TAG: parent_id,
        "sandlab.arm": arm.name,
        "sandlab.arm_key": arm.key,
        "sandlab.seed": str(seed),
        "sandlab.suspect": "true" if record.suspect else "false",
        "sandlab.suspect_reason": _cut(record.suspect_reason or "", MAX_TAG_CHARS),
        "sandlab.eval_attempt": str(record.number),
        "sandlab.train_attempt": str(train.number) if train else "",
        "sandlab.score_split": record.score_split or "validation",
    }


def _log_telemetry(client: MlflowClient, run: Run, events: Iterable[object]) -> None:
    """The training job's metric curves, each series logged whole, once."""
    from mlflow.entities import Metric

    metrics = [
        Metric(key=key, value=value, timestamp=ms, step=step)
        for key, points in telemetry_series(events).items()
        if key not in run.data.metrics
        for value, step, ms in points
    ]
    _log_batches(client, run.info.run_id, metrics=metrics)


def _update(
    client: MlflowClient,
    run: Run,
    *,
    params: dict[str, str],
    values: dict[str, float],
    step: int,
    tags: dict[str, str],
) -> None:
    """Add the params the run lacks, log the metrics whose value changed, set the tags."""
    from mlflow.entities import Metric, Param, RunTag

    have = run.data
    now = _millis()
    _log_batches(
        client,
        run.info.run_id,
        params=[Param(_key(k), _cut(v, MAX_PARAM_CHARS)) for k, v in params.items() if _key(k) not in have.params],
        metrics=[Metric(_key(k), v, now, step) for k, v in values.items() if have.metrics.get(_key(k)) != v],
        tags=[RunTag(k, _cut(v, MAX_TAG_CHARS)) for k, v in tags.items() if have.tags.get(k) != v],
    )


def _log_batches(
    client: MlflowClient,
    run_id: str,
    *,
    metrics: Sequence[Metric] = (),
    params: Sequence[Param] = (),
    tags: Sequence[RunTag] = (),
) -> None:
    """log_batch within MLflow's per-request limits (a flood of telemetry is split, not refused)."""
    for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=params[start : start + MAX_PARAMS_TAGS_PER_BATCH])
    for start in range(0, len(tags), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=tags[start : start + MAX_PARAMS_TAGS_PER_BATCH])
    for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])


def _log_artefacts(client: MlflowClient, run_id: str, root: Path, artefacts: list[Path]) -> None:
    """Each file or folder under the same relative folder it has in the run (report/summary.md)."""
    for path in artefacts:
        if not path.exists():
            log.warning("tracking.artefact_missing", path=str(path))
            continue
        try:
            relative = path.absolute().relative_to(root)
        except ValueError:
            relative = Path(path.name)
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=relative.as_posix())
        else:
            folder = relative.parent.as_posix()
            client.log_artifact(run_id, str(path), artifact_path=None if folder == "." else folder)


# -- small helpers ------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def _key(name: str) -> str:
    """A name MLflow accepts as a param or metric key (jobs and agents choose theirs)."""
    safe = _UNSAFE.sub("_", name)[:MAX_KEY_CHARS]
    return "_" if safe in {"", ".", ".."} else safe


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _millis(seconds: float | None = None) -> int:
    """Unix milliseconds, MLflow's clock; now by default."""
    return int((time.time() if seconds is None else seconds) * 1000)
