"""`controller rerun`: the recorded configuration, rebuilt exactly and checked against its CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.controller.fakes import META, FakeSandbox, make_loop


def test_rerun_reproduces_the_best_configuration_inside_its_ci(tmp_path: Path) -> None:
    from controller.rerun import prepare_rerun_store, rerun_best

    sandbox = FakeSandbox()
    first = make_loop(tmp_path, sandbox)
    first.run()
    store, best, config = prepare_rerun_store(tmp_path / "runs", first.store)
    assert store.root.name == "r1-rerun-1" and (store.root / "data" / "private" / "labels.json").is_file()
    replay = FakeSandbox()
    again = make_loop(tmp_path, replay, run_id="r1-rerun-1")
    verdict = rerun_best(again, best, config)
    assert verdict["reproduced"] is True
    assert verdict["rerun"]["mean"] == pytest.approx(best["value"])
    # no new prepare: the copied splits and their meta (shape, normalisation) are what it trains on
    assert [kind for kind, _, _ in replay.calls].count("prepare") == 0
    for kind, job, _ in replay.calls:
        if kind in {"train", "predict"}:
            shown = json.loads(job.files["config.json"])
            assert {k: shown[k] for k in META if k != "n_train"} == {k: v for k, v in META.items() if k != "n_train"}
    private = store.data_dir / "private"
    assert private.stat().st_mode & 0o777 == 0o700  # sealed again in the copy
    tampered = {**config, "hyper": {**config["hyper"], "lr": 1.0}}
    with pytest.raises(ValueError, match="arm key"):
        rerun_best(make_loop(tmp_path, FakeSandbox(), run_id="r1-rerun-1"), best, tampered)
