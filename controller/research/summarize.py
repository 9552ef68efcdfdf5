"""Summaries and critiques of the retrieved papers: structured, offline or through the LLM.

Offline, a summary is extracted from the paper's own text (the built-in corpus's labelled
summary, or the abstract's sentences picked by cue words) and its relevance is the TF-IDF
cosine between the topic and the paper. With an LLM, the cached, budgeted client writes it
and the reply is validated (re-asked when malformed); the lexical relevance is kept beside
the model's, so a flattering model cannot hide an unrelated paper.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.research.asker import Asker
from controller.research.papers import Paper
from controller.research.text import STOP_WORDS, sentences, similarity, stem, terms

_LABELLED = re.compile(r"(Task|Method|Result|Limitations?):\s*(.*?)(?=\s*(?:Task|Method|Result|Limitations?):|$)", re.S)
_METHOD_CUES = ("we propose", "we introduce", "we present", "we describe", "we show how", "method", "approach")
_RESULT_CUES = ("%", "outperform", "improv", "achiev", "state-of-the-art", "error", "accuracy", "results")
_LIMIT_CUES = ("however", "limitation", "only", "but ", "fails", "requires", "costly", "expensive")
_TOKEN = re.compile(r"[a-z][a-z0-9\-]{2,}")
NOT_STATED = "not stated in the text available"


class PaperSummary(BaseModel):
    """summaries.jsonl: one line per paper."""

    model_config = ConfigDict(extra="forbid")

    key: str
    title: str
    task: str
    method: str
    result: str
    limitations: str
    relevance: float = Field(ge=0, le=1)
    """How relevant to the topic: the model's judgement with an LLM, the lexical score offline."""
    lexical_relevance: float = Field(ge=0, le=1)
    """TF-IDF cosine between the topic and the paper's text (always computed)."""
    critique: str
    origin: Literal["offline", "llm"]
    based_on: str
    """summary (the built-in corpus's), abstract, fulltext (open access only) or title."""
    tokens: int = 0
    cost_usd: float = 0.0


class SummaryReply(BaseModel):
    """What the model returns for one paper."""

    model_config = ConfigDict(extra="ignore")

    task: str = Field(min_length=1)
    method: str = Field(min_length=1)
    result: str = Field(min_length=1)
    limitations: str = Field(min_length=1)
    relevance: float = Field(ge=0, le=1)
    critique: str = Field(min_length=1)


def paper_text(
    paper: Paper, fulltext: str | None = None
) -> tuple[str, Literal["summary", "abstract", "fulltext", "title"]]:
    """The text a summary rests on, and which it is."""
    if paper.summary:
        return paper.summary, "summary"
    if paper.abstract:
        return paper.abstract, "abstract"
    if fulltext:
        return fulltext[:6000], "fulltext"
    return paper.title, "title"


def lexical_relevance(topic: str, papers: Sequence[Paper]) -> list[float]:
    """TF-IDF cosine of the topic with each paper's title, abstract, summary and tags."""
    docs = [" ".join(filter(None, [p.title, p.abstract, p.summary, " ".join(p.tags)])) for p in papers]
    return [min(1.0, max(0.0, s)) for s in similarity([topic], docs)[0]] if docs else []


def _pick(parts: list[str], cues: Sequence[str], taken: set[int]) -> str:
    for index, sentence in enumerate(parts):
        lowered = sentence.lower()
        if index not in taken and any(cue in lowered for cue in cues):
            taken.add(index)
            return sentence
    return NOT_STATED


def extract(text: str) -> tuple[str, str, str, str]:
    """(task, method, result, limitations) from a labelled summary or an abstract."""
    labelled = {m.group(1).lower().rstrip("s"): " ".join(m.group(2).split()) for m in _LABELLED.finditer(text)}
    if {"task", "method", "result"} <= labelled.keys():
        return labelled["task"], labelled["method"], labelled["result"], labelled.get("limitation", NOT_STATED)
    parts = sentences(text)
    if not parts:
        return NOT_STATED, NOT_STATED, NOT_STATED, NOT_STATED
    taken = {0}
    method = _pick(parts, _METHOD_CUES, taken)
    result = _pick(parts, _RESULT_CUES, taken)
    limitations = _pick(parts, _LIMIT_CUES, taken)
    return parts[0], method, result, limitations


def shared_terms(topic: str, text: str, limit: int = 4) -> list[str]:
    """Words of the topic the paper also uses (what the critique points to)."""
    stems = set(terms(text))
    seen: list[str] = []
    for word in _TOKEN.findall(topic.lower()):
        if word not in STOP_WORDS and word not in seen and stem(word) in stems:
            seen.append(word)
    return seen[:limit]


def offline_summary(paper: Paper, topic: str, relevance: float, fulltext: str | None = None) -> PaperSummary:
    """The extractive summary and a templated critique of relevance."""
    text, based_on = paper_text(paper, fulltext)
    task, method, result, limitations = (
        extract(text) if based_on != "title" else (paper.title, NOT_STATED, NOT_STATED, NOT_STATED)
    )
    shared = shared_terms(topic, f"{paper.title} {text} {' '.join(paper.tags)}")
    band = "highly relevant" if relevance >= 0.25 else "relevant" if relevance >= 0.1 else "marginal"
    overlap = f"it shares {', '.join(shared)} with the topic" if shared else "it shares no key term with the topic"
    caveat = "" if based_on != "title" else "; only the title was available, so the summary is thin"
    critique = f"{band.capitalize()} (lexical {relevance:.2f}): {overlap}{caveat}."
    return PaperSummary(
        key=paper.key,
        title=paper.title,
        task=task,
        method=method,
        result=result,
        limitations=limitations,
        relevance=relevance,
        lexical_relevance=relevance,
        critique=critique,
        origin="offline",
        based_on=based_on,
    )


def llm_summary(asker: Asker, paper: Paper, topic: str, relevance: float, fulltext: str | None = None) -> PaperSummary:
    """The model's structured summary and critique, with what it cost."""
    text, based_on = paper_text(paper, fulltext)
    reply, spent = asker.ask(
        "research_summary.j2", SummaryReply, topic=topic, paper=paper, text=text, based_on=based_on
    )
    return PaperSummary(
        key=paper.key,
        title=paper.title,
        task=reply.task.strip(),
        method=reply.method.strip(),
        result=reply.result.strip(),
        limitations=reply.limitations.strip(),
        relevance=reply.relevance,
        lexical_relevance=relevance,
        critique=reply.critique.strip(),
        origin="llm",
        based_on=based_on,
        tokens=spent.tokens,
        cost_usd=spent.cost_usd,
    )
