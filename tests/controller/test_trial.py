"""One arm x seed's jobs: what they are given and what they must leave behind."""

from __future__ import annotations

import json
import math
from pathlib import Path

from controller.data import PUBLIC_DATA_MOUNT
from controller.matrix import baseline_arm
from controller.store import WEIGHTS
from tests.controller.fakes import META, TASK, FakeSandbox, make_loop


def test_the_job_config_carries_the_data_shape_and_normalisation(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, FakeSandbox(), seeds=2)
    loop.data.prepare()
    arm = baseline_arm(TASK).model_copy(update={"hyper": {**baseline_arm(TASK).hyper, "width": 64}})
    config = loop.trial.config_for(arm, seed=1)
    assert config["seed"] == 1 and config["width"] == 64 and config["lr"] == TASK.defaults["lr"]
    for key in ("input_shape", "num_classes", "mean", "std"):
        assert config[key] == META[key]
    assert loop.trial.holdout_size() == math.ceil(META["n_train"] * 0.1)


def test_training_is_given_the_mount_and_must_leave_weights_the_evaluation_can_take(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    loop = make_loop(tmp_path, sandbox, seeds=2)
    loop.data.prepare()
    record = loop.trial.train(baseline_arm(TASK), 0)
    assert record.status == "ok" and loop.store.weights_path(record.number).is_file()
    _, job, policy = sandbox.calls[-1]
    assert json.loads(job.files["config.json"])["data_dir"] == PUBLIC_DATA_MOUNT
    assert [m.target for m in policy.data_mounts] == [PUBLIC_DATA_MOUNT]
    room = int(loop.trial.evaluate_policy.workspace_size)
    assert 0 < loop.trial.max_weights_bytes() < room  # one seed's weights beside the inputs, as every evaluation
    assert WEIGHTS == "out/model.pt"


def test_the_test_split_is_predicted_by_one_job_per_seed_each_holding_one_seed_weights(tmp_path: Path) -> None:
    # A job holding every seed's weights could answer with their ensemble.
    sandbox = FakeSandbox()
    loop = make_loop(tmp_path, sandbox, seeds=2)
    loop.data.prepare()
    arm = baseline_arm(TASK)
    trains = {seed: loop.trial.train(arm, seed) for seed in (0, 1)}
    tests = loop.trial.test(arm, trains)
    jobs = [job for _, job, _ in sandbox.calls[-2:]]
    for seed, (job, test) in enumerate(zip(jobs, tests, strict=True)):
        assert job.files["inputs.npy"] == b"test-inputs"
        assert json.loads(job.files["config.json"])["models"] == [f"s{seed}"]
        assert [name for name in job.files if name.startswith("models/")] == [f"models/s{seed}.pt"]
        assert test.kind == "test" and test.score_split == "test" and test.seed == seed
        assert set(test.host_scores) == {f"s{seed}"}
