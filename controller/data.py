"""The run's data: fixed splits made once, sealed labels, and how each job sees the data.

Three splits, two of them sealed:
- *train*, with labels, is the only labelled data any job that runs generated code gets.
  It reaches training jobs through a read-only data mount (`/data/public`), never as a
  host path; a training job that wants progress curves carves a holdout out of it itself.
- *validation* (selection) and *test* (reporting) reach jobs only as unlabelled inputs,
  staged into the separate evaluation container.
- their labels live in data/private/ on the host, readable by this user only, and are
  read by nobody but the host's scorer.
Staging goes through the policy's data mounts on every backend: the docker backend mounts
them, the local backend stages read-only copies outside the run folder.
"""

from __future__ import annotations

import json
import platform
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from controller.attempts import AttemptRunner, JobSpec, harness
from controller.datasets import DatasetSpec, resolve_dataset
from controller.errors import ControllerError
from controller.registry import RunConfig
from controller.store import RunStore
from controller.tasks import Task
from sandbox.base import Job, Sandbox
from sandbox.gpus import detect_gpus
from sandbox.policy import Policy

RAW_DATA_MOUNT = "/data/raw"
"""Where the prepare job sees the dataset (read-only)."""
PUBLIC_DATA_MOUNT = "/data/public"
"""Where training jobs see the train split (read-only)."""
PREPARED_OUTPUTS = {
    "out/public/train.npz": "missing_train_split",
    "out/eval/val_inputs.npy": "missing_validation_inputs",
    "out/eval/test_inputs.npy": "missing_test_inputs",
    "out/private/labels.json": "missing_labels",
    "out/meta.json": "missing_meta",
}


class RunData:
    """Prepares the splits once and hands each stage what it may see."""

    def __init__(
        self,
        store: RunStore,
        config: RunConfig,
        task: Task,
        attempts: AttemptRunner,
        prepare_policy: Policy,
        progress: Callable[[str], None] = print,
    ) -> None:
        self.store, self.config, self.task, self.attempts = store, config, task, attempts
        self.prepare_policy = prepare_policy
        self.progress = progress
        self.dir = store.data_dir
        self.meta: dict[str, Any] = {}
        self.log = structlog.get_logger("sandlab.data")

    def dataset(self) -> DatasetSpec:
        """The run's dataset, resolved on the host (checked, fetched or replaced by FakeData)."""
        config = self.config
        spec = resolve_dataset(
            config.dataset,
            Path(config.data_root) if config.data_root else None,
            allow_download=config.allow_download,
            fallback_fakedata=config.fallback_fakedata,
            progress=self.progress,
        )
        if spec.fallback_from:
            self.log.warning("dataset.fallback", requested=config.dataset, reason=spec.fallback_from)
            self.progress(f"dataset unavailable ({spec.fallback_from}); using fakedata as asked")
        return spec

    def prepare(self) -> None:
        """Build the fixed splits once, in a container; keep the labels on the host only."""
        if (self.dir / "private" / "labels.json").is_file():
            self.meta = json.loads((self.dir / "meta.json").read_text())
            return
        spec = self.dataset()
        files = self.task.code(with_prepare=True)
        files["config.json"] = json.dumps(
            {"dataset": spec.kind, "raw_dir": RAW_DATA_MOUNT, "train_fraction": self.config.train_fraction}
        ).encode()
        policy = self.prepare_policy
        if spec.host_path is not None:
            policy = policy.with_overrides(data_mounts=[{"source": str(spec.host_path), "target": RAW_DATA_MOUNT}])
        record = self.attempts.execute(
            JobSpec(
                key="prepare",
                kind="prepare",
                policy=policy,
                timeout_s=self.task.timeouts.prepare,
                command=harness("run", "--job", self.task.entrypoints.prepare, "--config", "config.json"),
                files=files,
                keep_outputs=True,
                required_outputs=PREPARED_OUTPUTS,
            )
        )
        if record.status != "ok":
            msg = f"data preparation failed ({record.reason}); see {self.store.attempt_dir(record.number)}"
            raise ControllerError(msg)
        source = self.store.attempt_dir(record.number) / "outputs" / "out"
        tmp = self.dir.with_name("data.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp, symlinks=True)
        shutil.rmtree(source / "private")  # the only copy of the labels is the host's data/private
        self.store.seal_private(tmp)
        tmp.replace(self.dir)
        self.meta = json.loads((self.dir / "meta.json").read_text())

    def labels(self) -> dict[str, Any]:
        """Validation and test labels: for the host's scorer only."""
        return json.loads((self.dir / "private" / "labels.json").read_text())  # type: ignore[no-any-return]

    def with_train_split(self, policy: Policy) -> Policy:
        """The policy plus the read-only mount of the train split (nothing else of data/)."""
        mount = {"source": str(self.dir / "public"), "target": PUBLIC_DATA_MOUNT}
        return policy.with_overrides(data_mounts=[*[m.model_dump() for m in policy.data_mounts], mount])

    def inputs(self, split: str) -> bytes:
        """Unlabelled inputs of the validation or test split."""
        return (self.dir / "eval" / f"{split}_inputs.npy").read_bytes()

    def shape(self) -> dict[str, Any]:
        """What the model needs to know of the data: input shape, classes, normalisation."""
        return {
            "num_classes": self.meta.get("num_classes", self.task.num_classes),
            "input_shape": self.meta.get("input_shape", list(self.task.input_shape)),
            "mean": self.meta.get("mean"),
            "std": self.meta.get("std"),
        }

    def record_environment(self, sandbox: Sandbox, policy: Policy, run_id: str) -> None:
        """environment.json: image digest, the image's pip freeze, host, GPUs, seeds."""
        if (self.store.root / "environment.json").is_file():
            return
        freeze = sandbox.run(
            Job(command=["python3", "-m", "pip", "freeze", "--all"], run_id=run_id, attempt="env"), policy
        )
        prepare = self.attempts.index.get("prepare")
        self.store.write(
            "environment.json",
            {
                "host": socket.gethostname(),
                "platform": platform.platform(),
                "backend": sandbox.name,
                "image": prepare.result.image if prepare else None,
                "image_id": prepare.result.image_id if prepare else None,
                "pip_freeze": freeze.stdout.splitlines() if freeze.ok else [],
                "gpus": [g.__dict__ for g in detect_gpus()],
                "seeds": self.config.seeds,
                "deterministic": "torch.use_deterministic_algorithms(True, warn_only=True) and fixed seeds",
            },
        )
