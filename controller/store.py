"""The run folder: one atomic-write implementation, attempt keys and paths, lazy reads.

runs/<run_id>/run.json            RunState: config, budget, status, totals
runs/<run_id>/events.jsonl        structlog JSON, one event a line
runs/<run_id>/plan.json           hypotheses, success criteria, stopping rules
runs/<run_id>/attempts/<NNNN>/    attempt.json, code/, stdout.log, stderr.log, events.jsonl
runs/<run_id>/data/               meta.json, public/ (train only), eval/ (unlabelled), private/ (labels)
runs/<run_id>/best.json  best_config.json  aggregates.json  report/

The attempt folders are the source of truth: each is written under a temporary name and
renamed into place when complete, so after a crash an attempt is either whole or absent,
and the index is rebuilt from them on load. An attempt's events live in its events.jsonl
only (not inside attempt.json as well), and are read back lazily.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from controller.errors import BadInputError, RunNotFoundError
from controller.registry import AttemptRecord, RunConfig, RunState, new_run_id
from sandbox.events import Event, parse_events
from sandbox.owners import current_owner

STOP_FILE = "STOP"
WEIGHTS = "out/model.pt"
"""Where a training job leaves its weights, relative to its outputs folder."""
PRIVATE_DIR_MODE = 0o700
"""Owner-only folders: each run folder, and data/private, which holds the only copy of the
labels: unreadable to any other uid (local jobs)."""
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""A run id is one folder name that is safe to paste into a command: no '/', no '..' first, no spaces."""
_M = TypeVar("_M", bound=BaseModel)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename over `path`, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself is durable only once the folder's entry is on disk.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Plain text, atomically (see write_bytes_atomic)."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: Path, data: Any) -> None:
    """A pydantic model or plain data as JSON, atomically."""
    text = data.model_dump_json(indent=2) if isinstance(data, BaseModel) else json.dumps(data, indent=2, default=str)
    write_text_atomic(path, text)


# -- attempt keys: the deterministic identity of each piece of work --------------------------


def guard_key(slot: str, module_digest: str) -> str:
    return f"guard/{slot}/{module_digest}"


def train_key(arm_key: str, seed: int) -> str:
    return f"train/{arm_key}/s{seed}"


def eval_key(arm_key: str, seed: int) -> str:
    return f"eval/{arm_key}/s{seed}"


def heldout_key(arm_key: str, seed: int) -> str:
    return f"test/{arm_key}/s{seed}"


class RunStore:
    """One run's folder."""

    def __init__(self, root: Path) -> None:
        # Absolute: data folders are bind-mounted by path, and the engine needs absolute ones.
        self.root = root.absolute()
        self.attempts_dir = self.root / "attempts"

    # -- creation and loading -----------------------------------------------------------

    @classmethod
    def create(cls, runs_dir: Path, config: RunConfig, run_id: str | None = None) -> tuple[RunStore, RunState]:
        """Make a new run folder with its run.json."""
        run_id = run_id or new_run_id()
        if not RUN_ID_PATTERN.fullmatch(run_id):
            msg = f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' (at most 100, no '/' or spaces)"
            raise BadInputError(msg)
        store = cls(runs_dir / run_id)
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
            # Owner-only: a job that runs as another uid of this host (the local backend as root)
            # must not read earlier attempts' weights and predictions, nor anything else here.
            store.root.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            msg = f"run {run_id!r} already exists in {runs_dir}; pick another --run-id, or `controller resume {run_id}`"
            raise BadInputError(msg) from None
        except OSError as exc:
            msg = f"cannot create a run folder in {runs_dir} ({exc.strerror}); pass a writable --runs-dir"
            raise BadInputError(msg) from None
        store.root.chmod(PRIVATE_DIR_MODE)  # whatever the umask
        store.attempts_dir.mkdir()
        owner = current_owner()
        state = RunState(
            run_id=run_id, config=config, owner_pid=owner.pid, owner_host=owner.host, owner_start=owner.start_ticks
        )
        store.save_state(state)
        return store, state

    @classmethod
    def open(cls, runs_dir: Path, run_id: str) -> RunStore:
        """An existing run; RunNotFoundError naming the fix otherwise."""
        store = cls(runs_dir / run_id)
        if not (store.root / "run.json").is_file():
            known = sorted(p.parent.name for p in runs_dir.glob("*/run.json"))[-5:]
            hint = f"; recent runs: {', '.join(known)}" if known else f"; no runs in {runs_dir}"
            msg = f"no run {run_id!r} in {runs_dir}{hint} (or set --runs-dir)"
            raise RunNotFoundError(msg)
        return store

    @staticmethod
    def list_runs(runs_dir: Path) -> list[RunState]:
        """Every run in the folder, oldest first, each under its folder's name: the id every
        command takes, even where run.json says otherwise (a copied or renamed folder)."""
        states = []
        for path in sorted(runs_dir.glob("*/run.json")):
            try:
                state = RunState.model_validate_json(path.read_text())
            except ValueError:
                continue
            states.append(state.model_copy(update={"run_id": path.parent.name}))
        return states

    def load_state(self) -> RunState:
        """run.json; a file that is not a run's state is one line naming it, not a traceback."""
        path = self.root / "run.json"
        return _parsed(RunState, path)

    def save_state(self, state: RunState) -> None:
        state.updated_at = datetime.now(UTC)
        write_json_atomic(self.root / "run.json", state)

    def write(self, name: str, data: Any) -> Path:
        """An atomic JSON file in the run folder."""
        path = self.root / name
        write_json_atomic(path, data)
        return path

    def read(self, name: str) -> Any | None:
        path = self.root / name
        return json.loads(path.read_text()) if path.is_file() else None

    # -- data -----------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def seal_private(self, data_dir: Path) -> None:
        """Make data/private (the labels) readable by this user only."""
        private = data_dir / "private"
        private.chmod(PRIVATE_DIR_MODE)
        for path in private.rglob("*"):
            path.chmod(PRIVATE_DIR_MODE if path.is_dir() else 0o600)

    # -- attempts -----------------------------------------------------------------------

    def attempts(self) -> list[AttemptRecord]:
        """All finished attempts, by number (without their events: see attempt_events)."""
        return [
            _parsed(AttemptRecord, path) for path in sorted(self.attempts_dir.glob("[0-9][0-9][0-9][0-9]/attempt.json"))
        ]

    def attempt_index(self) -> dict[str, AttemptRecord]:
        """Finished attempts by key (what resume replays from)."""
        return {record.key: record for record in self.attempts()}

    def attempt(self, number: int) -> AttemptRecord:
        """One finished attempt's record (attempt.json must exist)."""
        return _parsed(AttemptRecord, self.attempt_dir(number) / "attempt.json")

    def attempt_dir(self, number: int) -> Path:
        return self.attempts_dir / f"{number:04d}"

    def weights_path(self, number: int) -> Path:
        """Where a kept training attempt's weights are."""
        return self.attempt_dir(number) / "outputs" / WEIGHTS

    def attempt_events(self, number: int) -> list[Event]:
        """An attempt's validated events, read from its events.jsonl when asked for."""
        path = self.attempt_dir(number) / "events.jsonl"
        if not path.is_file():
            return []
        events, _ = parse_events(path.read_bytes())
        return events

    def clean_partial_attempts(self) -> int:
        """Remove half-written attempt folders a crash left behind; return how many."""
        removed = 0
        for tmp in self.attempts_dir.glob(".*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
        return removed

    def next_attempt_number(self) -> int:
        numbers = [int(p.name) for p in self.attempts_dir.glob("[0-9][0-9][0-9][0-9]")]
        return max(numbers, default=0) + 1

    def staging_dir(self, number: int) -> Path:
        """Where an attempt's files go while it runs."""
        path = self.attempts_dir / f".{number:04d}.tmp"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def commit_attempt(self, staging: Path, record: AttemptRecord, code: dict[str, str]) -> Path:
        """Write logs, events, code and attempt.json into the staging folder, then rename it into place.

        Events go to events.jsonl only; attempt.json keeps their counts (event_stats) so a
        flood is written once and never loaded by `controller attempts`.
        """
        result = record.result
        (staging / "stdout.log").write_text(result.stdout)
        (staging / "stderr.log").write_text(result.stderr)
        with (staging / "events.jsonl").open("w") as fh:
            for event in result.events:
                fh.write(event.model_dump_json() + "\n")
        for name, text in code.items():
            target = staging / "code" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        slim = record.model_copy(
            update={"result": result.model_copy(update={"stdout": "", "stderr": "", "events": []})}
        )
        write_json_atomic(staging / "attempt.json", slim)
        final = self.attempt_dir(record.number)
        os.replace(staging, final)
        return final

    # -- control --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask a running loop (in another process) to stop gracefully."""
        write_text_atomic(self.root / STOP_FILE, datetime.now(UTC).isoformat())

    def stop_requested(self) -> bool:
        return (self.root / STOP_FILE).exists()

    def clear_stop(self) -> None:
        (self.root / STOP_FILE).unlink(missing_ok=True)


def _parsed(model: type[_M], path: Path) -> _M:
    """A record file as its model; a corrupt one is one line naming the file, not a traceback."""
    try:
        return model.model_validate_json(path.read_text())
    except ValueError as exc:  # pydantic's ValidationError is one
        lines = str(exc).strip().splitlines()
        why = "; ".join(line.strip() for line in lines[:3]) or type(exc).__name__
        msg = f"{path} is not a readable {model.__name__} ({why}); restore it from a copy or remove the run"
        raise BadInputError(msg) from None
