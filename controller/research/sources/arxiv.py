"""arXiv's search API (an Atom feed), parsed with defusedxml.

Documented at https://info.arxiv.org/help/api/user-manual.html. arXiv's terms ask for
no more than one request every three seconds. Every arXiv paper may be read, so each
record is open access with its PDF link; the licence is the feed's when it names one,
else "arxiv" (arXiv's own non-exclusive distribution licence).

The query is the question's significant words in `all:( ... )`, which arXiv reads as
"any of these words", sorted by relevance: an AND of a long question's words would
usually match nothing, and the stage ranks what comes back anyway.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET  # type: ignore[import-untyped]
from defusedxml import DefusedXmlException
from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import override

from controller.research.http import DEFAULT_TIMEOUT_S, PoliteClient, RetryPolicy
from controller.research.papers import STOP_WORDS, Paper, PaperIds, normalize_arxiv, normalize_doi
from controller.research.sources.base import Source, SourceUnavailableError

NAME = "arxiv"
DEFAULT_BASE_URL = "https://export.arxiv.org/api/query"
BASE_URL_ENV = "SANDLAB_ARXIV_URL"
POLITE_INTERVAL_S = 3.0
"""arXiv API terms of use: one request every three seconds."""
MAX_LIMIT = 100
MAX_QUERY_WORDS = 12
DEFAULT_LICENSE = "arxiv"
ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV = "{http://arxiv.org/schemas/atom}"
ERROR_ID = "/api/errors"
"""arXiv reports a bad query as a feed whose single entry has an id under this path."""
_QUERY_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")
_ABS_ID = re.compile(r"arxiv\.org/abs/(.+)$")
_YEAR = re.compile(r"^(\d{4})")


class ArxivEntry(BaseModel):
    """One `<entry>` of the feed, as plain fields."""

    model_config = ConfigDict(extra="ignore")
    id: str
    title: str = ""
    summary: str | None = None
    published: str | None = None
    authors: list[str] = []
    doi: str | None = None
    journal_ref: str | None = None
    abs_url: str | None = None
    pdf_url: str | None = None
    license: str | None = None

    def to_paper(self) -> Paper | None:
        """Our record, or None for an entry without a usable id or title."""
        match = _ABS_ID.search(self.id)
        title = " ".join(self.title.split())
        if match is None or not title:
            return None
        year = _YEAR.match(self.published or "")
        return Paper(
            sources=[NAME],
            ids=PaperIds(arxiv=normalize_arxiv(match.group(1)), doi=normalize_doi(self.doi)),
            title=title,
            authors=self.authors,
            year=int(year.group(1)) if year else None,
            venue=" ".join(self.journal_ref.split()) if self.journal_ref else None,
            abstract=" ".join(self.summary.split()) if self.summary else None,
            url=self.abs_url or self.id,
            open_access=True,
            license=self.license or DEFAULT_LICENSE,
            pdf_url=self.pdf_url,
        )


def search_query(query: str) -> str | None:
    """`all:(w1 w2 …)` over the query's significant words, or None if it has none."""
    words = [w for w in _QUERY_WORD.findall(query) if w.lower() not in STOP_WORDS and w.upper() not in _OPERATORS]
    unique = list(dict.fromkeys(words))[:MAX_QUERY_WORDS]
    return f"all:({' '.join(unique)})" if unique else None


_OPERATORS = frozenset({"AND", "OR", "ANDNOT"})


def _text(element: Element, tag: str) -> str | None:
    found = element.find(tag)
    return found.text if found is not None and found.text else None


def parse_feed(xml: str | bytes) -> list[ArxivEntry]:
    """The entries of an arXiv Atom feed; an error feed raises SourceUnavailableError."""
    try:
        root = SafeET.fromstring(xml)
    except (ParseError, DefusedXmlException) as error:
        msg = f"{NAME}: the API answered with a body that is not a safe Atom feed ({error})"
        raise SourceUnavailableError(msg) from error
    entries: list[ArxivEntry] = []
    for node in root.iter(f"{ATOM}entry"):
        entry_id = _text(node, f"{ATOM}id") or ""
        if ERROR_ID in entry_id:
            reason = " ".join((_text(node, f"{ATOM}summary") or "unknown error").split())
            msg = f"{NAME}: the API rejected the query ({reason})"
            raise SourceUnavailableError(msg)
        links = node.findall(f"{ATOM}link")
        pdf = next((ln.get("href") for ln in links if ln.get("title") == "pdf"), None)
        abs_url = next((ln.get("href") for ln in links if ln.get("rel") == "alternate"), None)
        license_link = next((ln.get("href") for ln in links if ln.get("rel") == "license"), None)
        try:
            entries.append(
                ArxivEntry(
                    id=entry_id,
                    title=_text(node, f"{ATOM}title") or "",
                    summary=_text(node, f"{ATOM}summary"),
                    published=_text(node, f"{ATOM}published"),
                    authors=[
                        " ".join(name.split())
                        for author in node.findall(f"{ATOM}author")
                        if (name := _text(author, f"{ATOM}name"))
                    ],
                    doi=_text(node, f"{ARXIV}doi"),
                    journal_ref=_text(node, f"{ARXIV}journal_ref"),
                    abs_url=abs_url,
                    pdf_url=pdf,
                    license=_text(node, f"{ARXIV}license") or license_link,
                )
            )
        except ValidationError as error:
            msg = f"{NAME}: an entry of the feed has an unexpected shape ({error.errors()[0]['msg']})"
            raise SourceUnavailableError(msg) from error
    return entries


def _check_feed(body: bytes, url: str) -> str | None:
    """Why a body is not a well-formed, error-free feed (so it is refused, never cached)."""
    try:
        parse_feed(body)
    except SourceUnavailableError as error:
        return str(error).removeprefix(f"{NAME}: ")
    return None


class Arxiv(Source):
    """Relevance search over arXiv's Atom API."""

    name = NAME

    def __init__(
        self,
        *,
        cache_dirs: Sequence[Path] = (),
        base_url: str | None = None,
        min_interval_s: float = POLITE_INTERVAL_S,
        retry: RetryPolicy | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        self.client = PoliteClient(
            NAME, min_interval_s=min_interval_s, cache_dirs=cache_dirs, retry=retry, timeout_s=timeout_s
        )

    @override
    def search(self, query: str, limit: int) -> list[Paper]:
        expression = search_query(query)
        if expression is None or limit <= 0:
            return []
        params: dict[str, str | int] = {
            "search_query": expression,
            "start": 0,
            "max_results": min(limit, MAX_LIMIT),
            "sortBy": "relevance",
            "sortOrder": "descending",
        }
        feed = self.client.get_text(self.base_url, params, check=_check_feed)
        papers = [entry.to_paper() for entry in parse_feed(feed)]
        return [p for p in papers if p is not None][:limit]

    def close(self) -> None:
        self.client.close()
