"""Each source against a local server serving fixtures shaped like the real API's answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.errors import BadInputError
from controller.research.http import RetryPolicy
from controller.research.sources import (
    Arxiv,
    LocalCorpus,
    OpenAlex,
    SemanticScholar,
    SourceUnavailableError,
    builtin_corpus,
    network_sources,
)
from controller.research.sources.semantic_scholar import FIELDS
from tests.controller.research.fakeapi import Answer, FakeAPI

FIXTURES = Path(__file__).parent / "fixtures"
FAST_RETRY = RetryPolicy(attempts=2, backoff_base_s=0.01, backoff_max_s=0.02)


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with FakeAPI() as fake:
        fake.route("/paper/search", Answer.file(FIXTURES / "s2_search.json", "application/json"))
        fake.route("/paper/ARXIV:1706.03762", Answer.file(FIXTURES / "s2_paper.json", "application/json"))
        fake.route("/api/query", Answer.file(FIXTURES / "arxiv_feed.xml", "application/atom+xml; charset=UTF-8"))
        fake.route("/works", Answer.file(FIXTURES / "openalex_works.json", "application/json"))
        yield fake


@pytest.fixture(autouse=True)
def no_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("S2_API_KEY", "OPENALEX_EMAIL", "SANDLAB_S2_URL", "SANDLAB_ARXIV_URL", "SANDLAB_OPENALEX_URL"):
        monkeypatch.delenv(name, raising=False)


def test_semantic_scholar_search_parses_the_documented_answer(api: FakeAPI, tmp_path: Path) -> None:
    source = SemanticScholar(base_url=api.url(), cache_dirs=[tmp_path], min_interval_s=0)
    papers = source.search("deep residual learning", 5)
    assert [p.title for p in papers] == [
        "Deep Residual Learning for Image Recognition",
        "Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift",
    ], "the untitled entry is dropped, whitespace collapsed"
    resnet, batchnorm = papers
    assert resnet.sources == ["semantic_scholar"]
    assert resnet.ids.doi == "10.1109/cvpr.2016.90"
    assert resnet.ids.arxiv == "1512.03385"
    assert resnet.ids.s2 == "2c03df8b48bf3fa39054345bafabfeff15bfd11d"
    assert resnet.authors == ["Kaiming He", "X. Zhang", "Shaoqing Ren", "Jian Sun"]
    assert (resnet.year, resnet.venue) == (2015, "Computer Vision and Pattern Recognition")
    assert resnet.abstract and resnet.abstract.startswith("Deeper neural networks")
    assert (resnet.open_access, resnet.license, resnet.pdf_url) == (True, "arxiv", "https://arxiv.org/pdf/1512.03385")
    assert (batchnorm.open_access, batchnorm.pdf_url, batchnorm.license) == (False, None, None), "closed: no PDF link"
    assert batchnorm.venue is None and batchnorm.abstract is None
    request = api.for_path("/paper/search")[0]
    assert request.query == {"query": "deep residual learning", "limit": "5", "fields": FIELDS}
    assert "x-api-key" not in request.headers


def test_semantic_scholar_details_by_arxiv_id(api: FakeAPI, tmp_path: Path) -> None:
    paper = SemanticScholar(base_url=api.url(), cache_dirs=[tmp_path], min_interval_s=0).details("ARXIV:1706.03762")
    assert paper.title == "Attention is All you Need"
    assert paper.ids.arxiv == "1706.03762" and paper.ids.doi is None
    assert (paper.open_access, paper.pdf_url) == (False, None)
    assert api.for_path("/paper/ARXIV:1706.03762")[0].query == {"fields": FIELDS}


def test_semantic_scholar_key_and_url_come_from_the_environment(
    api: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SemanticScholar().client.min_interval_s == 1.0, "anonymous: one request a second"
    monkeypatch.setenv("S2_API_KEY", "s2-secret")
    monkeypatch.setenv("SANDLAB_S2_URL", api.url())
    source = SemanticScholar(cache_dirs=[tmp_path])
    assert source.client.min_interval_s == 0.1
    source.search("resnet", 3)
    assert api.for_path("/paper/search")[0].headers["x-api-key"] == "s2-secret"
    assert all(b"s2-secret" not in f.read_bytes() for f in tmp_path.iterdir())


def test_arxiv_search_parses_the_atom_feed(api: FakeAPI, tmp_path: Path) -> None:
    source = Arxiv(base_url=api.url("/api/query"), cache_dirs=[tmp_path], min_interval_s=0)
    papers = source.search("Deep residual learning for image recognition?", 3)
    assert [p.ids.arxiv for p in papers] == ["1512.03385", "1603.05027", "hep-th/9901001"]
    resnet, identity, _ = papers
    assert resnet.title == "Deep Residual Learning for Image Recognition"
    assert resnet.authors == ["Kaiming He", "Xiangyu Zhang", "Shaoqing Ren", "Jian Sun"]
    assert (resnet.year, resnet.venue, resnet.ids.doi) == (2015, "CVPR 2016", "10.1109/cvpr.2016.90")
    assert resnet.abstract == (
        "Deeper neural networks are more difficult to train. We present a residual learning framework "
        "to ease the training of networks that are substantially deeper than those used previously."
    )
    assert (resnet.open_access, resnet.license) == (True, "arxiv")
    assert resnet.pdf_url == "http://arxiv.org/pdf/1512.03385v1"
    assert resnet.url == "http://arxiv.org/abs/1512.03385v1"
    assert identity.license == "http://creativecommons.org/licenses/by/4.0/"
    assert identity.venue is None and identity.year == 2016
    assert all(p.sources == ["arxiv"] for p in papers)
    query = api.for_path("/api/query")[0].query
    assert query["search_query"] == "all:(Deep residual learning image recognition)"
    assert (query["start"], query["max_results"], query["sortBy"]) == ("0", "3", "relevance")


def test_arxiv_error_feed_is_refused_and_not_cached(api: FakeAPI, tmp_path: Path) -> None:
    api.route("/api/query", Answer.file(FIXTURES / "arxiv_error.xml", "application/atom+xml"))
    source = Arxiv(base_url=api.url("/api/query"), cache_dirs=[tmp_path], min_interval_s=0)
    for _ in range(2):
        with pytest.raises(SourceUnavailableError, match="incorrect id format"):
            source.search("resnet", 3)
    assert api.count("/api/query") == 2


def test_arxiv_refuses_an_xml_entity_bomb(api: FakeAPI, tmp_path: Path) -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        '<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>http://arxiv.org/abs/1.1</id><title>&b;</title></entry></feed>'
    )
    api.route("/api/query", Answer(body=bomb, content_type="application/atom+xml"))
    source = Arxiv(base_url=api.url("/api/query"), cache_dirs=[tmp_path], min_interval_s=0)
    with pytest.raises(SourceUnavailableError, match="not a safe Atom feed"):
        source.search("resnet", 3)


def test_arxiv_is_polite_by_default_and_skips_empty_queries(api: FakeAPI) -> None:
    source = Arxiv(base_url=api.url("/api/query"))
    assert source.client.min_interval_s == 3.0
    assert source.search("the of and", 5) == []
    assert api.count() == 0


def test_openalex_search_rebuilds_abstracts_and_reads_open_access(
    api: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENALEX_EMAIL", "me@mailto-secret.invalid")
    source = OpenAlex(base_url=api.url(), cache_dirs=[tmp_path], min_interval_s=0)
    resnet, batchnorm, attention = source.search("residual learning", 3)
    assert resnet.ids.openalex == "W2194775991"
    assert (resnet.ids.doi, resnet.ids.arxiv) == ("10.1109/cvpr.2016.90", "1512.03385")
    assert resnet.authors == ["Kaiming He", "Xiangyu Zhang", "Jian Sun"]
    assert resnet.venue == "2016 IEEE Conference on Computer Vision and Pattern Recognition (CVPR)"
    assert resnet.abstract == (
        "Deeper neural networks are more difficult to train. We present a residual framework to ease the networks training."
    )
    assert (resnet.open_access, resnet.license, resnet.pdf_url) == (True, "cc-by", "https://arxiv.org/pdf/1512.03385")
    assert resnet.url == "https://doi.org/10.1109/cvpr.2016.90"
    assert (batchnorm.open_access, batchnorm.license, batchnorm.pdf_url) == (False, None, None)
    assert batchnorm.abstract is None and batchnorm.ids.arxiv is None
    assert attention.ids.arxiv == "1706.03762", "from arXiv's DataCite DOI"
    assert attention.abstract is None
    assert all(p.sources == ["openalex"] for p in (resnet, batchnorm, attention))
    request = api.for_path("/works")[0]
    assert request.query == {"search": "residual learning", "per-page": "3", "mailto": "me@mailto-secret.invalid"}
    assert all(b"mailto-secret" not in f.read_bytes() for f in tmp_path.iterdir())


def test_an_answer_of_the_wrong_shape_is_refused(api: FakeAPI, tmp_path: Path) -> None:
    api.route("/works", Answer(body={"results": [{"publication_year": "last spring"}]}))
    source = OpenAlex(base_url=api.url(), cache_dirs=[tmp_path], min_interval_s=0)
    with pytest.raises(SourceUnavailableError, match=r"openalex: .* unexpected shape \(results\.0\.publication_year"):
        source.search("x", 3)
    assert not list(tmp_path.iterdir())


def test_a_source_that_stays_down_raises_source_unavailable(api: FakeAPI, tmp_path: Path) -> None:
    api.fail("/works", 503)
    source = OpenAlex(base_url=api.url(), cache_dirs=[tmp_path], min_interval_s=0, retry=FAST_RETRY)
    with pytest.raises(SourceUnavailableError, match="openalex: HTTP 503"):
        source.search("x", 3)
    assert api.count("/works") == FAST_RETRY.attempts


def test_network_sources_builds_by_name_and_answers_from_the_cache(api: FakeAPI, tmp_path: Path) -> None:
    urls = {"semantic_scholar": api.url(), "arxiv": api.url("/api/query"), "openalex": api.url()}
    names = ["openalex", "arxiv", "semantic_scholar", "arxiv"]
    first = network_sources(names, cache_dirs=[tmp_path], base_urls=urls, min_interval_s=0)
    assert [s.name for s in first] == ["openalex", "arxiv", "semantic_scholar"]
    found = {s.name: len(s.search("residual learning", 2)) for s in first}
    assert found == {"openalex": 2, "arxiv": 2, "semantic_scholar": 2}
    again = network_sources(names, cache_dirs=[tmp_path], base_urls=urls, min_interval_s=0)
    assert all(s.search("residual learning", 2) for s in again)
    assert sum(s.client.requests_sent for s in again) == 0
    assert api.count() == 3
    for source in [*first, *again]:
        source.close()


def test_network_sources_rejects_an_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="unknown literature source 'scholar'; choose from semantic_scholar"):
        network_sources(["scholar"], cache_dirs=[tmp_path])


def test_a_bibtex_corpus_is_read_and_searched(tmp_path: Path) -> None:
    corpus = LocalCorpus(FIXTURES / "corpus.bib")
    resnet, dropout, autoaugment = corpus.papers
    assert resnet.key == "he2016deep"
    assert resnet.title == "Deep Residual Learning for Image Recognition"
    assert resnet.authors == ["Kaiming He", "Xiangyu Zhang", "Shaoqing Ren", "Jian Sun"]
    assert (resnet.year, resnet.ids.doi, resnet.tags) == (2016, "10.1109/cvpr.2016.90", ["architecture", "residual"])
    assert resnet.venue and resnet.venue.startswith("Proceedings of the IEEE Conference")
    assert dropout.year == 2014 and dropout.venue == "Journal of Machine Learning Research"
    assert autoaugment.ids.arxiv == "1805.09501"
    assert all(p.sources == ["corpus"] for p in corpus.papers)
    hits = corpus.search("residual networks for image recognition", 5)
    assert hits[0].key == "he2016deep"
    assert corpus.search("quantum chromodynamics lattice", 5) == [], "no shared word: nothing comes back"


def test_a_jsonl_corpus_and_a_folder_of_corpora(tmp_path: Path) -> None:
    corpus = LocalCorpus(FIXTURES / "corpus.jsonl", name="mine")
    assert [p.sources for p in corpus.papers] == [["mine"]] * 3, "the record's own sources are replaced"
    mixup, inception, _ = corpus.papers
    assert mixup.ids.arxiv == "1710.09412" and inception.ids.doi == "10.1109/cvpr.2016.308"
    assert corpus.search("label smoothing", 1)[0].title.startswith("Rethinking the Inception")
    assert corpus.search("augmentation", 1)[0].title.startswith("mixup"), "tags and summaries are searched"
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("corpus.bib", "corpus.jsonl"):
        (folder / name).write_bytes((FIXTURES / name).read_bytes())
    (folder / "README.md").write_text("not a corpus file; ignored")
    assert len(LocalCorpus(folder).papers) == 6


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.bib", "@article{x, title={Unclosed\n", r"broken\.bib:1: BibTeX entry could not be parsed"),
        ("untitled.bib", "@article{x, author={A B}, year={2020}}\n", r"untitled\.bib:1: BibTeX entry x has no title"),
        ("bad.jsonl", '{"title": "ok"}\n{"title": \n', r"bad\.jsonl:2: not valid JSON"),
        ("list.jsonl", '["a title"]\n', r"list\.jsonl:1: not a JSON object"),
        ("untitled.jsonl", '{"year": 2020}\n', r"untitled\.jsonl:1: not a Paper record \(title: Field required\)"),
        ("typo.jsonl", '{"title": "x", "yeer": 2020}\n', r"typo\.jsonl:1: not a Paper record \(yeer: Extra inputs"),
        ("empty.jsonl", "\n", r"empty\.jsonl holds no papers"),
        ("notes.txt", "hello", r"notes\.txt is neither \.bib nor \.jsonl"),
    ],
)
def test_a_bad_corpus_file_is_a_one_line_bad_input_error(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(BadInputError, match=message) as raised:
        LocalCorpus(path)
    assert "\n" not in str(raised.value)


def test_a_missing_or_empty_corpus_folder_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        LocalCorpus(tmp_path / "nowhere.bib")
    with pytest.raises(BadInputError, match=r"holds no \.bib or \.jsonl file"):
        LocalCorpus(tmp_path)


def test_the_builtin_corpus_loads_from_the_package() -> None:
    corpus = builtin_corpus()
    assert corpus.name == "builtin"
    assert len(corpus.papers) >= 20
    assert all(p.sources == ["builtin"] and p.title for p in corpus.papers)
    hits = corpus.search("data augmentation for small image datasets", 5)
    assert hits and all(p.sources == ["builtin"] for p in hits)
