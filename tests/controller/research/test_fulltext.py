"""Open-access full texts: fetched only when open, checked to be PDFs, text extracted."""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import pytest
from matplotlib.figure import Figure
from structlog.testing import capture_logs

from controller.research import fulltext
from controller.research.fulltext import fetch_open_access
from controller.research.http import PoliteClient, RetryPolicy
from controller.research.papers import Paper
from controller.research.sources.base import SourceUnavailableError
from tests.controller.research.fakeapi import Answer, FakeAPI

PDF_TEXT = "Residual learning eases training"


def tiny_pdf() -> bytes:
    """A real one-page PDF with a line of text (TrueType fonts, which pdftotext reads)."""
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        figure = Figure(figsize=(4, 1))
        figure.text(0.05, 0.5, PDF_TEXT)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="pdf")
    return buffer.getvalue()


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with FakeAPI() as fake:
        fake.route("/pdf/1512.03385", Answer(body=tiny_pdf(), content_type="application/pdf"))
        fake.route("/closed.pdf", Answer(body=tiny_pdf(), content_type="application/pdf"))
        fake.route("/landing.pdf", Answer(body="<html><body>Sign in</body></html>", content_type="text/html"))
        yield fake


@pytest.fixture
def client(tmp_path: Path) -> PoliteClient:
    retry = RetryPolicy(attempts=2, backoff_base_s=0.01, backoff_max_s=0.02)
    return PoliteClient("fulltext", min_interval_s=0, cache_dirs=[tmp_path / "cache"], retry=retry)


def paper(pdf_url: str, *, open_access: bool, license: str | None = None) -> Paper:
    return Paper(
        key="he2016deep",
        title="Deep Residual Learning for Image Recognition",
        authors=["Kaiming He"],
        year=2016,
        open_access=open_access,
        license=license,
        pdf_url=pdf_url,
    )


def test_an_open_access_pdf_is_fetched_with_its_licence_and_text(
    api: FakeAPI, client: PoliteClient, tmp_path: Path
) -> None:
    dest = tmp_path / "fulltext"
    result = fetch_open_access(paper(api.url("/pdf/1512.03385"), open_access=True, license="arxiv"), client, dest)
    assert result is not None
    assert (result.key, result.license, result.url) == ("he2016deep", "arxiv", api.url("/pdf/1512.03385"))
    assert result.path == dest / "he2016deep.pdf"
    body = result.path.read_bytes()
    assert body.startswith(b"%PDF")
    assert result.pdf_sha256 == hashlib.sha256(body).hexdigest() and result.pdf_bytes == len(body)
    if shutil.which("pdftotext"):
        assert result.text_path == dest / "he2016deep.txt"
        assert PDF_TEXT in " ".join(result.text_path.read_text().split())
        assert result.text_chars and result.text_chars >= len(PDF_TEXT)
    else:
        assert result.text_path is None and result.text_chars is None
    assert api.count("/pdf/1512.03385") == 1


def test_a_closed_papers_pdf_url_is_never_requested(api: FakeAPI, client: PoliteClient, tmp_path: Path) -> None:
    closed = paper(api.url("/closed.pdf"), open_access=False, license="cc-by")
    assert fetch_open_access(closed, client, tmp_path / "fulltext") is None
    assert api.count("/closed.pdf") == 0
    assert client.requests_sent == 0
    assert not (tmp_path / "fulltext").exists()


def test_an_html_body_is_refused_and_nothing_is_written(api: FakeAPI, client: PoliteClient, tmp_path: Path) -> None:
    landing = paper(api.url("/landing.pdf"), open_access=True)
    with pytest.raises(SourceUnavailableError, match=r"fulltext: .*landing\.pdf did not return the expected file type"):
        fetch_open_access(landing, client, tmp_path / "fulltext")
    assert not (tmp_path / "fulltext").exists()
    assert not any((tmp_path / "cache").glob("*")), "a refused body is not cached"


def test_a_pdf_over_the_size_cap_is_refused(api: FakeAPI, client: PoliteClient, tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailableError, match="more than 100 bytes"):
        fetch_open_access(paper(api.url("/pdf/1512.03385"), open_access=True), client, tmp_path, max_bytes=100)


def test_without_pdftotext_the_pdf_is_kept_and_the_reason_logged(
    api: FakeAPI, client: PoliteClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fulltext.shutil, "which", lambda name: None)
    with capture_logs() as logs:
        result = fetch_open_access(paper(api.url("/pdf/1512.03385"), open_access=True), client, tmp_path)
    assert result is not None and result.path.is_file()
    assert (result.text_path, result.text_chars) == (None, None)
    assert not (tmp_path / "he2016deep.txt").exists()
    assert any(e["event"] == "literature.fulltext_no_text" and "pdftotext" in e["reason"] for e in logs)
