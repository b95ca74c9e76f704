import shutil
import socket
import threading
import time

import pytest

from genq.index import build_index
from genq.search import Searcher

from .conftest import write_jsonl

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def searcher(tmp_path_factory, tiny_encoder_dir):
    tmp = tmp_path_factory.mktemp("serve")
    passages = write_jsonl(tmp / "passages.jsonl", [
        {"_id": "chain", "title": "Chain care", "text": "clean the chain and oil it when it makes noise"},
        {"_id": "brake", "title": "Brake pads", "text": "replace worn brake pad when the lever feels loose"},
        {"_id": "tyre", "title": "Tyre pressure", "text": "inflate the tyre with a pump to the right pressure"},
        {"_id": "gear", "title": "Gear shifting", "text": "adjust the cable when the gear does not shift"},
    ])
    build_index(passages, str(tiny_encoder_dir), tmp / "index", dtype="float32", progress=False)
    return Searcher.load(tmp / "index", dtype="float32")


@pytest.fixture(scope="module")
def client(searcher):
    from fastapi.testclient import TestClient

    from genq.serve import create_app

    return TestClient(create_app(searcher, max_k=50, max_query_chars=100, max_batch=4))


def test_health_info_and_page(client):
    assert client.get("/health").json() == {"status": "ok", "passages": 4}
    info = client.get("/info").json()
    assert info["passages"] == 4 and info["dimension"] == 32 and info["limits"]["max_k"] == 50
    # names, not absolute paths of the machine serving it
    assert not info["model"].startswith("/") and not info["index"].startswith("/")
    page = client.get("/")
    assert page.status_code == 200 and "<form" in page.text


def test_get_search(client):
    response = client.get("/search", params={"q": "oil the chain", "k": 2})
    body = response.json()
    assert response.status_code == 200 and len(body["hits"]) == 2 and body["took_ms"] >= 0
    # hybrid by default: each hit says where dense search and BM25 put it (a passage one side missed lacks that side)
    assert {"rank", "id", "score", "title", "text", "doc_id", "dense_score", "dense_rank"} <= set(body["hits"][0])
    assert set(body["hits"][0]) <= {"rank", "id", "score", "title", "text", "doc_id", "dense_score", "dense_rank",
                                    "bm25_score", "bm25_rank"}


def test_post_batch(client):
    body = client.post("/search", json={"queries": ["chain", "brake pad"], "k": 3}).json()
    assert [r["query"] for r in body["results"]] == ["chain", "brake pad"]
    assert all(len(r["hits"]) == 3 for r in body["results"])
    single = client.post("/search", json={"query": "tyre"}).json()
    assert len(single["results"]) == 1


@pytest.mark.parametrize("method,kwargs,status,fragment", [
    ("get", {"params": {"q": ""}}, 400, "empty"),
    ("get", {"params": {"q": "   "}}, 400, "empty"),
    ("get", {"params": {"q": "x" * 101}}, 413, "longer than"),
    ("get", {"params": {"q": "chain", "k": 0}}, 400, "between 1 and 50"),
    ("get", {"params": {"q": "chain", "k": 51}}, 400, "between 1 and 50"),
    ("get", {"params": {"q": "chain", "k": "ten"}}, 400, "integer"),
    ("get", {"params": {"q": "chain", "k": "5_0"}}, 400, "ASCII digits"),
    ("get", {"params": {"q": "chain", "k": "\u0665"}}, 400, "ASCII digits"),
    ("get", {"url": "/search?q=%00"}, 400, "NUL"),
    ("get", {"url": "/search?q=chain%ff%fe%c0"}, 400, "not valid UTF-8"),
    ("post", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ("post", {"json": ["chain"]}, 400, "JSON object"),
    ("post", {"json": {"queries": []}}, 400, "non-empty list"),
    ("post", {"json": {"queries": "chain"}}, 400, "non-empty list"),
    ("post", {"json": {"queries": ["a", "b", "c", "d", "e"]}}, 413, "at most 4"),
    ("post", {"json": {"queries": ["chain", 5]}}, 400, "string"),
    ("post", {"json": {"query": "chain", "k": "5"}}, 400, "integer"),
    ("post", {"json": {"query": "chain", "k": True}}, 400, "integer"),
    ("post", {"json": {"other": 1}}, 400, "needs"),
    ("get", {"url": "/nope"}, 404, "Not Found"),
])
def test_bad_requests_get_4xx_json(client, method, kwargs, status, fragment):
    url = kwargs.pop("url", "/search")
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status
    assert fragment in response.json()["error"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(searcher):
    import uvicorn

    from genq.serve import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(searcher), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_web_page_in_headless_chromium(live_server, tmp_path):
    screenshot_dir = tmp_path
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            page.goto(live_server + "/")
            page.wait_for_function("document.getElementById('info').textContent.includes('4 passages')")
            page.fill("#q", "oil the chain")
            page.click("#go")
            page.wait_for_selector("li.hit")
            hits = page.locator("li.hit")
            assert hits.count() == 4
            first = hits.nth(0)
            assert first.locator(".title").inner_text().startswith("1. ")
            # a fused score is relative to its list; the page shows what each side said instead
            assert "cosine" in first.locator(".score").inner_text() and "BM25" in first.locator(".score").inner_text()
            # a passage that fits the snippet is shown whole, from its first word
            snippet = first.locator(".snippet").inner_text()
            assert not snippet.startswith("…") and snippet.split()[0] in {"clean", "replace", "inflate", "adjust"}
            assert "results" in page.locator("#status").inner_text() and "ms" in page.locator("#status").inner_text()
            # query words are highlighted in the snippets (and stopwords are not)
            marks = [m.lower() for m in page.locator("mark").all_inner_texts()]
            assert "chain" in marks and "the" not in marks
            # hybrid by default: each hit shows where dense search and BM25 ranked it
            assert page.locator("#mode").input_value() == "hybrid"
            assert "hybrid" in page.locator("#status").inner_text()
            assert "dense #" in first.locator(".found").inner_text()
            assert "BM25" in first.locator(".found").inner_text()
            # the mode selector switches to BM25 only: the exact-word passage comes first
            page.select_option("#mode", "bm25")
            page.fill("#q", "squeak rotor lever")
            page.click("#go")
            page.wait_for_function("document.getElementById('status').textContent.includes('bm25')")
            assert page.locator("li.hit").nth(0).get_attribute("data-id") == "brake"
            page.screenshot(path=str(screenshot_dir / "search-page.png"), full_page=True)
            # mode and k are kept in the URL, so a reload or a shared link shows the same search
            assert "mode=bm25" in page.url and "k=10" in page.url and "q=squeak" in page.url
            page.reload()
            page.wait_for_selector("li.hit")
            assert page.locator("#mode").input_value() == "bm25"
            assert page.locator("#q").input_value().startswith("squeak")
            # nothing found is said, not a blank page
            page.fill("#q", "zyxwvut")
            page.click("#go")
            page.wait_for_selector("li.empty")
            assert "Nothing matched" in page.locator("li.empty").inner_text()
            # an empty query is answered on the page, not with a broken request
            page.fill("#q", "   ")
            page.click("#go")
            assert "Type a query" in page.locator("#status").inner_text()
            # a phone's width: every control stays on screen
            for width in (390, 1280):
                page.set_viewport_size({"width": width, "height": 800})
                for control in ("#q", "#mode", "#k", "#go"):
                    box = page.locator(control).bounding_box()
                    assert box["x"] >= 0 and box["x"] + box["width"] <= width, (width, control, box)
                page.screenshot(path=str(screenshot_dir / f"search-page-{width}.png"), full_page=True)
        finally:
            browser.close()
