"""Hostile code: each case asserts its outcome and that the host is unharmed.

Every case runs against real Docker. Those the local backend also promises run against it
too, spawning each job and forking it from its preloaded fork server, and must come out the
same on both paths; a case whose guard (a network namespace, a memory cgroup) this host
cannot give the local backend is skipped for it and says why.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.backends.local import LocalSandbox
from sandbox.backends.local_isolation import cgroup_limits
from sandbox.base import Job
from sandbox.policy import Policy, load_policy
from sandbox.results import AttemptResult, Status


def _needs_memory_cgroup(sandbox: Any) -> None:
    if isinstance(sandbox, LocalSandbox) and not (
        Path("/sys/fs/cgroup/memory").is_dir() or Path("/sys/fs/cgroup/cgroup.controllers").exists()
    ):
        pytest.skip("no memory cgroup for the local backend on this host")


def run(sandbox: Any, code: str, policy: Policy | None = None, **job: Any) -> AttemptResult:
    result: AttemptResult = sandbox.run(Job(command=["python3", "-c", code], **job), policy or load_policy("default"))
    return result


def test_network_has_only_loopback_and_cannot_reach_the_host(sandbox: Any) -> None:
    if isinstance(sandbox, LocalSandbox) and not sandbox._netns:
        pytest.skip("unshare -n is not permitted on this host")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        for _ in range(50):
            try:
                accepted.append(server.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    code = (
        "import socket\n"
        "print(sorted(n for _, n in socket.if_nameindex()))\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')\n"
        "except OSError as e:\n    print('refused', type(e).__name__)\n"
    )
    result = run(sandbox, code)
    thread.join()
    server.close()
    assert result.status is Status.ok, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "['lo']"
    assert lines[1].startswith("refused")
    assert accepted == []


@pytest.mark.docker
def test_host_files_and_the_docker_socket_are_out_of_reach(docker_sandbox: Any, tmp_path: Path) -> None:
    marker = tmp_path / "host-secret.txt"
    marker.write_text("TOP SECRET")
    code = (
        "import os\n"
        f"print(os.path.exists({str(marker)!r}))\n"
        "print(os.path.exists('/var/run/docker.sock'), os.path.exists('/run/docker.sock'))\n"
        "try:\n    open('/etc/shadow').read(); print('shadow readable')\n"
        "except OSError as e:\n    print(type(e).__name__)\n"
    )
    result = run(docker_sandbox, code)
    assert result.stdout.split() == ["False", "False", "False", "PermissionError"]
    assert "TOP SECRET" not in result.stdout


@pytest.mark.docker
def test_fork_bomb_is_contained_and_the_engine_stays_healthy(docker_sandbox: Any, docker_client: Any) -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run(docker_sandbox, bomb, load_policy("default").with_overrides(timeout="5s", kill_grace="1s"))
    assert result.status in {Status.timeout, Status.killed, Status.error}
    assert docker_client.ping()
    after = run(docker_sandbox, "print('alive')")
    assert after.status is Status.ok and after.stdout == "alive\n"


FORK_COUNT = """
import os, time
forked = 0
for _ in range(100):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    forked += 1
print(forked)
"""


def test_the_pids_cap_bounds_how_many_processes_a_job_can_fork(sandbox: Any) -> None:
    if isinstance(sandbox, LocalSandbox) and not cgroup_limits()[1]:
        pytest.skip("no writable pids cgroup for the local backend on this host (it names the gap)")
    result = run(sandbox, FORK_COUNT, load_policy("default").with_overrides(pids=32, timeout="20s"))
    assert result.status is Status.ok, result.stderr[-2000:]
    assert 0 < int(result.stdout) < 32  # the sleeping children are reaped with the job


def test_memory_bomb_under_the_default_policy_is_oom(sandbox: Any) -> None:
    _needs_memory_cgroup(sandbox)
    bomb = "x = []\nwhile True:\n    x.append(bytearray(100 * 2**20))\n"
    result = run(sandbox, bomb)
    assert result.status is Status.oom, (result.status, result.reason)
    assert result.exit_code == 137
    assert result.usage.peak_memory_bytes is not None
    assert result.usage.peak_memory_bytes <= int(load_policy("default").memory) + 2**20


@pytest.mark.docker
@pytest.mark.parametrize("target", ["/tmp", "/workspace"])
def test_filling_a_writable_mount_is_bounded(docker_sandbox: Any, target: str) -> None:
    free_before = shutil.disk_usage("/var/lib/docker" if Path("/var/lib/docker").exists() else "/").free
    code = (
        "import errno\nwritten = 0\n"
        f"with open('{target}/fill.bin', 'wb') as fh:\n"
        "    try:\n"
        "        while True:\n            fh.write(b'x' * 2**20); fh.flush(); written += 1\n"
        "    except OSError as e:\n        print(errno.errorcode[e.errno], written)\n"
    )
    policy = load_policy("default").with_overrides(tmpfs_size="64MiB", workspace_size="96MiB")
    result = run(docker_sandbox, code, policy)
    code_name, mib = result.stdout.split()
    assert code_name == "ENOSPC"
    assert int(mib) <= (64 if target == "/tmp" else 96)
    free_after = shutil.disk_usage("/var/lib/docker" if Path("/var/lib/docker").exists() else "/").free
    assert free_before - free_after < 50 * 2**20


def test_cpu_spin_past_the_timeout_is_timeout_within_the_slack(sandbox: Any) -> None:
    policy = load_policy("default").with_overrides(timeout="3s", kill_grace="1s")
    result = run(sandbox, "while True: pass", policy)
    assert result.status is Status.timeout
    assert result.exit_code == 124
    assert result.duration_s < 3 + 1 + 10


def test_a_process_ignoring_sigterm_is_killed_after_the_grace(sandbox: Any) -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(0.1)\n"
    policy = load_policy("default").with_overrides(timeout="2s", kill_grace="2s")
    result = run(sandbox, code, policy)
    assert result.status is Status.timeout
    assert result.exit_code == 137
    assert 4 <= result.duration_s < 2 + 2 + 10


@pytest.mark.docker
def test_a_daemonized_grandchild_does_not_outlive_the_attempt(docker_sandbox: Any, docker_client: Any) -> None:
    code = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        while True:\n"
        "            open('/workspace/heartbeat', 'a').write('x'); time.sleep(0.05)\n"
        "    os._exit(0)\n"
        "print('parent done')\n"
    )
    result = run(docker_sandbox, code, load_policy("default").with_overrides(timeout="20s"))
    assert result.status is Status.ok and "parent done" in result.stdout
    assert result.duration_s < 15, "the attempt waited on the grandchild"
    remaining = docker_client.containers.list(all=True, filters={"label": "sandlab.run=adhoc"}, ignore_removed=True)
    assert remaining == []


def test_stdout_flood_is_truncated_and_host_memory_stays_bounded(sandbox: Any) -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = "import sys\nchunk = 'y' * (1 << 20)\nfor _ in range(300):\n    sys.stdout.write(chunk)\n"
    policy = load_policy("default").with_overrides(output_cap="1MiB")
    result = run(sandbox, code, policy)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.status is Status.ok and result.truncated
    assert result.stdout_bytes == 300 * (1 << 20)
    assert len(result.stdout) < 2 * (1 << 20)
    assert (rss_after - rss_before) * 1024 < 100 * 2**20


@pytest.mark.docker
def test_privilege_escalation_paths_are_closed(docker_sandbox: Any) -> None:
    code = r"""
import os, subprocess
def attempt(name, fn):
    try:
        fn(); print(name, 'ALLOWED')
    except Exception as e:
        print(name, 'denied', type(e).__name__)
attempt('setuid', lambda: os.setuid(0))
attempt('image-write', lambda: open('/usr/lib/python3/evil.py', 'w').write('x'))
attempt('etc-write', lambda: open('/etc/passwd', 'a').write('x'))
attempt('sysrq', lambda: open('/proc/sysrq-trigger', 'w').write('h'))
r = subprocess.run(['mount', '-t', 'tmpfs', 'none', '/mnt'], capture_output=True)
print('mount', 'ALLOWED' if r.returncode == 0 else 'denied')
caps = [l for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapBnd', 'NoNewPrivs'))]
print(' '.join(c.split()[1] for c in caps))
print('uid', os.getuid())
"""
    result = run(docker_sandbox, code)
    assert result.status is Status.ok, result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if "ALLOWED" in line], lines
    cap_bnd, cap_eff, no_new_privs = lines[5].split()
    assert int(cap_eff, 16) == 0 and int(cap_bnd, 16) == 0 and no_new_privs == "1"
    assert lines[6] == "uid 1000"


def test_a_symlink_planted_in_the_outputs_is_not_followed(sandbox: Any, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    code = (
        "import os\n"
        f"os.symlink({str(victim)!r}, 'victim.txt')\n"
        "os.symlink('/', 'root')\n"
        "open('report.txt', 'w').write('fine')\n"
    )
    dest = tmp_path / "out"
    result = run(sandbox, code, outputs_dir=dest)
    assert result.status is Status.ok
    assert (dest / "report.txt").read_text() == "fine"
    assert not (dest / "victim.txt").exists() and not (dest / "root").exists()
    assert victim.read_text() == "untouched"


_DAEMON = """
import os, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    pid = os.fork()
    if pid == 0:
        while True:
            time.sleep(0.05)
    os.write(w, str(pid).encode())
    os._exit(0)
os.close(w)
print(os.read(r, 32).decode())
"""


@pytest.fixture(params=["local", "local-fork"])
def local_sandbox(request: pytest.FixtureRequest) -> Iterator[LocalSandbox]:
    if request.param == "local-fork":
        yield request.getfixturevalue("forking_sandbox")
    else:
        yield LocalSandbox(allow_weaker=True, python=sys.executable)


def test_a_daemonized_grandchild_does_not_outlive_a_local_attempt(local_sandbox: LocalSandbox) -> None:
    sandbox = local_sandbox
    _needs_memory_cgroup(sandbox)  # a daemon leaves the job's process group, not its cgroup
    result = run(sandbox, _DAEMON, load_policy("default").with_overrides(timeout="20s"))
    assert result.status is Status.ok, result.stderr
    daemon = int(result.stdout.strip())
    assert result.duration_s < 15, "the attempt waited on the grandchild"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(daemon):
        time.sleep(0.05)
    assert not _alive(daemon), f"the daemonized grandchild {daemon} outlived its attempt"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and os.path.exists(f"/proc/{pid}")
