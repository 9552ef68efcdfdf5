"""Open-access full texts: download a paper's PDF only where it may be read, keep its text.

Only a paper its source marks open access (arXiv, OpenAlex `is_oa`, S2 `isOpenAccess`)
and that carries a `pdf_url` is fetched; a closed paper's URL is never requested. The
PDF lands in `<dest>/<key>.pdf` and, when poppler's `pdftotext` is installed, its text in
`<key>.txt` beside it. Without pdftotext the PDF is kept and the text left out.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import structlog
from pydantic import BaseModel, ConfigDict

from controller.research.http import PoliteClient
from controller.research.papers import Paper, citation_key

log = structlog.get_logger(__name__)

MAX_PDF_BYTES = 20_000_000
PDF_MAGIC = b"%PDF-"
PDFTOTEXT_TIMEOUT_S = 120.0
"""A scanned 300-page book takes seconds; a minute or two means pdftotext is stuck."""
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.+-]")


class FullText(BaseModel):
    """One downloaded open-access paper."""

    model_config = ConfigDict(extra="forbid")
    key: str
    """The paper's citation key; also the file stem."""
    url: str
    """Where the PDF came from."""
    license: str | None
    """The licence the source gave for the open-access copy (e.g. cc-by, arxiv)."""
    path: Path
    """The PDF."""
    pdf_sha256: str
    pdf_bytes: int
    text_path: Path | None = None
    """The extracted text; None when pdftotext is missing or failed (the reason is logged)."""
    text_chars: int | None = None


def fetch_open_access(
    paper: Paper, client: PoliteClient, dest_dir: Path, *, max_bytes: int = MAX_PDF_BYTES
) -> FullText | None:
    """The paper's open-access PDF and text, or None if it is not open access (no request).

    Raises SourceUnavailableError when the download fails, is too large, or is not a PDF
    (a publisher's HTML landing page, say); nothing is written then.
    """
    if not (paper.open_access and paper.pdf_url):
        log.info("literature.fulltext_skipped", title=paper.title, reason="not open access or no PDF link")
        return None
    key = _UNSAFE_NAME.sub("_", paper.key or citation_key(paper))
    body = client.get_bytes(paper.pdf_url, max_bytes=max_bytes, magic=PDF_MAGIC)
    dest_dir.mkdir(parents=True, exist_ok=True)
    pdf_path = dest_dir / f"{key}.pdf"
    _write_atomic(pdf_path, body)
    text_path = extract_text(pdf_path, dest_dir / f"{key}.txt")
    text_chars = len(text_path.read_text(encoding="utf-8", errors="replace")) if text_path else None
    log.info("literature.fulltext_saved", key=key, license=paper.license, bytes=len(body), text_chars=text_chars)
    return FullText(
        key=key,
        url=paper.pdf_url,
        license=paper.license,
        path=pdf_path,
        pdf_sha256=hashlib.sha256(body).hexdigest(),
        pdf_bytes=len(body),
        text_path=text_path,
        text_chars=text_chars,
    )


def extract_text(pdf_path: Path, text_path: Path) -> Path | None:
    """`text_path` filled by pdftotext (UTF-8, reading order), or None with the reason logged."""
    tool = shutil.which("pdftotext")
    if tool is None:
        log.warning("literature.fulltext_no_text", pdf=str(pdf_path), reason="pdftotext not installed (poppler-utils)")
        return None
    partial = text_path.with_name(f".{text_path.name}.tmp")
    try:
        result = subprocess.run(
            [tool, "-enc", "UTF-8", "-q", str(pdf_path), str(partial)],
            capture_output=True,
            text=True,
            timeout=PDFTOTEXT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        log.warning(
            "literature.fulltext_no_text", pdf=str(pdf_path), reason=f"pdftotext ran over {PDFTOTEXT_TIMEOUT_S}s"
        )
        return None
    if result.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        reason = f"pdftotext exit {result.returncode}: {result.stderr.strip()[:200]}"
        log.warning("literature.fulltext_no_text", pdf=str(pdf_path), reason=reason)
        return None
    partial.replace(text_path)
    return text_path


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
