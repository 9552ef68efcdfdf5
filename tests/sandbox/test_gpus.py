"""GPU discovery and sampling through one nvidia-smi query, against a fake nvidia-smi."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sandbox.gpus import GpuSampler, detect_gpus, nvidia_smi_query


def _fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + body)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    return tmp_path / "args"


def test_gpus_are_detected_from_the_query(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = _fake_smi(tmp_path, monkeypatch, f'echo "$@" > {tmp_path}/args\necho "0, NVIDIA H100, 81559, 550.54"\n')
    gpus = detect_gpus()
    assert [(g.index, g.name, g.memory_total_mib, g.driver) for g in gpus] == [(0, "NVIDIA H100", 81559, "550.54")]
    assert "--query-gpu=index,name,memory.total,driver_version" in args.read_text()


def test_a_failing_nvidia_smi_is_logged_with_its_reason_and_means_no_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_smi(tmp_path, monkeypatch, 'echo "NVIDIA-SMI has failed: driver not loaded" >&2\nexit 9\n')
    with capture_logs() as logs:
        assert detect_gpus() == []
    assert logs[0]["event"] == "gpus.nvidia_smi_failed" and logs[0]["log_level"] == "warning"
    assert "exit 9" in logs[0]["reason"] and "driver not loaded" in logs[0]["reason"]


def test_sampling_asks_only_for_the_granted_gpus_and_keeps_the_peak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _fake_smi(tmp_path, monkeypatch, f'echo "$@" > {tmp_path}/args\necho "100, 50"\necho "[N/A], [N/A]"\n')
    with GpuSampler([2]) as sampler:
        deadline = time.monotonic() + 5
        while sampler.peak_memory_bytes is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sampler.peak_memory_bytes == 100 * 1024**2 and sampler.mean_utilization_pct == 50.0
    assert "--id=2" in args.read_text() and "--query-gpu=memory.used,utilization.gpu" in args.read_text()


def test_sampling_stops_and_says_why_when_nvidia_smi_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(tmp_path, monkeypatch, "exit 3\n")
    with capture_logs() as logs:
        with GpuSampler([0]) as sampler:
            assert sampler._thread is not None
            sampler._thread.join(timeout=10)
    assert [e["event"] for e in logs] == ["gpus.nvidia_smi_failed", "gpus.sampling_stopped"]
    assert sampler.peak_memory_bytes is None


def test_no_nvidia_smi_means_no_gpu_and_no_noise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with capture_logs() as logs:
        assert nvidia_smi_query(("index",)) is None and detect_gpus() == []
    assert logs == []
