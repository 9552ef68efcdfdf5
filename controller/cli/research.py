"""The research front-end on the command line: `controller plan`, and what `start` shares
with it (--topic, --idea, --corpus, --sources, --offline, --plan).

`plan` runs literature search, summaries, novelty and the planning session, writes
plan.json and stops before any training: read it, edit it, then `controller start --plan`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from controller.cli.options import (
    DEFAULT_RUNS_DIR,
    RunsDir,
    check_agent,
    check_seeds,
    parse_duration_arg,
    parse_usd,
    report_reserve,
)
from controller.cli.render import console, out
from controller.errors import BadInputError
from controller.ownership import claim
from controller.plan import Plan
from controller.registry import NETWORK_SOURCES, ResearchConfig, RunConfig, RunState
from controller.store import RunStore
from controller.tasks import load_task

INTERRUPTED_EXIT = 130
FRONT_END_PANEL = "Research front-end"
MAX_IDEA_CHARS = 20_000

Topic = Annotated[
    str | None,
    typer.Option(
        help="Research question: search the literature and plan from it first.", rich_help_panel=FRONT_END_PANEL
    ),
]
Idea = Annotated[
    Path | None,
    typer.Option(
        help="A seed idea in Markdown for the PI.", exists=True, dir_okay=False, rich_help_panel=FRONT_END_PANEL
    ),
]
Corpus = Annotated[
    Path | None,
    typer.Option(
        help="Local corpus searched offline: a .bib or .jsonl file, or a folder of them.",
        exists=True,
        rich_help_panel=FRONT_END_PANEL,
    ),
]
Sources = Annotated[
    str,
    typer.Option(help="Network sources: semantic_scholar,arxiv,openalex (or none).", rich_help_panel=FRONT_END_PANEL),
]
Offline = Annotated[
    bool,
    typer.Option(help="Ask no network source: the corpus and the built-in set only.", rich_help_panel=FRONT_END_PANEL),
]
DEFAULT_SOURCES = ",".join(NETWORK_SOURCES)


def research_config(
    topic: str | None, idea: Path | None, corpus: Path | None, sources: str, *, offline: bool, plan_only: bool = False
) -> ResearchConfig | None:
    """The front-end's settings from the flags; None when no --topic was given."""
    if topic is None:
        if idea is not None or corpus is not None:
            msg = "--idea and --corpus feed the research front-end; give --topic 'your question' too"
            raise BadInputError(msg)
        return None
    if not topic.strip():
        msg = "--topic: empty; give the research question, e.g. --topic 'augmentation for small digit datasets'"
        raise BadInputError(msg)
    names = [] if offline or sources.strip() == "none" else [s.strip() for s in sources.split(",") if s.strip()]
    unknown = [n for n in names if n not in NETWORK_SOURCES]
    if unknown:
        msg = f"--sources: unknown source {unknown[0]!r}; use {', '.join(NETWORK_SOURCES)} or none"
        raise BadInputError(msg)
    text = None
    if idea is not None:
        text = idea.read_text(errors="replace")[:MAX_IDEA_CHARS]
        if not text.strip():
            msg = f"--idea: {idea} is empty; write the seed idea in it as Markdown"
            raise BadInputError(msg)
    if corpus is not None:
        from controller.research.sources.local import LocalCorpus

        LocalCorpus(corpus)  # parse now: a bad corpus is one line and exit 2, before a run exists
    return ResearchConfig(
        topic=" ".join(topic.split()),
        idea=text,
        corpus=str(corpus.resolve()) if corpus else None,
        sources=list(dict.fromkeys(names)),
        plan_only=plan_only,
    )


def load_plan_file(path: Path, task: str) -> Plan:
    """An (edited) plan.json, validated; one line naming the problem otherwise."""
    try:
        plan = Plan.model_validate(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        msg = f"--plan: cannot read {path}: {exc}"
        raise BadInputError(msg) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = f"--plan: {path} is not a valid plan: {where}: {first['msg']}; fix it or run `controller plan` again"
        raise BadInputError(msg) from None
    if plan.task != load_task(task).name:
        msg = f"--plan: the plan is for task {plan.task!r}, the run for {task!r}; pass --task {plan.task}"
        raise BadInputError(msg)
    if not plan.hypotheses:
        msg = f"--plan: {path} has no hypothesis to test"
        raise BadInputError(msg)
    return plan


def adopt_plan(store: RunStore, plan: Plan, path: Path) -> None:
    """Put the plan in the new run, with the literature and session it came from, if any."""
    source = path.resolve().parent
    for folder in ("literature", "planning"):
        if (source / folder).is_dir() and not (store.root / folder).exists():
            shutil.copytree(source / folder, store.root / folder, ignore=shutil.ignore_patterns("cache"))
    store.write("plan.json", plan)


def research_of_plan(path: Path) -> ResearchConfig | None:
    """The research settings of the run a plan file came from (for the report), if any."""
    run_json = path.resolve().parent / "run.json"
    try:
        research = RunState.model_validate_json(run_json.read_text()).config.research
    except (OSError, ValidationError):
        return None
    return research.model_copy(update={"plan_only": False}) if research else None


def _say(line: str) -> None:
    out.print(line, highlight=False, markup=False, soft_wrap=True)


def run_front_end(store: RunStore) -> int:
    """`controller plan` (and its resume): the front-end alone, then status `planned`."""
    from controller.research import plan_from_literature
    from controller.wiring import charge_agent_to, make_agent, make_ledger

    state = store.load_state()
    claim(state)
    state.stage = "plan"
    store.save_state(state)
    agent = make_agent(state.config, store)
    ledger = make_ledger(state)
    charge_agent_to(ledger, agent)
    client = getattr(agent, "client", None)
    try:
        plan = plan_from_literature(store, state.config, load_task(state.config.task), client, _say)
    except KeyboardInterrupt:
        state.status, state.message = "interrupted", "interrupted during planning; `controller resume` continues"
        ledger.sync()
        store.save_state(state)
        console.print(f"[yellow]interrupted[/]: continue with `controller resume {state.run_id}`")
        return INTERRUPTED_EXIT
    ledger.sync()
    store.write("plan.json", plan)
    state.status, state.stage, state.message = "planned", "planned", ""
    store.save_state(state)
    plan_path = store.root / "plan.json"
    for h in plan.hypotheses:
        cites = f" [{', '.join(h.citations)}]" if h.citations else ""
        _say(f"  {h.id}: {h.statement}{cites}\n    {h.power}")
    out.print(f"plan: {plan_path}  (session: {store.root / 'planning' / 'session.jsonl'})")
    out.print(f"edit it, then: controller start --plan {plan_path} --budget {state.config.budget_s:.0f}s")
    return 0


def plan(
    topic: Annotated[str, typer.Option(help="The research question.")],
    idea: Idea = None,
    corpus: Corpus = None,
    sources: Sources = DEFAULT_SOURCES,
    offline: Offline = False,
    task: Annotated[str, typer.Option(help="Built-in task name or a task folder.")] = "digits",
    dataset: Annotated[str, typer.Option(help="The dataset the plan is for.")] = "digits",
    train_fraction: Annotated[
        float, typer.Option(min=0.001, max=1.0, help="The share of the train split the later run trains on.")
    ] = 1.0,
    budget: Annotated[str, typer.Option(help="The budget the plan is sized for (the later run's).")] = "2h",
    seeds: Annotated[int, typer.Option(help="Seeds per arm the later run will use.")] = 3,
    parallel: Annotated[int, typer.Option(min=1, max=64, help="Training jobs at once in the later run.")] = 1,
    agent: Annotated[str, typer.Option(help="offline (default, no LLM) or llm.")] = "offline",
    model: Annotated[str | None, typer.Option(help="LLM model name for --agent llm.")] = None,
    max_cost: Annotated[str | None, typer.Option(help="Dollar cap on the planning's LLM tokens.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Name the planning run.")] = None,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Search the literature and hold the planning session; write plan.json and stop before training."""
    from controller.datasets import check_dataset_name

    check_agent(agent, model)
    load_task(task)
    check_dataset_name(dataset)
    budget_s = parse_duration_arg(budget, "--budget")
    config = RunConfig(
        task=task,
        dataset=dataset,
        train_fraction=train_fraction,
        agent=agent,
        model=model,
        budget_s=budget_s,
        max_cost_usd=parse_usd(max_cost, "--max-cost") if max_cost is not None else None,
        seeds=check_seeds(seeds),
        parallel=parallel,
        report_reserve_s=report_reserve(budget_s),
        research=research_config(topic, idea, corpus, sources, offline=offline, plan_only=True),
    )
    store, _ = RunStore.create(runs_dir, config, run_id)
    console.print(f"planning run [bold]{store.root.name}[/] in {store.root}")
    raise typer.Exit(run_front_end(store))
