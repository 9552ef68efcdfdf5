"""One suite, every backend: they must behave alike (inspect_ai's self_check idea).

The local backend runs with allow_weaker (it cannot give a read-only root), both spawning
each job and forking it from its preloaded fork server; everything asserted here is what
every backend promises.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from sandbox.backends.local import LocalSandbox
from sandbox.base import Job, Sandbox
from sandbox.events import ExceptionEvent, MetricEvent, StageEvent
from sandbox.policy import Policy, load_policy
from sandbox.results import Status

PY = "python3"




def small(**changes: Any) -> Policy:
    return load_policy("default").with_overrides(**changes)


def test_success_returns_ok_with_stdout(sandbox: Sandbox) -> None:
    result = sandbox.run(Job(command=[PY, "-c", "print('hello')"]), small())
    assert result.status is Status.ok and result.exit_code == 0
    assert result.stdout == "hello\n"
    assert result.duration_s > 0 and result.started_at is not None


def test_exception_is_error_with_traceback(sandbox: Sandbox) -> None:
    result = sandbox.run(Job(command=[PY, "-c", "raise ValueError('x')"]), small())
    assert result.status is Status.error and result.exit_code == 1
    assert "ValueError: x" in result.stderr


def test_guard_reports_the_failing_stage_and_generated_frames(sandbox: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "head.py").write_text(
        "def make_head(n):\n    return helper(n)\n\ndef helper(n):\n    return n['x']\n"
    )
    (tmp_path / "smoke.py").write_text("def check(entry):\n    return entry(3)\n")
    cmd = [
        PY,
        "-m",
        "sandbox.harness",
        "guard",
        "--module",
        "gen/head.py",
        "--entry",
        "make_head",
        "--smoke",
        "smoke:check",
    ]
    result = sandbox.run(Job(command=cmd, workspace=tmp_path), small())
    assert result.status is Status.error
    stages = [(e.stage, e.state) for e in result.events if isinstance(e, StageEvent)]
    assert ("compile", "passed") in stages and ("import", "passed") in stages and ("smoke", "failed") in stages
    exc = next(e for e in result.events if isinstance(e, ExceptionEvent))
    assert exc.type == "TypeError" and exc.stage == "smoke"
    generated = [f for f in exc.frames if f.generated]
    assert [f.function for f in generated] == ["make_head", "helper"]
    assert generated[-1].line == 5 and "n['x']" in generated[-1].source


def _guard_with_tests(sandbox: Sandbox, root: Path, module: str, tests: str, observe: str) -> tuple[Any, Path]:
    """A guard of gen/aug.py with the agent's tests; the smoke check observes `observe`."""
    (root / "gen").mkdir(parents=True)
    (root / "gen" / "aug.py").write_text(module)
    (root / "gen" / "test_aug.py").write_text(tests)
    (root / "smoke.py").write_text(f"def check(entry):\n    entry(1)\n    return {observe}\n")
    cmd = [PY, "-m", "sandbox.harness", "guard", "--module", "gen/aug.py", "--entry", "augment",
           "--smoke", "smoke:check", "--expect", '{"shape": [4, 1]}', "--tests", "gen/test_aug.py"]  # fmt: skip
    out = root / "outputs"
    return sandbox.run(Job(command=cmd, workspace=root, outputs_dir=out), small(timeout="60s")), out


def _stages(result: Any) -> list[tuple[str, str]]:
    return [(e.stage, e.state) for e in result.events if isinstance(e, StageEvent)]


FORGE = """import json, os, pathlib, pytest

pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/smoke.json").write_text(json.dumps({"shape": [4, 1]}))  # a forged observation
pathlib.Path("FORGED").write_text("the generated tests ran")
pytest.skip("skipping everything, the smoke check included", allow_module_level=True)
"""


def test_a_failing_generated_test_fails_the_guard_at_its_own_stage(sandbox: Sandbox, tmp_path: Path) -> None:
    tests = "from gen.aug import augment\n\n\ndef test_doubles():\n    assert augment(2) == 4, 'augment must double'\n"
    result, _ = _guard_with_tests(sandbox, tmp_path, "def augment(x):\n    return x\n", tests, '{"shape": [4, 1]}')
    assert result.status is Status.error
    assert ("smoke", "passed") in _stages(result) and ("tests", "failed") in _stages(result)
    exc = next(e for e in result.events if isinstance(e, ExceptionEvent))
    assert exc.stage == "tests" and exc.type == "GeneratedTestsFailedError"
    assert "test_doubles" in exc.message and "augment must double" in exc.message
    passing = tests.replace("== 4", "== 2")
    ok, _ = _guard_with_tests(sandbox, tmp_path / "fixed", "def augment(x):\n    return x\n", passing, '{"shape": [4, 1]}')
    assert ok.status is Status.ok and ("tests", "passed") in _stages(ok)


def test_generated_tests_cannot_skip_or_stand_in_for_the_smoke_check(sandbox: Sandbox, tmp_path: Path) -> None:
    # the smoke check ran and observed the wrong shape: the guard fails there, and the
    # tests that would forge the observation and skip everything never start
    result, out = _guard_with_tests(sandbox, tmp_path, "def augment(x):\n    return x\n", FORGE, '{"shape": [4, 2]}')
    assert result.status is Status.error
    assert ("smoke", "failed") in _stages(result) and not any(stage == "tests" for stage, _ in _stages(result))
    exc = next(e for e in result.events if isinstance(e, ExceptionEvent))
    assert exc.type == "SmokeMismatchError" and "[4, 2]" in exc.message
    assert not (out / "FORGED").exists()
    assert json.loads((out / "out" / "smoke.json").read_text()) == {"shape": [4, 2]}  # the genuine observation
    # a module that crashes the smoke check: the same, whatever its tests would do
    crash, _ = _guard_with_tests(sandbox, tmp_path / "crash", "def augment(x):\n    raise RuntimeError('boom')\n", FORGE, '{"shape": [4, 1]}')
    assert crash.status is Status.error and ("smoke", "failed") in _stages(crash)
    assert not any(stage == "tests" for stage, _ in _stages(crash))


def test_syntax_error_fails_the_compile_stage(sandbox: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "aug.py").write_text("def augment(x)\n    return x\n")
    cmd = [PY, "-m", "sandbox.harness", "guard", "--module", "gen/aug.py", "--entry", "augment"]
    result = sandbox.run(Job(command=cmd, workspace=tmp_path), small())
    failed = [e.stage for e in result.events if isinstance(e, StageEvent) and e.state == "failed"]
    assert result.status is Status.error and failed == ["compile"]
    exc = next(e for e in result.events if isinstance(e, ExceptionEvent))
    assert exc.type == "SyntaxError" and exc.frames[-1].generated and exc.frames[-1].line == 1


def test_run_reports_metrics_as_events(sandbox: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(
        "def train(config, reporter):\n"
        "    for step in range(config['steps']):\n"
        "        reporter.metric('loss', 1.0 / (step + 1), step)\n"
    )
    (tmp_path / "config.json").write_text('{"steps": 3}')
    cmd = [PY, "-m", "sandbox.harness", "run", "--job", "job:train", "--config", "config.json"]
    result = sandbox.run(Job(command=cmd, workspace=tmp_path), small())
    assert result.status is Status.ok, result.stderr
    metrics = [e for e in result.events if isinstance(e, MetricEvent)]
    assert [(m.step, m.value) for m in metrics] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]


def test_timeout_is_reported_within_the_slack(sandbox: Sandbox) -> None:
    result = sandbox.run(Job(command=[PY, "-c", "while True: pass"]), small(timeout="2s", kill_grace="1s"))
    assert result.status is Status.timeout
    assert result.duration_s < 2 + 1 + 8


def test_memory_bomb_is_reported_as_oom(sandbox: Sandbox) -> None:
    if (
        isinstance(sandbox, LocalSandbox)
        and not Path("/sys/fs/cgroup/memory").is_dir()
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    ):
        pytest.skip("no writable memory cgroup for the local backend")
    bomb = "x = []\nwhile True:\n    x.append(bytearray(50 * 2**20))\n"
    result = sandbox.run(Job(command=[PY, "-c", bomb]), small(memory="256MiB", timeout="60s"))
    assert result.status is Status.oom, (result.status, result.reason, result.stderr[-300:])
    assert result.usage.peak_memory_bytes is not None and result.usage.peak_memory_bytes <= 300 * 2**20


def test_output_flood_is_truncated_head_and_tail(sandbox: Sandbox) -> None:
    flood = "import sys\nsys.stdout.write('START\\n')\nfor _ in range(200): sys.stdout.write('x' * 99999 + '\\n')\nsys.stdout.write('END\\n')"
    result = sandbox.run(Job(command=[PY, "-c", flood]), small(output_cap="64KiB"))
    assert result.status is Status.ok and result.truncated
    assert result.stdout.startswith("START") and result.stdout.rstrip().endswith("END")
    assert len(result.stdout) < 70 * 1024 and result.stdout_bytes > 19_000_000


def test_outputs_are_copied_back_without_following_links(sandbox: Sandbox, tmp_path: Path) -> None:
    script = (
        "import os\nos.makedirs('out', exist_ok=True)\nopen('out/model.txt','w').write('weights')\n"
        "os.symlink('/etc/shadow', 'out/shadow')\nos.symlink('/etc', 'out/etc')\n"
    )
    dest = tmp_path / "outputs"
    result = sandbox.run(Job(command=[PY, "-c", script], outputs_dir=dest), small())
    assert result.status is Status.ok, result.stderr
    assert (dest / "out" / "model.txt").read_text() == "weights"
    assert not (dest / "out" / "shadow").exists() and not (dest / "out" / "etc").exists()
    assert any("shadow" in s for s in result.outputs_skipped)


def test_workspace_files_are_staged(sandbox: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("42")
    result = sandbox.run(
        Job(
            command=[PY, "-c", "print(open('data.txt').read()); print(open('extra.txt').read())"],
            workspace=tmp_path,
            files={"extra.txt": b"bonus"},
        ),
        small(),
    )
    assert result.stdout.split() == ["42", "bonus"]


def test_network_is_loopback_only(sandbox: Sandbox) -> None:
    if isinstance(sandbox, LocalSandbox) and not sandbox._netns:
        pytest.skip("unshare -n is not permitted on this host")
    result = sandbox.run(
        Job(command=[PY, "-c", "import socket; print(sorted(n for _, n in socket.if_nameindex()))"]), small()
    )
    assert result.stdout.strip() == "['lo']"


def test_local_backend_refuses_what_it_cannot_enforce_unless_allowed() -> None:
    from sandbox.errors import WeakerIsolationError

    strict = LocalSandbox(allow_weaker=False, python=sys.executable)
    with pytest.raises(WeakerIsolationError, match="read_only_rootfs") as info:
        strict.run(Job(command=[PY, "-c", "print(1)"]), small())
    assert "--allow-weaker" in str(info.value)
    permissive_policy = small(read_only_rootfs=False)
    gaps = strict.unenforced(permissive_policy)
    assert all("read_only_rootfs" not in gap for gap in gaps)


_READ_MOUNT = """
import os
path = os.environ.get("SANDLAB_MOUNT_PREFIX", "") + "/data/probe/answer.txt"
print(open(path).read())
for target in (path, os.path.dirname(path) + "/new.txt"):
    try:
        with open(target, "w") as fh:
            fh.write("tampered")
        print("WROTE")
    except OSError as exc:
        print("refused", type(exc).__name__)
"""


def test_a_data_mount_is_readable_at_its_target_and_read_only(sandbox: Sandbox, tmp_path: Path) -> None:
    data = tmp_path / "probe"
    data.mkdir()
    (data / "answer.txt").write_text("42")
    policy = small(data_mounts=[{"source": str(data), "target": "/data/probe"}])
    result = sandbox.run(Job(command=[PY, "-c", _READ_MOUNT]), policy)
    assert result.status is Status.ok, (result.reason, result.stderr)
    lines = result.stdout.split("\n")
    assert lines[0] == "42"
    if isinstance(sandbox, LocalSandbox) and not sandbox.seals_host_files:
        # The job runs as the copies' owner (or root): it may write them, and the backend
        # must say so rather than pretend. Either way the host's dataset is untouched.
        assert any("not read-only to the job" in gap for gap in sandbox.unenforced(policy))
    else:
        assert lines[1].startswith("refused") and lines[2].startswith("refused"), result.stdout
    assert (data / "answer.txt").read_text() == "42" and sorted(p.name for p in data.iterdir()) == ["answer.txt"]


_EVENT_FLOOD = """
import json, os
frames = [{"file": "gen/m.py", "line": n, "function": "f" * 100, "source": "x" * 240, "generated": True}
          for n in range(115)]
line = json.dumps({"kind": "exception", "type": "E", "message": "m" * 8000, "frames": frames}) + "\\n"
os.makedirs(".sandlab", exist_ok=True)
with open(".sandlab/events.jsonl", "w") as fh:
    for _ in range(300):
        fh.write(line)
print(len(line))
"""


def test_a_flood_of_valid_events_is_held_to_the_output_cap(sandbox: Sandbox) -> None:
    cap = 256 * 1024
    result = sandbox.run(Job(command=[PY, "-c", _EVENT_FLOOD]), small(output_cap=cap))
    assert result.status is Status.ok, result.stderr
    line = int(result.stdout)
    assert len(result.events) == cap // line and all(isinstance(e, ExceptionEvent) for e in result.events)
    stats = result.event_stats
    assert stats.accepted_bytes <= cap and stats.over_budget >= 1 and stats.malformed == 0


def test_a_data_mount_whose_source_is_missing_is_an_infra_error(sandbox: Sandbox, tmp_path: Path) -> None:
    missing = tmp_path / "not-downloaded"
    policy = small(data_mounts=[{"source": str(missing), "target": "/data/probe"}])
    result = sandbox.run(Job(command=[PY, "-c", "print('ran')"]), policy)
    assert result.status is Status.infra_error and result.exit_code is None
    assert str(missing) in (result.reason or "") and "ran" not in result.stdout


_FAKE_TORCH = {
    # Only what a GPU OOM needs, so the case runs on CPU hosts; a preloaded real torch wins.
    "torch/__init__.py": b"class OutOfMemoryError(RuntimeError):\n    pass\n",
    "torch/cuda/__init__.py": b"from torch import OutOfMemoryError\n",
}
_CUDA_OOM = "CUDA out of memory. Tried to allocate 1024.00 GiB. GPU 0 has a total capacity of 79.19 GiB"


@pytest.mark.parametrize("through_harness", [False, True])
def test_a_gpu_out_of_memory_error_is_oom_with_its_reason(sandbox: Sandbox, through_harness: bool) -> None:
    raise_oom = f"import torch.cuda\nraise torch.cuda.OutOfMemoryError({_CUDA_OOM!r})\n"
    files = dict(_FAKE_TORCH)
    if through_harness:
        body = "".join(f"    {line}\n" for line in raise_oom.splitlines())
        files["job.py"] = f"def train(config, reporter):\n{body}".encode()
        command = [PY, "-m", "sandbox.harness", "run", "--job", "job:train"]
    else:
        command = [PY, "-c", raise_oom]
    result = sandbox.run(Job(command=command, files=files), small())
    assert result.status is Status.oom, (result.status, result.reason, result.stderr[-500:])
    assert result.exit_code == 1 and (result.reason or "").startswith("out of GPU memory: CUDA out of memory")
    if through_harness:
        exc = next(e for e in result.events if isinstance(e, ExceptionEvent))
        assert exc.type == "OutOfMemoryError" and exc.stage == "run"
