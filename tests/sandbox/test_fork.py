"""The local backend's fork server: fresh, single-use children, out of the server's reach.

The conformance and hostile suites already run against the fork server (`local-fork`);
these cases are about what only it could get wrong: state leaking from one job to the next,
its control channel reaching a job, jobs at once, and a server that dies under a job.
The preload list needs no torch, so all of this runs on CPU hosts and in CI.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from sandbox.backends.local import LocalSandbox
from sandbox.backends.local_fork import ForkServerError
from sandbox.base import Job
from sandbox.policy import Policy, load_policy
from sandbox.results import AttemptResult, Status
from tests.sandbox.conftest import FORK_PRELOAD

PY = "python3"
PRELOAD = FORK_PRELOAD


@pytest.fixture(scope="module")
def forking(forking_sandbox: LocalSandbox) -> LocalSandbox:
    """The fork-server backend the sandbox suites share (tests/sandbox/conftest.py)."""
    return forking_sandbox


def policy(**changes: object) -> Policy:
    return load_policy("default").with_overrides(**changes)


def run(sandbox: LocalSandbox, code: str, **changes: object) -> AttemptResult:
    return sandbox.run(Job(command=[PY, "-c", code]), policy(**changes))


def server_pid(sandbox: LocalSandbox) -> int:
    assert sandbox.fork_server is not None
    sandbox.fork_server.start()
    pid = sandbox.fork_server.pid
    assert pid is not None
    return pid


def wait_for_child(parent: int, timeout: float = 10.0) -> int:
    """The first child of `parent` (a job the server forked), once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise AssertionError(f"{parent} forked no job within {timeout}s")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_each_job_is_a_fresh_fork_with_nothing_from_the_job_before(forking: LocalSandbox) -> None:
    parent = server_pid(forking)
    mark = "import json, os, sys\nprint(os.getppid(), 'json' in sys.modules, hasattr(json, '_sandlab_mark'))\n"
    first = run(forking, mark + "json._sandlab_mark = 1\nsys.modules['sandlab_leftover'] = json\n")
    second = run(forking, mark + "print('sandlab_leftover' in sys.modules)\n")
    assert first.status is Status.ok and second.status is Status.ok, (first.stderr, second.stderr)
    # forked from the server, with its preloaded json, and not a trace of the first job
    assert first.stdout.split() == [str(parent), "True", "False"]
    assert second.stdout.split() == [str(parent), "True", "False", "False"]


def test_a_job_finds_no_earlier_job_s_request_in_the_memory_it_inherits(forking: LocalSandbox) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    # Padded, so that the second job's shorter request could not overwrite the token by chance.
    env = {"SANDLAB_PADDING": "x" * 20_000, "SANDLAB_PROBE": token}
    first = forking.run(Job(command=[PY, "-c", "print('first')"], env=env), policy())
    # The server is a module-level object of the forked interpreter: the job can look at it.
    search = (
        "import gc\n"
        f"needle = bytes.fromhex({token.encode().hex()!r})\n"
        "servers = [o for o in gc.get_objects() if type(o).__name__ == 'ForkServer' and hasattr(o, 'buffer')]\n"
        "print(len(servers), any(needle in bytes(s.buffer) for s in servers))\n"
    )
    second = run(forking, search)
    assert first.status is Status.ok and second.status is Status.ok, second.stderr
    assert second.stdout.split() == ["1", "False"]


def test_a_job_holds_no_descriptor_of_the_server(forking: LocalSandbox) -> None:
    code = (
        "import os\n"
        "fds = {}\n"
        "for fd in os.listdir('/proc/self/fd'):\n"
        "    try:\n"
        "        fds[int(fd)] = os.readlink(f'/proc/self/fd/{fd}')\n"
        "    except FileNotFoundError:\n"
        "        pass  # the descriptor listdir itself had open\n"
        "print(sorted(fds))\n"
        "print(sum(target.startswith(('socket:', 'anon_inode:', 'pipe:')) for fd, target in fds.items() if fd > 2))\n"
    )
    result = run(forking, code)
    assert result.status is Status.ok, result.stderr
    assert result.stdout.split("\n")[:2] == ["[0, 1, 2]", "0"]


def test_two_jobs_run_at_once_and_each_gets_its_own_output(forking: LocalSandbox) -> None:
    results: dict[str, AttemptResult] = {}

    def one(name: str) -> None:
        results[name] = run(forking, f"import time\ntime.sleep(1.5)\nprint({name!r})\n")

    threads = [threading.Thread(target=one, args=(name,)) for name in ("first", "second")]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - start < 2.8, "the server ran the jobs one after the other"
    assert {name: (r.status, r.stdout) for name, r in results.items()} == {
        "first": (Status.ok, "first\n"),
        "second": (Status.ok, "second\n"),
    }


def test_a_server_that_dies_under_a_job_is_an_infra_error_and_the_next_job_gets_a_new_one(tmp_path: Path) -> None:
    sandbox = LocalSandbox(allow_weaker=True, python=sys.executable, fork_server=True, preload=PRELOAD)
    started = tmp_path / "started"
    try:
        parent = server_pid(sandbox)
        outcome: list[AttemptResult] = []
        code = f"import os, time\nprint(os.getpid(), flush=True)\nopen({str(started)!r}, 'w')\ntime.sleep(30)\n"
        worker = threading.Thread(target=lambda: outcome.append(run(sandbox, code)))
        worker.start()
        job = wait_for_child(parent)
        deadline = time.monotonic() + 10
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(parent, signal.SIGKILL)
        worker.join(timeout=20)
        assert not worker.is_alive(), "the job waited on a dead server"
        lost = outcome[0]
        assert lost.status is Status.infra_error and lost.exit_code is None
        assert "fork server" in (lost.reason or "") and "restarted" in (lost.reason or "")
        assert lost.stdout.strip() == str(job)
        deadline = time.monotonic() + 5
        while alive(job) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(job), "the lost job outlived its server"
        after = run(sandbox, "import os\nprint('alive', os.getppid())\n")
        assert after.status is Status.ok, after.stderr
        word, new_parent = after.stdout.split()
        assert word == "alive" and int(new_parent) not in (parent, os.getpid())
    finally:
        sandbox.close()


def test_kill_all_kills_forked_jobs(forking: LocalSandbox) -> None:
    parent = server_pid(forking)
    outcome: list[AttemptResult] = []
    worker = threading.Thread(target=lambda: outcome.append(run(forking, "import time\ntime.sleep(30)\n")))
    worker.start()
    wait_for_child(parent)
    deadline = time.monotonic() + 5
    while forking.kill_all() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # the server has forked it; the backend learns its pid a moment later
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert outcome[0].status is Status.killed and outcome[0].exit_code == 137


def test_closing_the_backend_stops_its_server_and_the_jobs_with_it() -> None:
    sandbox = LocalSandbox(allow_weaker=True, python=sys.executable, fork_server=True, preload=PRELOAD)
    parent = server_pid(sandbox)
    outcome: list[AttemptResult] = []
    worker = threading.Thread(target=lambda: outcome.append(run(sandbox, "import time\ntime.sleep(30)\n")))
    worker.start()
    job = wait_for_child(parent)
    sandbox.close()
    worker.join(timeout=10)
    assert not alive(parent) and not alive(job)
    assert outcome[0].status in {Status.killed, Status.infra_error}
    with pytest.raises(ForkServerError, match="closed"):
        assert sandbox.fork_server is not None
        sandbox.fork_server.start()


def test_what_is_not_plain_python_for_this_interpreter_is_exec_d(forking: LocalSandbox) -> None:
    probe = "import sys\nprint('json' in sys.modules)\n"
    in_process = run(forking, probe)
    own_hash_seed = forking.run(Job(command=[PY, "-c", probe], env={"PYTHONHASHSEED": "0"}), policy())
    shell = forking.run(Job(command=["sh", "-c", "echo from sh; exit 3"]), policy())
    missing = forking.run(Job(command=["no-such-program-sandlab"]), policy())
    assert in_process.stdout == "True\n"  # a fork of the server that preloaded json
    assert own_hash_seed.stdout == "False\n"  # PYTHONHASHSEED is read at startup: a fresh interpreter
    assert (shell.status, shell.exit_code, shell.stdout) == (Status.error, 3, "from sh\n")
    assert missing.exit_code == 127 and "no-such-program-sandlab" in missing.stderr


def test_a_job_that_exits_with_threads_and_atexit_handlers_finishes_them(forking: LocalSandbox) -> None:
    code = (
        "import atexit, threading, time\n"
        "atexit.register(lambda: print('atexit ran', flush=True))\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done', flush=True))).start()\n"
    )
    result = run(forking, code)
    assert result.status is Status.ok and result.stdout.split("\n")[:2] == ["thread done", "atexit ran"]


def test_forked_siblings_do_not_share_numpy_random_state() -> None:
    pytest.importorskip("numpy")
    sandbox = LocalSandbox(allow_weaker=True, python=sys.executable, fork_server=True, preload=("numpy",))
    try:
        draws = [run(sandbox, "import numpy\nprint(numpy.random.rand())\n").stdout for _ in range(2)]
    finally:
        sandbox.close()
    assert draws[0] and draws[0] != draws[1]


def _userns_allowed() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    return subprocess.run([unshare, "-rn", "true"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _userns_allowed(), reason="user namespaces are not permitted on this host")
def test_the_userns_network_mode_is_done_in_the_forked_child() -> None:
    sandbox = LocalSandbox(allow_weaker=True, python=sys.executable, fork_server=True, preload=PRELOAD)
    sandbox._netns_mode = "userns"  # what a host without root gets; here it is forced
    try:
        code = "import os, socket, sys\nprint(sorted(n for _, n in socket.if_nameindex()), 'json' in sys.modules)\n"
        result = run(sandbox, code)
    finally:
        sandbox.close()
    assert result.status is Status.ok, result.stderr
    assert result.stdout.strip() == "['lo'] True"


def test_a_job_the_server_cannot_confine_never_runs_and_is_an_infra_error(tmp_path: Path) -> None:
    sandbox = LocalSandbox(allow_weaker=True, python=sys.executable, fork_server=True, preload=PRELOAD)
    assert sandbox.fork_server is not None
    marker = tmp_path / "ran"
    try:
        stdio = (0, 1, 2)
        with pytest.raises(ForkServerError, match="could not start the job: FileNotFoundError"):
            sandbox.fork_server.submit(
                [sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
                tmp_path,
                {},
                {
                    "cgroup_procs": [str(tmp_path / "no-such-cgroup" / "cgroup.procs")],
                    "network": None,
                    "rlimits": [],
                    "user": None,
                    "nproc": None,
                },
                stdio,
            )
        assert not marker.exists()
        after = run(sandbox, "print('still serving')")
        assert after.status is Status.ok and after.stdout == "still serving\n"
    finally:
        sandbox.close()


def test_without_a_cgroup_the_address_space_limit_still_holds_in_a_forked_job(
    forking: LocalSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sandbox.backends.local_isolation as isolation

    monkeypatch.setattr(isolation, "CGROUP_ROOTS", (tmp_path / "no-cgroups",))  # RLIMIT_AS is the cap
    grab = "x = bytearray({size} * 2**20)\nprint('got it')\n"
    within = run(forking, grab.format(size=64), memory="256MiB")
    beyond = run(forking, grab.format(size=1024), memory="256MiB")
    assert within.status is Status.ok and within.stdout == "got it\n", within.stderr
    assert beyond.status is Status.error and "MemoryError" in beyond.stderr
