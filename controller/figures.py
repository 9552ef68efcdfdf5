"""Figures of a run, made on the host from the run registry only (matplotlib, Agg).

`Figure` is what the dashboard and the paper receive: where the PNG and the PDF are, and
the caption that says what the numbers are (host-scored, or training telemetry).

Every figure reads the Results snapshot, the attempt records and their events.jsonl; none
runs a job. A figure with no data is skipped, and one that fails is logged and skipped:
the others, and the report around them, still get written.
"""

from __future__ import annotations

import io
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from controller.registry import AttemptRecord
from controller.stats import compare
from controller.store import write_bytes_atomic
from sandbox.events import MetricEvent

if TYPE_CHECKING:
    from controller.report import Results

log = structlog.get_logger("sandlab.figures")

PNG_DPI = 110
"""Sharp enough on a laptop screen, small enough to inline in the dashboard (~30-60 KB)."""
WIDTH_IN = 7.0
ROW_IN = 0.32
"""Height per arm of the per-arm figures, so a 20-arm run stays legible."""
MAX_CURVE_ARMS = 10
"""Learning curves drawn at most; more lines than this are unreadable in one plot."""
CURVE_METRICS = ("holdout_accuracy", "train_loss")
KIND_ORDER = ("prepare", "guard", "train", "eval", "test")
STATUS_COLOURS = {
    "ok": "#4c9a5b",
    "error": "#c0504d",
    "timeout": "#e69f00",
    "oom": "#8e5ea2",
    "killed": "#7f7f7f",
    "infra_error": "#1f77b4",
}
OTHER_STATUS_COLOUR = "#bcbd22"
ELIGIBLE_COLOUR = "#1f4e79"
INELIGIBLE_COLOUR = "#9a9a9a"
BASELINE_COLOUR = "#c0504d"
BUDGET_LINE_MIN_FRACTION = 0.5
"""The wall budget is drawn as a line only once the run got this far into it."""
TELEMETRY_NOTE = "training telemetry (holdout carved from train), not the host score"


@dataclass(frozen=True)
class Figure:
    """One figure, in PNG (dashboard) and PDF (paper)."""

    name: str
    """A file-name-safe identifier, e.g. `validation_by_arm`."""
    title: str
    caption: str
    """What is plotted and where the numbers come from, in a sentence or two."""
    png: Path
    pdf: Path


Drawn = tuple[MplFigure, str]
"""A drawn figure and its caption."""
Plotter = Callable[["Results"], Drawn | None]


def make_figures(results: Results, out_dir: Path, *, problems: list[str] | None = None) -> list[Figure]:
    """Every figure the registry has data for, as `<name>.png` and `<name>.pdf` in out_dir.

    A figure without data is left out; one that fails is logged, described in `problems`
    (when given) and left out, and the rest are still made.
    """
    figures: list[Figure] = []
    bound = log.bind(run_id=results.state.run_id)
    for name, title, plot in PLOTS:
        try:
            drawn = plot(results)
            if drawn is None:
                bound.info("figure.skipped", figure=name, reason="no data")
                continue
            figure, caption = drawn
            figure.suptitle(title, fontsize=11)
            figures.append(save_figure(figure, out_dir, name, title, caption))
        except Exception as exc:
            bound.exception("figure.failed", figure=name, error=str(exc))
            if problems is not None:
                problems.append(f"figure {name} failed: {type(exc).__name__}: {exc}")
    return figures


def save_figure(figure: MplFigure, out_dir: Path, name: str, title: str, caption: str) -> Figure:
    """PNG and PDF, each written atomically; the PDF without a creation date, so it is reproducible."""
    FigureCanvasAgg(figure)  # Agg explicitly: no pyplot, no display, safe off the main thread
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    for path, options in ((png, {"dpi": PNG_DPI}), (pdf, {"metadata": {"CreationDate": None}})):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=path.suffix[1:], **options)
        write_bytes_atomic(path, buffer.getvalue())
    return Figure(name=name, title=title, caption=caption, png=png, pdf=pdf)


def _new_figure(height_in: float, ncols: int = 1) -> tuple[MplFigure, list[Axes]]:
    figure = MplFigure(figsize=(WIDTH_IN, height_in), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def _arm_order(results: Results, names: set[str]) -> list[str]:
    """Arms in the order the run met them (baseline first), unknown names last."""
    known = [name for name in results.arms if name in names]
    return known + sorted(names - set(known))


# -- learning curves (telemetry) ----------------------------------------------------------------


def telemetry_by_arm(results: Results) -> dict[str, dict[str, dict[int, dict[int, float]]]]:
    """arm -> metric -> seed -> step -> value, from the run's training attempts' events.

    Only arms of the run's matrix (sweep points are not arms) and the run's seeds. An arm whose
    configuration an earlier arm already trained (an ablation that reverts a follow-up to its
    base) shares that arm's curves, as it shares its scores. A series
    that repeats a step keeps its last value, as the weights saved are the last ones.
    """
    seeds = set(results.state.config.seeds)
    names: dict[str, list[str]] = defaultdict(list)  # two arm names can be one configuration, trained once
    for name, arm in results.arms.items():
        names[arm.key].append(name)
    curves: dict[str, dict[str, dict[int, dict[int, float]]]] = defaultdict(lambda: defaultdict(dict))
    for record in results.store.attempts():
        if record.kind != "train" or record.arm_key not in names or record.seed not in seeds:
            continue
        series: dict[str, dict[int, float]] = defaultdict(dict)
        for event in results.store.attempt_events(record.number):
            if isinstance(event, MetricEvent) and event.name in CURVE_METRICS:
                points = series[event.name]
                points[event.step if event.step is not None else len(points)] = event.value
        for name in names[record.arm_key or ""]:
            for metric, points in series.items():
                curves[name][metric][record.seed] = points
    return curves


def plot_learning_curves(results: Results) -> Drawn | None:
    curves = telemetry_by_arm(results)
    metrics = [m for m in CURVE_METRICS if any(m in per_arm for per_arm in curves.values())]
    if not metrics:
        return None
    arms = _arm_order(results, set(curves))
    shown = arms[:MAX_CURVE_ARMS]
    figure, axes = _new_figure(3.4, len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        for arm in shown:
            by_seed = curves[arm].get(metric)
            if not by_seed:
                continue
            steps = sorted({step for points in by_seed.values() for step in points})
            values = [[points[s] for points in by_seed.values() if s in points] for s in steps]
            means = [statistics.fmean(v) for v in values]
            (line,) = ax.plot(steps, means, marker="o", markersize=2.5, linewidth=1.2, label=arm)
            if len(by_seed) > 1:
                ax.fill_between(
                    steps, [min(v) for v in values], [max(v) for v in values], alpha=0.15, color=line.get_color()
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=6.5)
    left_out = f" {len(arms) - len(shown)} more arm(s) not drawn." if len(arms) > len(shown) else ""
    caption = (
        f"Learning curves per arm: mean over seeds, band from min to max; {TELEMETRY_NOTE}. "
        f"The job reports these numbers itself; arms are compared only on host-scored validation.{left_out}"
    )
    return figure, caption


# -- host-scored validation per arm ---------------------------------------------------------


def plot_validation_by_arm(results: Results) -> Drawn | None:
    stats = results.stats()
    if not stats:
        return None
    names = _arm_order(results, set(stats))
    figure, (ax,) = _new_figure(max(2.4, 1.0 + ROW_IN * len(names)))
    rows = range(len(names))
    for row, name in zip(rows, names, strict=True):
        s = stats[name]
        eligible = results.selectable(name)
        colour = ELIGIBLE_COLOUR if eligible else INELIGIBLE_COLOUR
        if s.ci_low is not None and s.ci_high is not None:
            ax.errorbar(
                s.mean, row, xerr=[[s.mean - s.ci_low], [s.ci_high - s.mean]], fmt="none", ecolor=colour, capsize=3
            )
        ax.plot(
            s.mean,
            row,
            marker="o" if eligible else "s",
            markersize=6,
            color=colour,
            markerfacecolor=colour if eligible else "white",
        )
        ax.plot(s.values, [row] * len(s.values), linestyle="none", marker="|", color=colour, alpha=0.6)
    if "baseline" in stats:
        ax.axvline(stats["baseline"].mean, color=BASELINE_COLOUR, linestyle="--", linewidth=1, label="baseline mean")
    ax.plot(
        [], [], marker="o", linestyle="none", color=ELIGIBLE_COLOUR, label=f"eligible (n ≥ {results.required_seeds})"
    )
    ax.plot(
        [], [], marker="s", linestyle="none", color=INELIGIBLE_COLOUR, markerfacecolor="white", label="not eligible"
    )
    ax.set_yticks(list(rows), [f"{name} (n={stats[name].n})" for name in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"validation {results.task.metric.name} (host-scored)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    caption = (
        f"Host-scored validation {results.task.metric.name} per arm: mean over seeds (ticks: single seeds) with "
        f"95% t interval (clipped to the metric's range); dashed line: the baseline's mean. Only arms with "
        f"{results.required_seeds} counted seeds (filled) can be selected; suspect attempts are not counted."
    )
    return figure, caption


# -- ablations against the novelty ----------------------------------------------------------


def ablation_deltas(results: Results) -> list[tuple[str, float, float | None, float | None]]:
    """(label, ablation - novelty mean, Welch CI low, high) for every ablation arm with stats."""
    stats = results.stats()
    deltas = []
    for outcome in results.history:
        hid = outcome.hypothesis.id
        # Only the iteration's own arms: a hypothesis `wide` must not claim `ablation:wide-lr-...`.
        for name in (n for n in outcome.arm_means if n in stats):
            base, _, variant = name.partition("@")
            if not base.startswith(f"ablation:{hid}-"):
                continue
            novelty = stats.get(f"novelty:{hid}" + (f"@{variant}" if variant else ""))
            if novelty is None:
                continue
            c = compare(stats[name], novelty)
            deltas.append((name.removeprefix("ablation:"), c.diff, c.diff_ci_low, c.diff_ci_high))
    return deltas


def plot_ablation_deltas(results: Results) -> Drawn | None:
    deltas = ablation_deltas(results)
    if not deltas:
        return None
    figure, (ax,) = _new_figure(max(2.2, 1.0 + ROW_IN * len(deltas)))
    for row, (_, diff, low, high) in enumerate(deltas):
        if low is not None and high is not None:
            ax.errorbar(diff, row, xerr=[[diff - low], [high - diff]], fmt="o", color=ELIGIBLE_COLOUR, capsize=3)
        else:
            ax.plot(diff, row, marker="o", markerfacecolor="white", color=INELIGIBLE_COLOUR)
    ax.axvline(0.0, color=BASELINE_COLOUR, linestyle="--", linewidth=1)
    ax.set_yticks(range(len(deltas)), [label for label, *_ in deltas], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"ablation - novelty, validation {results.task.metric.name}")
    ax.grid(axis="x", alpha=0.3)
    caption = (
        "Each ablation against its hypothesis's novelty arm: difference of host-scored validation means with "
        "the 95% Welch interval of the difference (hollow: fewer than 2 seeds on a side, no interval). Left of "
        "zero, removing or swapping that component hurt."
    )
    return figure, caption


# -- budget over time ------------------------------------------------------------------------


def _ended_s(results: Results, record: AttemptRecord) -> float:
    started = results.state.created_at
    end = record.result.started_at + timedelta(seconds=record.result.duration_s)
    return max((end - started).total_seconds(), 0.0)


def plot_budget(results: Results) -> Drawn | None:
    records = sorted(results.store.attempts(), key=lambda r: _ended_s(results, r))
    if not records:
        return None
    config, totals = results.state.config, results.state.totals
    minutes, job_s, gpu_s, gpu_usd = [0.0], [0.0], [0.0], [0.0]
    for record in records:
        gpus = record.result.limits.gpu_count
        minutes.append(_ended_s(results, record) / 60)
        job_s.append(job_s[-1] + record.result.duration_s)
        gpu_s.append(gpu_s[-1] + record.result.duration_s * gpus)
        gpu_usd.append(gpu_usd[-1] + record.result.duration_s * gpus / 3600 * config.gpu_usd_per_hour)
    figure, (time_ax, cost_ax) = _new_figure(3.2, 2)
    time_ax.sharex(cost_ax)
    time_ax.step(minutes, job_s, where="post", label="job seconds (summed)")
    time_ax.step(minutes, gpu_s, where="post", label="GPU-seconds")
    budget_min = config.budget_s / 60
    # A run that stopped long before its budget would be squashed against the left edge.
    if minutes[-1] >= BUDGET_LINE_MIN_FRACTION * budget_min:
        time_ax.axvline(budget_min, color=BASELINE_COLOUR, linestyle="--", linewidth=1, label="wall budget")
    time_ax.set_ylabel("seconds")
    time_ax.legend(fontsize=7, title=f"wall budget {budget_min:g} min", title_fontsize=7)
    # Matplotlib reads a pair of bare `$` as TeX math, hence `\$`.
    cost_ax.step(minutes, gpu_usd, where="post", label="GPU \\$ (attempts)")
    cost_ax.plot(
        [minutes[-1]], [totals.cost_usd], marker="*", markersize=9, linestyle="none", color=BASELINE_COLOUR,
        label=f"run total \\${totals.cost_usd:.4f} (LLM \\${totals.llm_cost_usd:.4f})",
    )  # fmt: skip
    if config.max_cost_usd is not None:
        cost_ax.axhline(config.max_cost_usd, color="#7f7f7f", linestyle=":", linewidth=1, label="cost cap")
    cost_ax.set_ylim(bottom=0)
    cost_ax.set_ylabel("US dollars")
    cost_ax.legend(fontsize=7)
    for ax in (time_ax, cost_ax):
        ax.set_xlabel("minutes since the run started")
        ax.grid(alpha=0.3)
    caption = (
        "Budget against the end time of each attempt: job seconds summed over attempts (above the elapsed "
        "time when jobs ran in parallel), GPU-seconds (duration x the policy's GPUs) and GPU dollars at "
        f"${config.gpu_usd_per_hour:g}/GPU-hour. LLM dollars are known only as the run's total "
        "(the star), not per moment, so they are not drawn over time."
    )
    return figure, caption


# -- attempt outcomes ------------------------------------------------------------------------


def plot_attempt_outcomes(results: Results) -> Drawn | None:
    records = results.store.attempts()
    if not records:
        return None
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for record in records:
        counts[record.status][record.kind] += 1
    kinds = [k for k in KIND_ORDER if any(k in by_kind for by_kind in counts.values())]
    kinds += sorted({k for by_kind in counts.values() for k in by_kind} - set(kinds))
    statuses = [s for s in STATUS_COLOURS if s in counts] + sorted(set(counts) - set(STATUS_COLOURS))
    figure, (ax,) = _new_figure(3.0)
    bottom = [0] * len(kinds)
    for status in statuses:
        heights = [counts[status].get(kind, 0) for kind in kinds]
        colour = STATUS_COLOURS.get(status, OTHER_STATUS_COLOUR)
        ax.bar(kinds, heights, bottom=bottom, label=status, color=colour)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylabel("attempts")
    ax.legend(fontsize=7, title="status", title_fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    caption = (
        "Attempts by stage and status. Guard failures go to repair; a training or evaluation failure leaves "
        "that seed unscored; only `infra_error` blames the machinery rather than the code."
    )
    return figure, caption


PLOTS: tuple[tuple[str, str, Plotter], ...] = (
    ("validation_by_arm", "Validation by arm (host-scored)", plot_validation_by_arm),
    ("ablation_deltas", "Ablations against the novelty", plot_ablation_deltas),
    ("learning_curves", "Learning curves (training telemetry)", plot_learning_curves),
    ("budget", "Budget over time", plot_budget),
    ("attempt_outcomes", "Attempt outcomes", plot_attempt_outcomes),
)
"""Name, title and plotter of every figure, in the order the dashboard shows them (host-scored first)."""
