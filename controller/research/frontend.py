"""The research front-end: search -> full texts -> summaries -> planning session -> plan.json.

Each stage leaves its file in the run folder and is skipped on a resume once that file is
complete; the literature HTTP cache answers anything a half-done stage already asked, so a
resumed run makes no request twice. A network source that fails for good is logged (in
literature/sources.json and the events) and the others go on; the local corpus and the
built-in set always stand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from controller.llm import LLMClient, RetryPolicy
from controller.plan import Plan
from controller.registry import ResearchConfig, RunConfig
from controller.research.asker import Asker
from controller.research.engineer import pilot_for
from controller.research.fulltext import fetch_open_access
from controller.research.memory import memory_path, read_memory
from controller.research.novelty import NoveltyReport
from controller.research.offline_roles import OfflineRoles
from controller.research.papers import Paper, dedupe, merge
from controller.research.planning import run_session
from controller.research.session import Context, Roles, SessionTurn
from controller.research.sources import Source, SourceUnavailableError, builtin_corpus, network_sources
from controller.research.sources.local import LocalCorpus
from controller.research.sources.semantic_scholar import SemanticScholar
from controller.research.summarize import PaperSummary, lexical_relevance, llm_summary, offline_summary
from controller.store import RunStore, write_text_atomic
from controller.tasks import Task

log = structlog.get_logger("sandlab.research")

PAPERS = "literature/papers.jsonl"
SOURCES = "literature/sources.json"
FULLTEXT = "literature/fulltext.json"
SUMMARIES = "literature/summaries.jsonl"
NOVELTY = "literature/novelty.json"
SESSION = "planning/session.jsonl"
ENRICHED = 5
"""Papers without an abstract that Semantic Scholar's paper details are asked for."""
LLM_SUMMARIES = 12
"""Papers the model summarises (the most relevant); the rest get offline summaries."""
MIN_INTERVAL_ENV = "SANDLAB_LITERATURE_MIN_INTERVAL_S"
"""Overrides every source's polite interval (a mirror of your own; tests)."""


@dataclass
class FrontEnd:
    """One run's front-end."""

    store: RunStore
    config: RunConfig
    task: Task
    client: LLMClient | None
    progress: Callable[[str], None]
    checkpoint: Callable[[], None] = lambda: None
    """Raises to unwind (interrupt, stop, deadline); called between units of work."""
    retry: RetryPolicy | None = None
    """How hard each source is retried (the default: five tries, backoff honouring Retry-After)."""

    @property
    def research(self) -> ResearchConfig:
        assert self.config.research is not None
        return self.config.research

    def run(self) -> Plan:
        """Every stage not done yet, then plan.json."""
        papers = self.search()
        self.checkpoint()
        fulltexts = self.fetch_fulltexts(papers)
        summaries = self.summarize(papers, fulltexts)
        self.checkpoint()
        return self.plan(papers, summaries)

    # -- search ----------------------------------------------------------------------------

    def search(self) -> list[Paper]:
        stored = self._read_jsonl(PAPERS)
        if stored is not None:
            return [Paper.model_validate(r) for r in stored]
        query = self.research.topic
        limit = self.research.per_source
        local: list[Source] = [builtin_corpus()]
        if self.research.corpus:
            local.insert(0, LocalCorpus(Path(self.research.corpus)))
        interval = os.environ.get(MIN_INTERVAL_ENV)
        remote = network_sources(
            self.research.sources,
            cache_dirs=[self.store.root / "literature" / "cache", *self._shared_cache()],
            min_interval_s=float(interval) if interval else None,
            retry=self.retry,
        )
        report: dict[str, dict[str, Any]] = {}
        found: list[Paper] = []
        for source in local:
            papers = source.search(query, limit)
            report[source.name] = {"status": "ok", "papers": len(papers)}
            found += papers
        self.progress(f"literature: asking {', '.join(s.name for s in remote) or 'no network source'} for {query!r}")
        with ThreadPoolExecutor(max(len(remote), 1), thread_name_prefix="literature") as pool:
            answers = list(pool.map(lambda s: self._ask_source(s, query, limit), remote))
        for source, (papers, entry) in zip(remote, answers, strict=True):
            report[source.name] = entry
            found += papers
        merged = dedupe(found)
        s2 = next((s for s in remote if isinstance(s, SemanticScholar) and report[s.name]["status"] == "ok"), None)
        if s2 is not None:
            merged = self._enrich(merged, s2)
        for source in remote:
            source.close()
        self.store.write(SOURCES, report)
        self._write_jsonl(PAPERS, [p.model_dump(mode="json") for p in merged])
        ok = [n for n, e in report.items() if e["status"] == "ok"]
        failed = [f"{n} ({e['error']})" for n, e in report.items() if e["status"] != "ok"]
        self.progress(
            f"literature: {len(merged)} papers from {', '.join(ok)}"
            + (f"; failed: {'; '.join(failed)}" if failed else "")
        )
        return merged

    def _enrich(self, papers: list[Paper], s2: SemanticScholar) -> list[Paper]:
        """Abstracts for the most relevant papers that came without one, from S2's paper details."""
        relevance = lexical_relevance(self.research.topic, papers)
        wanting = sorted(
            (i for i, p in enumerate(papers) if not p.abstract and not p.summary and (p.ids.doi or p.ids.arxiv)),
            key=lambda i: -relevance[i],
        )[:ENRICHED]
        enriched = list(papers)
        for i in wanting:
            paper = papers[i]
            ident = f"DOI:{paper.ids.doi}" if paper.ids.doi else f"ARXIV:{paper.ids.arxiv}"
            try:
                detail = s2.details(ident)
            except SourceUnavailableError as exc:
                log.info("literature.details_failed", key=paper.key, error=str(exc))
                continue
            enriched[i] = merge(paper, detail).with_key()
        return enriched

    def _ask_source(self, source: Any, query: str, limit: int) -> tuple[list[Paper], dict[str, Any]]:
        try:
            papers = source.search(query, limit)
            entry: dict[str, Any] = {"status": "ok", "papers": len(papers)}
        except SourceUnavailableError as exc:
            log.warning("literature.source_failed", source=source.name, error=str(exc))
            papers, entry = [], {"status": "failed", "papers": 0, "error": str(exc)}
        client = getattr(source, "client", None)
        if client is not None:
            entry.update(requests=client.requests_sent, cache_hits=client.cache_hits)
        return papers, entry

    def _shared_cache(self) -> list[Path]:
        from controller.research.http import shared_cache_dir

        try:
            folder = shared_cache_dir()
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("literature.shared_cache_unavailable", error=str(exc))
            return []
        return [folder]

    # -- open-access full texts ---------------------------------------------------------------

    def fetch_fulltexts(self, papers: list[Paper]) -> dict[str, str]:
        """Text of up to `fulltext` open-access papers, most relevant first (never a closed one)."""
        stored = self.store.read(FULLTEXT)
        if stored is None:
            stored = self._fetch(papers)
            self.store.write(FULLTEXT, stored)
        texts: dict[str, str] = {}
        for item in stored.get("fetched", []):
            if item.get("text_path") and (self.store.root / item["text_path"]).is_file():
                texts[item["key"]] = (self.store.root / item["text_path"]).read_text(errors="replace")
        return texts

    def _fetch(self, papers: list[Paper]) -> dict[str, Any]:
        if not self.research.sources or self.research.fulltext <= 0:
            return {"fetched": [], "skipped": "no network source: full texts are not fetched offline"}
        from controller.research.http import PoliteClient

        relevance = lexical_relevance(self.research.topic, papers)
        ranked = [p for _, p in sorted(zip(relevance, papers, strict=True), key=lambda pair: -pair[0])]
        fetched: list[dict[str, Any]] = []
        closed = [p.key for p in ranked if not p.open_access][:20]
        interval = os.environ.get(MIN_INTERVAL_ENV)
        client = PoliteClient(
            "fulltext",
            min_interval_s=float(interval) if interval else 1.0,
            cache_dirs=[self.store.root / "literature" / "cache"],
            retry=self.retry,
        )
        with client:
            for paper in [p for p in ranked if p.open_access and p.pdf_url][: self.research.fulltext]:
                self.checkpoint()
                try:
                    record = fetch_open_access(paper, client, self.store.root / "literature" / "fulltext")
                except SourceUnavailableError as exc:
                    log.warning("literature.fulltext_failed", key=paper.key, error=str(exc))
                    continue
                if record is not None:
                    fetched.append(record.model_dump(mode="json"))
        return {"fetched": fetched, "closed_not_fetched": closed, "requests": client.requests_sent}

    # -- summaries -------------------------------------------------------------------------------

    def summarize(self, papers: list[Paper], fulltexts: dict[str, str]) -> dict[str, PaperSummary]:
        """One summary per paper; a resume keeps the lines already written."""
        done = {r["key"]: PaperSummary.model_validate(r) for r in self._read_jsonl(SUMMARIES) or []}
        relevance = dict(zip([p.key for p in papers], lexical_relevance(self.research.topic, papers), strict=True))
        top = {k for k, _ in sorted(relevance.items(), key=lambda kv: -kv[1])[:LLM_SUMMARIES]}
        asker = Asker(self.client) if self.client is not None else None
        todo = [p for p in papers if p.key not in done]
        if todo:
            self.progress(f"literature: summarising {len(todo)} papers ({'llm' if asker else 'offline'})")
        for paper in todo:
            self.checkpoint()
            text = fulltexts.get(paper.key)
            if asker is not None and paper.key in top:
                summary = llm_summary(asker, paper, self.research.topic, relevance[paper.key], text)
            else:
                summary = offline_summary(paper, self.research.topic, relevance[paper.key], text)
            done[paper.key] = summary
            self._append_jsonl(SUMMARIES, summary.model_dump(mode="json"))
        return done

    # -- planning ------------------------------------------------------------------------------

    def roles(self) -> Roles:
        if self.client is None:
            return OfflineRoles()
        from controller.research.llm_roles import LLMRoles

        return LLMRoles(Asker(self.client))

    def plan(self, papers: list[Paper], summaries: dict[str, PaperSummary]) -> Plan:
        runs_dir = self.store.root.parent
        memory = read_memory(memory_path(runs_dir, self.config.memory))
        ctx = Context(
            topic=self.research.topic,
            idea=self.research.idea,
            task=self.task,
            dataset=self.config.dataset,
            papers=papers,
            summaries=summaries,
            memory=memory,
            pilot=pilot_for(self.task, self.config.dataset, memory, self.config.train_fraction),
            seeds=len(self.config.seeds),
            budget_s=max(self.config.budget_s - self.config.report_reserve_s, 0.0),
            parallel=self.config.parallel,
            rounds=self.research.rounds,
        )
        session = self.store.root / SESSION
        session.parent.mkdir(parents=True, exist_ok=True)
        # A resumed session is replayed from its start; the LLM cache answers at no cost, so a
        # replayed turn keeps what the same turn cost when it was first asked.
        spent = {
            _turn_identity(r): (r.get("tokens", 0), r.get("cost_usd", 0.0)) for r in self._read_jsonl(SESSION) or []
        }
        session.write_text("")

        def record(turn: SessionTurn) -> None:
            if (
                turn.origin == "llm"
                and turn.tokens == 0
                and (earlier := spent.get(_turn_identity(turn.model_dump(mode="json"))))
            ):
                turn = turn.model_copy(update={"tokens": earlier[0], "cost_usd": earlier[1]})
            self._append_jsonl(SESSION, turn.model_dump(mode="json"))
            self.progress(f"planning: round {turn.round} {turn.role}: {turn.content.splitlines()[0][:110]}")
            self.checkpoint()

        plan, verdicts = run_session(ctx, self.roles(), record)
        self.store.write(NOVELTY, NoveltyReport(papers=len(papers), ideas=verdicts))
        return plan

    # -- files --------------------------------------------------------------------------------

    def _read_jsonl(self, name: str) -> list[dict[str, Any]] | None:
        path = self.store.root / name
        if not path.is_file():
            return None
        records = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a crash: redone
                continue
        return records

    def _write_jsonl(self, name: str, records: list[dict[str, Any]]) -> None:
        path = self.store.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))

    def _append_jsonl(self, name: str, record: dict[str, Any]) -> None:
        path = self.store.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _turn_identity(record: dict[str, Any]) -> str:
    """A session turn without its cost: how a replayed turn finds its first asking."""
    keep = {k: record.get(k) for k in ("round", "role", "content", "cited", "hypotheses", "data")}
    return json.dumps(keep, sort_keys=True)
