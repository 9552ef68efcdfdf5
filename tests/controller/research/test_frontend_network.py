"""The literature stage against local servers speaking each API: sources that fail for good
are logged and the rest stand; a resumed front-end asks nothing it already has; closed
papers are never fetched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.llm import RetryPolicy
from controller.registry import ResearchConfig, RunConfig
from controller.research.frontend import FrontEnd
from controller.store import RunStore
from controller.tasks import load_task
from tests.controller.research.fakeapi import Answer, FakeAPI, refused_url
from tests.controller.research.test_fulltext import tiny_pdf

FIXTURES = Path(__file__).parent / "fixtures"
FAST = RetryPolicy(attempts=3, backoff_base_s=0.01, backoff_max_s=0.02, retry_after_max_s=2.0)
TOPIC = "data augmentation for small digit datasets"


def _works(api: FakeAPI) -> dict[str, object]:
    """Two OpenAlex works on the topic: one open access (its PDF on the fake), one closed."""

    def work(wid: str, title: str, oa: bool) -> dict[str, object]:
        location = {"pdf_url": api.url(f"/pdf/{wid}.pdf"), "license": "cc-by"} if oa else None
        abstract = {"Augmentation": [0], "helps": [1], "small": [2], "digit": [3], "datasets.": [4]} if oa else None
        return {
            "id": f"https://openalex.org/{wid}",
            "doi": f"https://doi.org/10.5555/{wid.lower()}",
            "display_name": title,
            "publication_year": 2024,
            "authorships": [{"author": {"display_name": "Ada Lovelace"}}],
            "primary_location": {"source": {"display_name": "Small Data Workshop"}},
            "abstract_inverted_index": abstract,
            "open_access": {"is_oa": oa},
            "best_oa_location": location,
        }

    return {
        "meta": {"count": 2},
        "results": [
            work("W1", "Shift augmentation for small digit datasets", True),
            work("W2", "Closed study of augmentation on tiny digit datasets", False),
        ],
    }


def _front_end(root: Path, sources: list[str], **research: object) -> FrontEnd:
    config = RunConfig(
        budget_s=600, report_reserve_s=60, research=ResearchConfig(topic=TOPIC, sources=sources, **research)
    )
    store = RunStore.open(root.parent, root.name) if (root / "run.json").is_file() else None
    if store is None:
        store, _ = RunStore.create(root.parent, config, root.name)
    return FrontEnd(store, config, load_task("digits"), None, lambda line: None, retry=FAST)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeAPI:
    with FakeAPI() as fake:
        fake.route("/s2/paper/search", Answer.file(FIXTURES / "s2_search.json", "application/json"))
        fake.route("/arxiv/api/query", Answer.file(FIXTURES / "arxiv_feed.xml", "application/atom+xml"))
        fake.route("/openalex/works", Answer(body=_works(fake)))
        fake.route("/pdf/W1.pdf", Answer(body=tiny_pdf(), content_type="application/pdf"))
        fake.route("/pdf/W2.pdf", Answer(body=tiny_pdf(), content_type="application/pdf"))
        details = {"paperId": "s2w2", "title": "Closed study of augmentation on tiny digit datasets",
                   "abstract": "Details from Semantic Scholar.", "externalIds": {"DOI": "10.5555/w2"}}  # fmt: skip
        fake.route("/s2/paper/DOI:10.5555/w2", Answer(body=details))
        monkeypatch.setenv("SANDLAB_S2_URL", fake.url("/s2"))
        monkeypatch.setenv("SANDLAB_ARXIV_URL", fake.url("/arxiv/api/query"))
        monkeypatch.setenv("SANDLAB_OPENALEX_URL", fake.url("/openalex"))
        monkeypatch.setenv("SANDLAB_LITERATURE_MIN_INTERVAL_S", "0")
        monkeypatch.setenv("SANDLAB_CACHE_DIR", str(tmp_path / "shared-cache"))
        yield fake


ALL = ["semantic_scholar", "arxiv", "openalex"]


def test_every_source_is_merged_and_only_open_access_is_fetched(api: FakeAPI, tmp_path: Path) -> None:
    front = _front_end(tmp_path / "runs" / "r1", ALL, fulltext=5)
    plan = front.run()
    root = front.store.root
    papers = [json.loads(line) for line in (root / "literature/papers.jsonl").read_text().splitlines()]
    found = {s for p in papers for s in p["sources"]}
    assert {"semantic_scholar", "arxiv", "openalex", "builtin"} <= found
    report = json.loads((root / "literature/sources.json").read_text())
    assert all(report[name]["status"] == "ok" and report[name]["requests"] >= 1 for name in ALL)
    fulltext = json.loads((root / "literature/fulltext.json").read_text())
    fetched = {item["key"]: item for item in fulltext["fetched"]}
    w1 = next(p for p in papers if p["ids"]["openalex"] == "W1")
    w2 = next(p for p in papers if p["ids"]["openalex"] == "W2")
    assert w1["key"] in fetched and fetched[w1["key"]]["license"] == "cc-by"
    assert w2["key"] in fulltext["closed_not_fetched"] and api.count("/pdf/W2.pdf") == 0
    # W2 came without an abstract: Semantic Scholar's paper details filled it in
    assert w2["abstract"] == "Details from Semantic Scholar." and "semantic_scholar" in w2["sources"]
    assert (root / fetched[w1["key"]]["path"]).read_bytes().startswith(b"%PDF")
    assert plan.hypotheses


def test_a_resumed_front_end_makes_no_request_twice(api: FakeAPI, tmp_path: Path) -> None:
    root = tmp_path / "runs" / "r1"
    _front_end(root, ALL, fulltext=5).run()
    asked = api.count()
    assert asked >= 4
    # A crash before the search stage wrote its file: the stage runs again, the cache answers.
    for name in ("papers.jsonl", "sources.json", "fulltext.json", "summaries.jsonl"):
        (root / "literature" / name).unlink()
    (root / "plan.json").unlink(missing_ok=True)
    missing = {r.path for r in api.unrouted}  # details S2 has no answer for (HTTP 404): nothing was fetched
    again = _front_end(root, ALL, fulltext=5)
    again.run()
    repeated = [r.path for r in api.requests[asked:]]
    assert all(path in missing for path in repeated), repeated  # nothing that was fetched is asked again
    report = json.loads((root / "literature/sources.json").read_text())
    assert all(report[name]["requests"] == 0 and report[name]["cache_hits"] >= 1 for name in ALL)


def test_sources_down_for_good_fall_back_to_the_corpus_and_the_built_in_set(
    api: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.fail("/s2/paper/search", 503)  # for good
    api.fail("/openalex/works", 429, headers={"Retry-After": "0"})
    monkeypatch.setenv("SANDLAB_ARXIV_URL", refused_url())  # nothing listens there
    corpus = tmp_path / "mine.jsonl"
    corpus.write_text(
        json.dumps({"title": "Tiny digit augmentation notes", "authors": ["Jo Bloggs"], "year": 2023}) + "\n"
    )
    lines: list[str] = []
    front = _front_end(tmp_path / "runs" / "r1", ALL, corpus=str(corpus))
    front.progress = lines.append
    plan = front.run()
    root = front.store.root
    report = json.loads((root / "literature/sources.json").read_text())
    assert [report[n]["status"] for n in ALL] == ["failed", "failed", "failed"]
    assert "503" in report["semantic_scholar"]["error"] and "429" in report["openalex"]["error"]
    assert report["semantic_scholar"]["requests"] == FAST.attempts
    assert report["arxiv"]["requests"] == 2 < FAST.attempts  # a host that refuses is down: no more tries
    assert report["builtin"]["status"] == "ok" and report["corpus"]["papers"] == 1
    assert any("failed: semantic_scholar" in line for line in lines)
    assert plan.hypotheses and (root / "planning/session.jsonl").is_file()


def test_a_429_with_retry_after_is_waited_out_and_the_stage_goes_on(api: FakeAPI, tmp_path: Path) -> None:
    api.fail("/openalex/works", 429, times=1, headers={"Retry-After": "1"})
    front = _front_end(tmp_path / "runs" / "r1", ["openalex"])
    front.search()
    first, second = api.for_path("/openalex/works")[:2]
    assert second.at - first.at >= 0.95
    report = json.loads((front.store.root / "literature/sources.json").read_text())
    assert report["openalex"] == {"status": "ok", "papers": 2, "requests": 2, "cache_hits": 0}
