"""The LLM path end to end: real openai SDK -> fake OpenAI-compatible server, real Docker guard.

The scripted model plans one hypothesis, writes a head with a shape bug, and fixes it once
the traceback has been sent; the guard that catches the bug runs for real in a container.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.controller.fake_openai import FakeOpenAI, for_the_paper, json_reply

pytestmark = pytest.mark.docker

BUGGY_HEAD = """from torch import nn


def make_head(in_features, num_classes):
    return nn.Sequential(nn.Linear(in_features + 1, 64), nn.ReLU(), nn.Linear(64, num_classes))
"""
FIXED_HEAD = BUGGY_HEAD.replace("in_features + 1", "in_features")


def test_llm_agent_repairs_a_shape_bug_from_the_real_traceback(tmp_path: Path, docker_client: Any) -> None:
    plan = {
        "objective": "improve the head",
        "hypotheses": [
            {
                "id": "mlp-head",
                "statement": "A two-layer MLP head beats a linear head.",
                "modules": {"head": "MLP with 64 hidden units"},
                "hyper": {},
                "success_threshold": 0.005,
            }
        ],
    }
    with FakeOpenAI() as fake:
        fake.script(
            json_reply(plan),
            json_reply({"code": BUGGY_HEAD}),
            json_reply({"code": FIXED_HEAD}),
            json_reply({"summary": "The MLP head was compared with the baseline.", "next_idea": ""}),
            json_reply({"decision": "stop", "reason": "one idea was enough"}),
        )
        env = {**os.environ, "OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "test-key"}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "controller",
                "start",
                "--agent",
                "llm",
                "--model",
                "gpt-4o-mini",
                "--budget",
                "150s",
                "--seeds",
                "2",
                "--runs-dir",
                str(tmp_path),
                "--run-id",
                "llm",
            ],
            capture_output=True,
            text=True,
            timeout=400,
            env=env,
            check=False,
        )
        everything = list(fake.requests)
        unanswered = list(fake.unscripted)
        assert fake.pending == 0
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The paper's prose and review also ask the model at the end; this test scripts no reply
    # for them, so they fall back (template prose, review without the LLM part) and say so.
    requests = [r for r in everything if not for_the_paper(r)]
    assert len(requests) == 5 and all(for_the_paper(r) for r in unanswered)
    assert (tmp_path / "llm" / "paper" / "paper.md").is_file()
    repair_prompt = "\n".join(m["content"] for m in requests[2]["messages"])
    assert "mat1 and mat2 shapes cannot be multiplied" in repair_prompt
    assert "stage: smoke" in repair_prompt and "RuntimeError" in repair_prompt
    assert re.search(r"smoke\.py:\d+ in check_head", repair_prompt)  # a real frame from the container
    assert "in_features + 1" in repair_prompt  # the failing source itself
    root = tmp_path / "llm"
    records = [json.loads(p.read_text()) for p in sorted(root.glob("attempts/*/attempt.json"))]
    head_guards = [r for r in records if r["kind"] == "guard" and r["slot"] == "head"]
    assert [r["status"] for r in head_guards] == ["error", "ok"]
    assert (root / "attempts" / f"{head_guards[1]['number']:04d}" / "code" / "head.py").read_text() == FIXED_HEAD
    state = json.loads((root / "run.json").read_text())
    assert state["totals"]["repairs"] == 1 and state["totals"]["rollbacks"] == 0
    assert state["totals"]["tokens"] == 5 * 1200
    assert state["totals"]["llm_cost_usd"] > 0
    best = json.loads((root / "best.json").read_text())
    assert best["scored_by"] == "host" and best["value"] is not None
