"""The paper record every source returns, and how records from several sources become one.

A record is what `literature/papers.jsonl` holds, one per line: where it was found, its
identifiers, the bibliographic fields, the abstract when the source gives one, whether it
is open access (and under which licence), and a BibTeX entry built from the fields.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

SOURCE_NAMES = ("builtin", "corpus", "semantic_scholar", "arxiv", "openalex")
"""Every source a record can come from, in the order their fields win a merge."""
_NON_WORD = re.compile(r"[^a-z0-9]+")
_ARXIV_VERSION = re.compile(r"v\d+$")
_KEY_WORD = re.compile(r"[a-z]+")
STOP_WORDS = frozenset({"a", "an", "the", "on", "of", "for", "and", "in", "to", "with", "via", "by", "from"})
_BIB_UNSAFE = re.compile(r"[{}\\#%~^$&_]")


class PaperIds(BaseModel):
    """Identifiers by scheme; any may be missing."""

    model_config = ConfigDict(extra="forbid")

    doi: str | None = None
    """Lowercase, without the https://doi.org/ prefix."""
    arxiv: str | None = None
    """Without a version suffix, e.g. 1512.03385."""
    s2: str | None = None
    """Semantic Scholar paperId."""
    openalex: str | None = None
    """OpenAlex work id, e.g. W2194775991."""


class Paper(BaseModel):
    """One paper, as a source describes it (or as several sources do, once merged)."""

    model_config = ConfigDict(extra="forbid")

    key: str = ""
    """Citation key, `surname` + `year` + first title word (filled by `with_key`)."""
    sources: list[str] = Field(default_factory=list)
    """Every source that returned it, first finder first."""
    ids: PaperIds = Field(default_factory=PaperIds)
    title: str
    authors: list[str] = Field(default_factory=list)
    """Full names as the source gives them, e.g. "Kaiming He"."""
    year: int | None = None
    venue: str | None = None
    abstract: str | None = None
    url: str | None = None
    open_access: bool = False
    """The source says the full text may be read (arXiv always; OpenAlex `open_access.is_oa`)."""
    license: str | None = None
    """The licence of the open-access copy, as the source names it (e.g. cc-by, arxiv)."""
    pdf_url: str | None = None
    """Where an open-access PDF lies; never set for a closed paper."""
    summary: str | None = None
    """A summary written by this team (the built-in corpus only)."""
    tags: list[str] = Field(default_factory=list)
    bibtex: str = ""
    """A BibTeX entry made from the fields above (filled by `with_key`)."""

    def with_key(self, taken: set[str] | None = None) -> Paper:
        """This record with a unique citation key and its BibTeX entry."""
        key = self.key or citation_key(self)
        if taken is not None:
            base, number = key, 1
            while key in taken:
                number += 1
                key = f"{base}{chr(ord('a') + number - 2)}" if number <= 26 else f"{base}{number}"
            taken.add(key)
        return self.model_copy(update={"key": key, "bibtex": make_bibtex(self, key)})


def normalize_title(title: str) -> str:
    """Lowercase ASCII words joined by single spaces: how two sources' titles are compared."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return _NON_WORD.sub(" ", ascii_title.lower()).strip()


def normalize_doi(doi: str | None) -> str | None:
    if not doi:
        return None
    cleaned = doi.strip().lower()
    for prefix in ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "doi:"):
        cleaned = cleaned.removeprefix(prefix)
    return cleaned or None


def normalize_arxiv(arxiv_id: str | None) -> str | None:
    if not arxiv_id:
        return None
    cleaned = arxiv_id.strip().lower()
    for prefix in ("https://arxiv.org/abs/", "http://arxiv.org/abs/", "arxiv:"):
        cleaned = cleaned.removeprefix(prefix)
    return _ARXIV_VERSION.sub("", cleaned) or None


def surname(author: str) -> str:
    """The family name of "Given Family" or "Family, Given"."""
    if "," in author:
        return author.split(",", 1)[0].strip()
    parts = author.split()
    return parts[-1] if parts else ""


def citation_key(paper: Paper) -> str:
    """`he2016deep`: first author's surname, year, first significant title word (ASCII)."""
    first = normalize_title(surname(paper.authors[0])) if paper.authors else "anon"
    words = [w for w in _KEY_WORD.findall(normalize_title(paper.title)) if w not in STOP_WORDS]
    name = "".join(_KEY_WORD.findall(first)) or "anon"
    return f"{name}{paper.year or 'nd'}{words[0] if words else 'paper'}"


def _bib_value(text: str) -> str:
    """A field value BibTeX reads as plain text: unbalanced or command characters removed."""
    return " ".join(_BIB_UNSAFE.sub(" ", text).split())


def _bib_id(text: str) -> str:
    """An identifier (DOI, eprint) as BibTeX reads it: `_` and `.` kept, braces and backslashes out."""
    return "".join(text.replace("{", "").replace("}", "").replace("\\", "").split())


def make_bibtex(paper: Paper, key: str) -> str:
    """A BibTeX entry: @article with a venue, @misc with the arXiv eprint otherwise."""
    fields: list[tuple[str, str]] = [
        ("author", " and ".join(_bib_value(a) for a in paper.authors) or "Anonymous"),
        ("title", _bib_value(paper.title)),
    ]
    if paper.venue:
        fields.append(("journal", _bib_value(paper.venue)))
    if paper.year:
        fields.append(("year", str(paper.year)))
    if paper.ids.doi:
        fields.append(("doi", _bib_id(paper.ids.doi)))
    if paper.ids.arxiv:
        fields += [("eprint", _bib_id(paper.ids.arxiv)), ("archiveprefix", "arXiv")]
    if paper.url:
        fields.append(("url", _bib_id(paper.url)))
    kind = "article" if paper.venue else "misc"
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields)
    return f"@{kind}{{{key},\n{body}\n}}\n"


def identity(paper: Paper) -> list[str]:
    """The keys under which two records are the same paper: DOI, arXiv id, normalised title."""
    keys = []
    if paper.ids.doi:
        keys.append(f"doi:{paper.ids.doi}")
    if paper.ids.arxiv:
        keys.append(f"arxiv:{paper.ids.arxiv}")
    title = normalize_title(paper.title)
    if title:
        keys.append(f"title:{title}")
    return keys


def merge(first: Paper, other: Paper) -> Paper:
    """One record from two of the same paper: `first`'s fields win, `other` fills the gaps."""
    ids = PaperIds(
        **{scheme: getattr(first.ids, scheme) or getattr(other.ids, scheme) for scheme in PaperIds.model_fields}
    )
    open_access = first.open_access or other.open_access
    oa_source = first if first.open_access else other
    return first.model_copy(
        update={
            "sources": list(dict.fromkeys([*first.sources, *other.sources])),
            "ids": ids,
            "authors": first.authors or other.authors,
            "year": first.year or other.year,
            "venue": first.venue or other.venue,
            "abstract": first.abstract or other.abstract,
            "url": first.url or other.url,
            "open_access": open_access,
            "license": oa_source.license if open_access else None,
            "pdf_url": oa_source.pdf_url if open_access else None,
            "summary": first.summary or other.summary,
            "tags": list(dict.fromkeys([*first.tags, *other.tags])),
        }
    )


def dedupe(papers: Iterable[Paper]) -> list[Paper]:
    """Records of the same paper (by DOI, arXiv id or normalised title) merged into one, in
    first-seen order, each with a unique citation key and BibTeX entry."""
    merged: list[Paper] = []
    where: dict[str, int] = {}
    for paper in papers:
        keys = identity(paper)
        hits = sorted({where[k] for k in keys if k in where})
        if not hits:
            where.update(dict.fromkeys(keys, len(merged)))
            merged.append(paper)
            continue
        index = hits[0]
        merged[index] = merge(merged[index], paper)
        for other in hits[1:]:  # the new record joined two earlier ones: fold the later in
            merged[index] = merge(merged[index], merged[other])
        for k in identity(merged[index]):
            where[k] = index
        for k, v in list(where.items()):
            if v in hits[1:]:
                where[k] = index
    survivors = sorted({where[k] for k in where} | {i for i in range(len(merged)) if not identity(merged[i])})
    taken: set[str] = set()
    return [merged[i].with_key(taken) for i in survivors]
