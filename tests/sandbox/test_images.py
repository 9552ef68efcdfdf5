"""Image builds: input hashing (unit) and the built images (real Docker)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sandbox.backends.docker import CONTROLLER, RUNNER, ImageSpec, build_all, image_state


def test_inputs_hash_changes_with_any_input(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.x").write_text("FROM scratch\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    spec = ImageSpec("x:latest", "Dockerfile.x", ("pkg",), (("V", "1"),))
    first = spec.inputs_hash(tmp_path)
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"other junk")
    assert spec.inputs_hash(tmp_path) == first  # caches do not count
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert spec.inputs_hash(tmp_path) != first
    assert ImageSpec("x:latest", "Dockerfile.x", ("pkg",), (("V", "2"),)).inputs_hash(tmp_path) != spec.inputs_hash(
        tmp_path
    )


def test_runner_context_is_only_the_harness() -> None:
    names = [name for name, _ in RUNNER.context_files(Path(__file__).resolve().parents[2])]
    assert names[0] == "Dockerfile.runner" or "Dockerfile.runner" in names
    assert all(n == "Dockerfile.runner" or n.startswith("sandbox/harness/") for n in names)


@pytest.mark.docker
def test_a_second_build_rebuilds_nothing(docker_client: Any) -> None:
    outcome = build_all(docker_client, progress=lambda line: None)
    assert outcome == [(RUNNER.tag, "up to date"), (CONTROLLER.tag, "up to date")]
    assert image_state(docker_client, RUNNER).current


@pytest.mark.docker
def test_runner_imports_the_stack_as_non_root_without_network(docker_client: Any) -> None:
    code = "import os, torch, torchvision, sklearn, numpy; print(os.getuid(), torch.__version__.split('+')[0], torchvision.__version__.split('+')[0])"
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", RUNNER.tag, "python3", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()
    assert out == ["1000", "2.14.1", "0.29.1"]


@pytest.mark.docker
def test_controller_image_runs_doctor_against_the_host_engine(docker_client: Any) -> None:
    if shutil.which("docker") is None:
        pytest.fail("the docker CLI is missing")
    proc = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-e",
            "COLUMNS=200",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            CONTROLLER.tag,
            "controller",
            "doctor",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sandbox container" in proc.stdout
