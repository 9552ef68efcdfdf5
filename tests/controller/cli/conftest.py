"""Fixtures for the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.controller.cli.support import build_run


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """A runs folder holding a finished run with one attempt of each kind, and an empty run."""
    build_run(tmp_path)
    return tmp_path
