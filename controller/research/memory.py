"""The findings memory across runs: every tested hypothesis, its verdict, effect and CI.

`runs/memory.jsonl` (or RunConfig.memory) gets one line per hypothesis a run tested, written
when the run ends. The PI reads it and does not propose what was refuted unless it says why
it should be retested; the Reviewer checks that. Appends are whole lines under an exclusive
lock, so two runs ending at once cannot interleave; a line that does not parse is skipped.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = structlog.get_logger("sandlab.memory")

MEMORY_FILE = "memory.jsonl"
Verdict = Literal["supported", "refuted", "underpowered", "untested"]
"""refuted: not supported, and the CI of the difference rules out the claimed effect;
underpowered: not supported, but the CI still holds the claim (no evidence of no effect);
untested: no scores."""


class Finding(BaseModel):
    """One hypothesis as one run tested it."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    task: str
    dataset: str
    train_fraction: float = 1.0
    hypothesis: str
    """The hypothesis id."""
    statement: str
    components: list[str] = Field(default_factory=list)
    verdict: Verdict
    effect: float | None = None
    """Novelty mean minus baseline mean (host-scored validation)."""
    ci_low: float | None = None
    ci_high: float | None = None
    p_holm: float | None = None
    n: int = 0
    power: str = ""
    """The power statement behind the verdict, e.g. "underpowered: needs n = 7 ..."."""
    baseline_sd: float | None = None
    """The baseline's seed-to-seed sd in that run: the next plan's pilot."""
    pair_s: float | None = None
    """Median wall seconds of one train + evaluate pair in that run."""
    recorded_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def memory_path(runs_dir: Path, configured: str | None) -> Path:
    """The configured memory file, or memory.jsonl in the runs folder."""
    return Path(configured).expanduser() if configured else runs_dir / MEMORY_FILE


def read_memory(path: Path) -> list[Finding]:
    """Every finding recorded so far (a missing file is an empty memory)."""
    if not path.is_file():
        return []
    findings: list[Finding] = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            findings.append(Finding.model_validate_json(line))
        except ValidationError:
            log.warning("memory.line_skipped", path=str(path), line=number)
    return findings


def record_findings(path: Path, findings: Iterable[Finding]) -> int:
    """Append the findings a run has not recorded yet (by run id and hypothesis); returns how many."""
    new = list(findings)
    if not new:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        seen = set()
        for line in handle.read().splitlines():
            try:
                record = json.loads(line)
                seen.add((record.get("run_id"), record.get("hypothesis")))
            except (json.JSONDecodeError, AttributeError):
                continue
        fresh = [f for f in new if (f.run_id, f.hypothesis) not in seen]
        handle.seek(0, os.SEEK_END)
        for finding in fresh:
            handle.write(finding.model_dump_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return len(fresh)


def prior_verdicts(findings: Iterable[Finding], task: str) -> dict[str, list[Finding]]:
    """Findings for `task`, by hypothesis id, oldest first."""
    by_id: dict[str, list[Finding]] = {}
    for finding in findings:
        if finding.task == task:
            by_id.setdefault(finding.hypothesis, []).append(finding)
    return by_id


def refuted(findings: Iterable[Finding], task: str) -> dict[str, Finding]:
    """Hypotheses whose latest adequately powered test refuted them (an underpowered or a
    supported test since does not count as a refutation)."""
    latest: dict[str, Finding] = {}
    for hypothesis, history in prior_verdicts(findings, task).items():
        decisive = [f for f in history if f.verdict in {"supported", "refuted"}]
        if decisive and decisive[-1].verdict == "refuted":
            latest[hypothesis] = decisive[-1]
    return latest
