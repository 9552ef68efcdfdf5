"""Real GPU jobs through the local backend's fork server (skipped only where there is no GPU).

The server has imported torch and never initialised CUDA; each forked job initialises it
itself, on the devices its policy names. These need torch in this interpreter and an
NVIDIA GPU; the CPU half of the same promises is in test_fork.py and test_classify.py.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.backends.local import LocalSandbox
from sandbox.base import Job
from sandbox.events import MetricEvent
from sandbox.gpus import detect_gpus, nvidia_smi_query
from sandbox.policy import Policy, load_policy
from sandbox.results import AttemptResult, Status

pytestmark = pytest.mark.gpu

GPUS = detect_gpus()


@pytest.fixture(scope="module")
def gpu_sandbox() -> Iterator[LocalSandbox]:
    if not GPUS:
        pytest.skip("no NVIDIA GPU on this host (nvidia-smi finds none)")
    pytest.importorskip("torch")
    sandbox = LocalSandbox(allow_weaker=True, python=sys.executable, fork_server=True, preload=("torch", "torchvision"))
    yield sandbox
    sandbox.close()


def on_gpus(ids: list[int], **changes: object) -> Policy:
    return load_policy("gpu").with_overrides(gpus=ids, timeout="300s", memory="16GiB", **changes)


def run(sandbox: LocalSandbox, code: str, policy: Policy) -> AttemptResult:
    return sandbox.run(Job(command=["python3", "-c", code]), policy)


TRAIN = """
import sys, time
import torch
assert not torch.cuda.is_initialized()  # the server never did; this child does it now
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).cuda()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(512, 64, device="cuda"), torch.randint(0, 10, (512,), device="cuda")
losses = []
for step in range(50):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    losses.append(loss.item())
print(torch.cuda.get_device_name(0), losses[0], losses[-1], next(model.parameters()).device)
"""


def test_a_training_job_runs_on_the_gpu_in_a_forked_child(gpu_sandbox: LocalSandbox) -> None:
    result = run(gpu_sandbox, TRAIN, on_gpus([GPUS[0].index]))
    assert result.status is Status.ok, (result.reason, result.stderr[-2000:])
    *name, first, last, device = result.stdout.split()
    assert " ".join(name) == GPUS[0].name and device == "cuda:0"
    assert float(last) < float(first) / 2, "the loss did not go down"
    assert result.usage.gpu_peak_memory_bytes is not None


def test_the_server_itself_never_opens_the_gpu(gpu_sandbox: LocalSandbox) -> None:
    assert run(gpu_sandbox, TRAIN, on_gpus([GPUS[0].index])).status is Status.ok
    assert gpu_sandbox.fork_server is not None and gpu_sandbox.fork_server.pid is not None
    fd_dir = Path(f"/proc/{gpu_sandbox.fork_server.pid}/fd")
    opened = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
    assert not [path for path in opened if path.startswith("/dev/nvidia")], opened


_HARNESS_JOB = """
import torch

def train(config, reporter):
    for step in range(3):
        x = torch.ones(1024, 1024, device="cuda")
        reporter.metric("norm", float((x @ x).norm()), step)
"""


def test_a_harness_run_reports_metrics_from_the_gpu(gpu_sandbox: LocalSandbox) -> None:
    command = ["python3", "-m", "sandbox.harness", "run", "--job", "job:train"]
    result = gpu_sandbox.run(Job(command=command, files={"job.py": _HARNESS_JOB.encode()}), on_gpus([GPUS[0].index]))
    assert result.status is Status.ok, result.stderr[-2000:]
    assert [m.step for m in result.events if isinstance(m, MetricEvent)] == [0, 1, 2]


def test_a_job_that_asks_for_more_than_the_card_holds_is_oom_with_the_gpu_reason(gpu_sandbox: LocalSandbox) -> None:
    too_much = (GPUS[0].memory_total_mib * 4) * 2**20
    code = f"import torch\ntorch.empty({too_much}, dtype=torch.uint8, device='cuda')\n"
    result = run(gpu_sandbox, code, on_gpus([GPUS[0].index]))
    assert result.status is Status.oom, (result.status, result.reason, result.stderr[-1000:])
    assert (result.reason or "").startswith("out of GPU memory: CUDA out of memory"), result.reason
    assert result.exit_code == 1


_WHICH_GPU = """
import os, time
import torch
torch.cuda.init()
props = torch.cuda.get_device_properties(0)
time.sleep(1)  # overlap with the other job
print(os.environ["CUDA_VISIBLE_DEVICES"], torch.cuda.device_count(), props.uuid)
"""


def _two_at_once(sandbox: LocalSandbox, ids: tuple[int, int]) -> list[AttemptResult]:
    results: dict[int, AttemptResult] = {}

    def one(slot: int) -> None:
        results[slot] = run(sandbox, _WHICH_GPU, on_gpus([ids[slot]]))

    threads = [threading.Thread(target=one, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [results[0], results[1]]


def test_two_jobs_at_once_each_see_only_their_own_gpu(gpu_sandbox: LocalSandbox) -> None:
    if len(GPUS) < 2:
        pytest.skip("needs two GPUs")
    uuids = {int(index): uuid for index, uuid in nvidia_smi_query(["index", "uuid"]) or []}
    first, second = _two_at_once(gpu_sandbox, (GPUS[0].index, GPUS[1].index))
    seen = []
    for result, gpu in ((first, GPUS[0]), (second, GPUS[1])):
        assert result.status is Status.ok, result.stderr[-2000:]
        visible, count, uuid = result.stdout.split()
        assert (visible, count) == (str(gpu.index), "1")
        assert uuids[gpu.index].removeprefix("GPU-") == uuid.removeprefix("GPU-")
        seen.append(uuid)
    assert seen[0] != seen[1]


def test_two_jobs_at_once_on_one_gpu_both_initialise_cuda(gpu_sandbox: LocalSandbox) -> None:
    first, second = _two_at_once(gpu_sandbox, (GPUS[0].index, GPUS[0].index))
    assert first.status is Status.ok and second.status is Status.ok, (first.stderr[-1000:], second.stderr[-1000:])
    assert first.stdout.split()[:2] == second.stdout.split()[:2] == [str(GPUS[0].index), "1"]
