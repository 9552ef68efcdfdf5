"""Does a default run discover something real? `make run`'s command, several times, on fresh seeds.

Each run is `controller start` exactly as `make run` starts it (offline agent, the front-end
on the built-in corpus, the low-data digits setting, a 5-minute budget, real containers),
with `--first-seed` moved on so that no two runs share a training seed. For each run it prints
whether a hypothesis ended supported after the Holm correction, its effect and p, and what
its ablations say carried the gain.

The baseline, measured in the same invocation, is the same command on the full training
split (`--train-fraction 1`): the setting where every idea reaches 97-99% and nothing is
found. The last line is the share of runs with a supported hypothesis, and its ratio to the
baseline's.

Usage: .venv/bin/python benchmarks/findings_hold.py [--runs 5] [--baseline-runs 1] [--budget 5m]
       [--train-fraction 0.1] [--seeds 5] [--runs-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOPIC = "data augmentation for small digit datasets"


def start(runs_dir: Path, run_id: str, first_seed: int, fraction: float, budget: str, seeds: int) -> float:
    command = [
        sys.executable, "-m", "controller", "start", "--budget", budget, "--agent", "offline", "--task", "digits",
        "--topic", TOPIC, "--sources", "none", "--train-fraction", str(fraction), "--seeds", str(seeds),
        "--first-seed", str(first_seed),
        "--no-mlflow", "--runs-dir", str(runs_dir), "--run-id", run_id,
    ]  # fmt: skip
    began = time.monotonic()
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - began


def describe(root: Path) -> tuple[bool, bool, str]:
    """Whether the run supported a hypothesis, whether the ablations of one named the component
    that carried it, and a line saying what it found. The effect and p are the verdict's own
    (the journal's first look), not the arm totals after a second look at the ablations."""
    state = json.loads((root / "run.json").read_text())
    journal = json.loads((root / "journal.json").read_text()) if (root / "journal.json").is_file() else []
    found, named = [], False
    for outcome in journal:
        if not outcome["supported"]:
            continue
        hid = outcome["hypothesis"]["id"]
        diff = outcome["arm_means"][f"novelty:{hid}"] - outcome["baseline_mean"]
        carried = [c for c, v in outcome.get("attribution", {}).items() if v == "carries"]
        named = named or bool(carried)
        second = " after a second look" if any("re-tested on seeds" in n for n in outcome["notes"]) else ""
        found.append(
            f"{hid}: {diff:+.4f} (Holm p {outcome['p_holm'][f'novelty:{hid}']:.2g}, n={outcome.get('seeds')}), "
            f"carried by {' and '.join(carried) or 'no single component'}{second}"
        )
    tested = ", ".join(f"{o['hypothesis']['id']} ({o.get('seeds')} seeds)" for o in journal)
    line = f"{state['status']}; tested {tested or 'nothing'}; " + ("; ".join(found) or "nothing supported")
    return bool(found), named, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-runs", type=int, default=1)
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--train-fraction", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=5, help="Seeds per arm, as make run uses.")
    parser.add_argument("--runs-dir", type=Path, default=None)
    args = parser.parse_args()
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="findings-"))
    print(f"machine: {platform.machine()}, {platform.system()}; runs in {runs_dir}", flush=True)
    tallies = {}
    for label, fraction, count in (
        ("baseline: full train split", 1.0, args.baseline_runs),
        (f"low-data: train fraction {args.train_fraction}", args.train_fraction, args.runs),
    ):
        hits = identified = 0
        for k in range(count):
            run_id = f"{'full' if fraction == 1.0 else 'low'}-{k}"
            wall = start(runs_dir, run_id, 100 * k, fraction, args.budget, args.seeds)
            supported, named, line = describe(runs_dir / run_id)
            hits, identified = hits + supported, identified + named
            print(f"{label} | run {k} (seeds from {100 * k}) {wall:.0f}s: {line}", flush=True)
        tallies[label] = (hits, count)
        print(f"{label}: {hits}/{count} runs with a Holm-corrected supported hypothesis, {identified}/{count} "
              "whose ablations named the component that carried it", flush=True)  # fmt: skip
    (base_hits, base_n), (low_hits, low_n) = tallies.values()
    base_rate, low_rate = base_hits / max(base_n, 1), low_hits / max(low_n, 1)
    ratio = f"{low_rate / base_rate:.2f}x" if base_rate else "inf (the baseline found nothing)"
    print(f"supported share: low-data {low_rate:.0%} vs full {base_rate:.0%}: {ratio}")


if __name__ == "__main__":
    main()
