"""An event flood against the controller: peak memory and disk, against a quiet job.

A job that emits 2,400 valid 57 KB exception events (about 140 MB) once cost the controller
641 MiB of peak RSS and 268 MiB on disk (the events were kept whole, twice). The goal for
any flood is a controller under 150 MB. Each case runs in a fresh process (so peak RSS is
its own): the job runs through the AttemptRunner (sandbox, verdict, registry commit), then
`controller attempts --json` reads the run back. The baseline is the same job without the
flood, measured in the same run.

Usage: .venv/bin/python benchmarks/event_flood.py [--events 2400] [--event-kb 57]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

FLOOD = """
import json, time
line = json.dumps({"kind": "exception", "ts": time.time(), "stage": "run", "type": "Flood",
                   "message": "x" * 8000, "frames": [{"file": "gen/x.py", "line": i, "function": "f",
                   "source": "y" * 900} for i in range(%(frames)d)]})
with open(".sandlab/events.jsonl", "a") as fh:
    for _ in range(%(events)d):
        fh.write(line + "\\n")
"""
GOAL_MB = 150


def child(case: str, runs: Path, events: int, event_kb: int) -> None:
    from controller.attempts import AttemptRunner, JobSpec
    from controller.ledger import Ledger
    from controller.registry import RunConfig
    from controller.store import RunStore
    from sandbox.backends.docker import DockerSandbox
    from sandbox.policy import load_policy

    store, state = RunStore.create(runs, RunConfig(budget_s=600), case)
    sandbox = DockerSandbox()
    runner = AttemptRunner(store, state, sandbox, Ledger(state.totals, wall_s=600, reserve_s=0), min_timeout_s=5)
    frames = max(1, (event_kb * 1024 - 8200) // 1000)
    script = FLOOD % {"frames": frames, "events": events if case == "flood" else 0}
    command = ["sh", "-c", f"mkdir -p .sandlab && python3 -c '{script}'"]
    try:
        record = runner.execute(
            JobSpec(key="flood", kind="train", policy=load_policy("default"), timeout_s=120, command=command, files={})
        )
    finally:
        sandbox.close()
    folder = store.attempt_dir(record.number)
    stats = record.result.event_stats
    print(
        json.dumps(
            {
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "disk_mb": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20,
                "accepted": stats.accepted,
                "dropped": stats.over_budget + stats.excess + stats.oversized,
            }
        )
    )


def attempts_rss(runs: Path, case: str) -> float:
    code = (
        "import resource, sys; from controller.cli import main; "
        f"main(['attempts', {case!r}, '--json', '--runs-dir', {str(runs)!r}]); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(proc.stderr.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2400)
    parser.add_argument("--event-kb", type=int, default=57)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "RUNS"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.events, args.event_kb)
        return
    print(f"# {platform.node()} {platform.machine()}, {args.events} events of ~{args.event_kb} KB")
    with tempfile.TemporaryDirectory() as tmp:
        figures = {}
        for case in ("quiet", "flood"):
            proc = subprocess.run(
                [sys.executable, __file__, "--events", str(args.events), "--event-kb", str(args.event_kb),
                 "--child", case, tmp],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            figures[case] = json.loads(proc.stdout.strip().splitlines()[-1])
            figures[case]["attempts_rss_mb"] = attempts_rss(Path(tmp), case)
    quiet, flood = figures["quiet"], figures["flood"]
    for key in ("rss_mb", "attempts_rss_mb", "disk_mb"):
        ratio = flood[key] / quiet[key] if quiet[key] else float("inf")
        print(f"{key:16s} quiet {quiet[key]:8.1f}  flood {flood[key]:8.1f}  ratio {ratio:5.2f}")
    print(f"events kept {flood['accepted']}, dropped {flood['dropped']}")
    worst = max(flood["rss_mb"], flood["attempts_rss_mb"])
    print(f"goal: controller peak under {GOAL_MB} MB during a flood: {'met' if worst < GOAL_MB else 'NOT met'}")


if __name__ == "__main__":
    main()
