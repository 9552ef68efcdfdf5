"""The run folder: atomic, durable writes; one place for keys and paths; sealed labels."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.errors import BadInputError
from controller.registry import RunConfig
from controller.store import RunStore, eval_key, guard_key, heldout_key, train_key, write_json_atomic, write_text_atomic


def test_atomic_writes_fsync_the_file_and_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    write_text_atomic(tmp_path / "a.txt", "hello")
    write_json_atomic(tmp_path / "b.json", {"x": 1})
    assert (tmp_path / "a.txt").read_text() == "hello" and (tmp_path / "b.json").read_text().strip().startswith("{")
    assert len(synced) == 4  # each write: the file, then the folder holding the new name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_a_crash_before_the_rename_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    write_json_atomic(target, {"v": 1})

    def crash(src: object, dst: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_json_atomic(target, {"v": 2})
    assert '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # the temp file was removed


def test_keys_name_the_work_deterministically() -> None:
    assert train_key("abc", 2) == "train/abc/s2"
    assert eval_key("abc", 2) == "eval/abc/s2"
    assert heldout_key("abc", 2) == "test/abc/s2"
    assert guard_key("head", "d1") == "guard/head/d1"


def test_sealing_makes_the_private_labels_readable_by_this_user_only(tmp_path: Path) -> None:
    store, _ = RunStore.create(tmp_path, RunConfig(budget_s=60), "r")
    private = store.data_dir / "private"
    private.mkdir(parents=True)
    (private / "labels.json").write_text("{}")
    store.seal_private(store.data_dir)
    assert private.stat().st_mode & 0o777 == 0o700
    assert (private / "labels.json").stat().st_mode & 0o777 == 0o600


def test_a_run_folder_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store, _ = RunStore.create(tmp_path / "runs", RunConfig(budget_s=60), "r1")
    finally:
        os.umask(old)
    assert store.root.stat().st_mode & 0o777 == 0o700  # another uid's job cannot read earlier weights
    assert (tmp_path / "runs").stat().st_mode & 0o777 == 0o755  # the runs folder itself stays listable


@pytest.mark.parametrize("run_id", ["../escape", "a b", "-x", "a/b", ""])
def test_a_run_id_that_is_not_one_safe_folder_name_is_refused(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(BadInputError, match="invalid run id"):
        RunStore.create(tmp_path / "runs", RunConfig(budget_s=60), run_id or "\n")
    assert not (tmp_path / "escape").exists()


def test_an_existing_run_id_is_refused_and_the_run_left_as_it_was(tmp_path: Path) -> None:
    store, _ = RunStore.create(tmp_path / "runs", RunConfig(budget_s=60), "r1")
    before = (store.root / "run.json").read_bytes()
    with pytest.raises(BadInputError, match=r"already exists.*controller resume r1"):
        RunStore.create(tmp_path / "runs", RunConfig(budget_s=120), "r1")
    assert (store.root / "run.json").read_bytes() == before


def test_a_runs_dir_that_cannot_be_made_is_one_error_naming_the_flag(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(BadInputError, match="--runs-dir"):
        RunStore.create(tmp_path / "file" / "runs", RunConfig(budget_s=60), "r1")


def test_runs_are_listed_under_their_folders_names_the_id_commands_take(tmp_path: Path) -> None:
    RunStore.create(tmp_path, RunConfig(budget_s=60, seeds=[0, 1]), "original")
    (tmp_path / "original").rename(tmp_path / "copy")
    (listed,) = RunStore.list_runs(tmp_path)
    assert listed.run_id == "copy"
    assert RunStore.open(tmp_path, listed.run_id).load_state().run_id == "original"  # the file is left as it was
