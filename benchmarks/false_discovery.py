"""The A/A test: how often does sandlab declare a null "novelty" supported?

A null novelty is the baseline under another name: an augmentation that returns its input
unchanged and only reseeds the model's initialisation (offline template `reseed`). Any gain
it shows is seed luck, so every "supported" verdict is a false discovery.

1. Real runs: one `controller start` (real containers, the low-data digits setting) whose plan
   holds K such hypotheses; each is judged by the loop exactly as any idea is (Welch test,
   Holm-corrected over the iteration's arms, improvement >= threshold).
2. Resampling: the per-seed validation scores of that run's baseline and null arms are all
   draws from the same distribution; R times, draw disjoint seed sets for a baseline and an
   iteration's family (a novelty and its ablation arms, all null) and run the same selection
   code (controller.selection.compare_family, Comparison.supported).

The baseline measured in the same run is naive selection (per-arm Welch p < 0.05, no
correction, any improving arm of the family declared a winner); sandlab's rate is printed
as a ratio against it and against the nominal alpha.

Usage: .venv/bin/python benchmarks/false_discovery.py [--from-run RUNS_DIR/RUN_ID] [--nulls 6]
       [--seeds 5] [--repetitions 2000] [--family 3] [--n 3] [--train-fraction 0.1]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from controller.plan import Hypothesis, Plan, StoppingRules
from controller.selection import compare_family
from controller.stats import ArmStats, summarize

ALPHA = 0.05
THRESHOLD = 0.005
"""The default success threshold of a hypothesis."""


def null_plan(nulls: int, seeds: int) -> Plan:
    hypotheses = [
        Hypothesis(
            id=f"null-{k}",
            statement=f"The baseline under another name (random stream {k}) beats the baseline.",
            modules={"augment": f"template:reseed offset={1000 * k}"},
            success_threshold=THRESHOLD,
        )
        for k in range(1, nulls + 1)
    ]
    return Plan(
        task="digits",
        objective="A/A test: null novelties only",
        hypotheses=hypotheses,
        stopping=StoppingRules(max_iterations=nulls, patience=nulls + 1),
        seeds=list(range(seeds)),
    )


def run_real(nulls: int, seeds: int, fraction: float, runs_dir: Path) -> Path:
    plan = runs_dir / "null-plan.json"
    plan.write_text(null_plan(nulls, seeds).model_dump_json(indent=1))
    budget = f"{max(10, nulls * seeds)}m"
    command = [
        sys.executable, "-m", "controller", "start", "--plan", str(plan), "--seeds", str(seeds),
        "--train-fraction", str(fraction), "--budget", budget, "--no-mlflow",
        "--runs-dir", str(runs_dir), "--run-id", "aa",
    ]  # fmt: skip
    print(f"real runs: {' '.join(command[2:])}", flush=True)
    subprocess.run(command, check=True)
    return runs_dir / "aa"


def per_seed_scores(run: Path) -> dict[str, dict[int, float]]:
    """arm -> seed -> host-scored validation score, from the run's attempt records."""
    arms: dict[str, dict[int, float]] = {}
    for path in sorted(run.glob("attempts/*/attempt.json")):
        record = json.loads(path.read_text())
        if record["kind"] == "eval" and record.get("host_score") is not None and not record.get("suspect"):
            arms.setdefault(record["arm"], {})[record["seed"]] = record["host_score"]
    return arms


def real_verdicts(run: Path) -> list[bool]:
    return [bool(o["supported"]) for o in json.loads((run / "journal.json").read_text())]


def _stats(name: str, values: list[float]) -> ArmStats:
    return summarize(name, values, bounds=(0.0, 1.0))


def resample(pool: list[float], n: int, family: int, repetitions: int, rng: random.Random) -> tuple[int, int]:
    """(sandlab's false discoveries, naive selection's) over `repetitions` null iterations."""
    sandlab = naive = 0
    for _ in range(repetitions):
        draw = rng.sample(pool, n * (family + 1))
        arms = {"baseline": _stats("baseline", draw[:n])}
        for j in range(family):
            name = "novelty" if j == 0 else f"ablation-{j}"
            arms[name] = _stats(name, draw[n * (j + 1) : n * (j + 2)])
        comparisons = compare_family(arms, "baseline")
        sandlab += comparisons["novelty"].supported(THRESHOLD)
        naive += any(c.diff > 0 and c.p_value is not None and c.p_value < ALPHA for c in comparisons.values())
    return sandlab, naive


def wilson(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    if total == 0:
        return 0.0, 1.0
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-run", type=Path, help="Reuse a finished A/A run's per-seed scores.")
    parser.add_argument("--nulls", type=int, default=6, help="Null hypotheses in the real run.")
    parser.add_argument("--seeds", type=int, default=5, help="Seeds per arm in the real run.")
    parser.add_argument("--train-fraction", type=float, default=0.1)
    parser.add_argument("--repetitions", type=int, default=2000, help="Resampled null iterations (>= 200).")
    parser.add_argument("--family", type=int, default=3, help="Arms compared per resampled iteration.")
    parser.add_argument("--n", type=int, default=3, help="Seeds per arm in a resampled iteration.")
    parser.add_argument("--rng-seed", type=int, default=0)
    args = parser.parse_args()
    if args.repetitions < 200:
        parser.error("--repetitions: at least 200 null comparisons")
    run = args.from_run or run_real(args.nulls, args.seeds, args.train_fraction, Path(tempfile.mkdtemp(prefix="aa-")))
    scores = per_seed_scores(run)
    nulls = {a: v for a, v in scores.items() if a == "baseline" or a.startswith("novelty:null-")}
    pool = [value for values in nulls.values() for value in values.values()]
    verdicts = real_verdicts(run)
    print(f"machine: {platform.machine()}, {platform.system()}; run {run}")
    base = _stats("baseline", list(nulls["baseline"].values()))
    print(f"baseline: n={base.n} mean={base.mean:.4f} sd={base.std:.4f}; pool of {len(pool)} null scores")
    hits = sum(verdicts)
    print(f"real:      {_rate(hits, len(verdicts))} null hypotheses declared supported (Holm, threshold {THRESHOLD})")
    if len(pool) < args.n * (args.family + 1):
        raise SystemExit(f"the pool holds {len(pool)} scores; a family needs {args.n * (args.family + 1)}")
    sandlab, naive = resample(pool, args.n, args.family, args.repetitions, random.Random(args.rng_seed))
    print(f"resampled: naive selection (baseline): {_rate(naive, args.repetitions)} iterations with a winner")
    print(f"resampled: sandlab:                    {_rate(sandlab, args.repetitions)} novelties declared supported")
    rate = sandlab / args.repetitions
    print(f"sandlab / naive = {rate / max(naive / args.repetitions, 1e-9):.2f}x; sandlab / alpha = {rate / ALPHA:.2f}x")
    print(f"goal (at most {ALPHA:.0%}): {'met' if rate <= ALPHA else 'NOT met'}")


def _rate(hits: int, total: int) -> str:
    low, high = wilson(hits, total)
    return f"{hits}/{total} = {hits / max(total, 1):.2%} (95% CI [{low:.2%}, {high:.2%}])"


if __name__ == "__main__":
    main()
