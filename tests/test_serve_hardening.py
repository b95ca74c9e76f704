"""Issue 16, items 13 and 14: the server under hostile requests and under load (loopback only, bounded)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from genq.index import build_index
from genq.search import Searcher
from genq.serve import create_app
from genq.serve.app import hosts_for
from genq.serve.limits import server_options

from .conftest import write_jsonl


@pytest.fixture(scope="module")
def searcher(tmp_path_factory, tiny_encoder_dir):
    tmp = tmp_path_factory.mktemp("hardening")
    words = "chain brake tyre gear saddle pedal spoke hub valve cable lever oil clean adjust replace".split()
    passages = write_jsonl(tmp / "passages.jsonl", [
        {"_id": f"p{i}", "title": words[i % len(words)], "text": " ".join(words[(i + j) % len(words)]
                                                                           for j in range(12))}
        for i in range(300)])
    build_index(passages, str(tiny_encoder_dir), tmp / "index", dtype="float32", progress=False)
    return Searcher.load(tmp / "index", dtype="float32")


@pytest.fixture(scope="module")
def client(searcher):
    from fastapi.testclient import TestClient

    return TestClient(create_app(searcher, max_query_chars=100, max_batch=4))


@pytest.fixture(scope="module")
def live(searcher):
    """A real uvicorn server on a free loopback port, in a thread, with the Host check `genq serve` uses."""
    import uvicorn

    app = create_app(searcher, max_query_chars=100, max_batch=4, allowed_hosts=hosts_for("127.0.0.1"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", **server_options()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def raw_request(port: int, head: str, body: bytes = b"", timeout: float = 10) -> tuple[int, bytes]:
    """Send exactly these bytes and read the status line: what a hostile client does."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        response = b""
        while b"\r\n\r\n" not in response:
            part = sock.recv(65536)
            if not part:
                break
            response += part
    return int(response.split(b" ", 2)[1]), response


def whole_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send these bytes and read until the server closes: every response it gave on the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while part := sock.recv(65536):
            received += part
    return received


def answers(received: bytes) -> list[tuple[int, dict]]:
    """The (status, JSON body) of each response in a connection's bytes."""
    found = []
    while received.startswith(b"HTTP/1.1 "):
        head, _, rest = received.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.lower().split(b"\r\n")
                          if line.startswith(b"content-length:")))
        found.append((int(head.split(b" ")[1]), json.loads(rest[:length])))
        received = rest[length:]
    return found


# issue 27 item 4: oversized heads answered in JSON (whether or not the parser saw them whole), no smuggling
@pytest.mark.parametrize("size", [20_000, 300_000, 2_000_000])
def test_an_oversized_request_line_gets_a_414_not_a_reset(live, size):
    received = whole_exchange(live, f"GET /search?q={'a' * size} HTTP/1.1\r\nHost: 127.0.0.1:{live}\r\n"
                                    "Connection: close\r\n\r\n".encode())
    [(status, body)] = answers(received)
    assert status == 414 and "POST /search" in body["error"]


@pytest.mark.parametrize("headers", [f"X-Big: {'a' * 100_000}\r\n", f"X-Big: {'a' * 1_000_000}\r\n",
                                     "".join(f"X-{i}: a\r\n" for i in range(1000))])
def test_oversized_or_too_many_headers_get_a_431(live, headers):
    received = whole_exchange(live, f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{live}\r\n{headers}"
                                    "Connection: close\r\n\r\n".encode())
    [(status, body)] = answers(received)
    assert status == 431 and "header" in body["error"]


def test_a_request_with_two_framings_is_refused_and_what_follows_it_is_not_served(live):
    host = f"Host: 127.0.0.1:{live}\r\n"
    smuggled = (f"POST /search HTTP/1.1\r\n{host}Content-Type: application/json\r\nContent-Length: 4\r\n"
                f"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /health HTTP/1.1\r\n{host}Connection: close\r\n\r\n")
    [(status, body)] = answers(whole_exchange(live, smuggled.encode()))
    assert status == 400 and "Content-Length and Transfer-Encoding" in body["error"]


def test_bytes_that_are_not_http_get_a_json_400(live):
    [(status, body)] = answers(whole_exchange(live, b"\x00\x01 nonsense\r\n\r\n"))
    assert status == 400 and "not valid HTTP" in body["error"]


def test_a_request_within_the_limits_is_answered(live):
    [(status, body)] = answers(whole_exchange(live, f"GET /search?q={'chain%20' * 1200}&k=2 HTTP/1.1\r\n"
                                                    f"Host: 127.0.0.1:{live}\r\nX-Pad: {'a' * 2000}\r\n"
                                                    "Connection: close\r\n\r\n".encode()))
    assert status == 413 and "longer than 100 characters" in body["error"]  # the app's own query limit, not a 414
    [(status, body)] = answers(whole_exchange(live, f"GET /search?q=chain&k=2 HTTP/1.1\r\nHost: 127.0.0.1:{live}"
                                                    "\r\nConnection: close\r\n\r\n".encode()))
    assert status == 200 and len(body["hits"]) == 2


# 13. size limits before reading, every JSON failure a 4xx, Host, content type, docs, HEAD
def test_a_huge_declared_body_is_refused_before_it_is_read(live):
    status, _ = raw_request(live, f"POST /search HTTP/1.1\nHost: 127.0.0.1:{live}\nContent-Type: application/json\n"
                                  "Content-Length: 300000000\n")
    assert status == 413


def test_a_huge_chunked_body_is_cut_off_while_streaming(live):
    chunk = b'{"query": "' + b"a" * 60000
    body = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(20))
    status, _ = raw_request(live, f"POST /search HTTP/1.1\nHost: 127.0.0.1:{live}\nContent-Type: application/json\n"
                                  "Transfer-Encoding: chunked\n", body)
    assert status == 413


@pytest.mark.parametrize("body, status", [
    (b"{not json", 400),
    (b"[" * 2_500 + b"]" * 2_500, 400),  # deeper than Python's recursion limit, within the size limit
    (b'{"query": "\\ud800"}', 400),
    (b'{"query": "chain", "k": NaN}', 400),
    (b'{"query": "chain", "alpha": Infinity}', 400),
    (b'\xff\xfe{"query": "chain"}', 400),
    (b'"just a string"', 400),
    (b'{"queries": [["nested"]]}', 400),
])
def test_every_malformed_body_is_a_4xx(client, body, status):
    response = client.post("/search", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status and "error" in response.json(), response.text


def test_post_needs_json_content_type(client):
    response = client.post("/search", content=b'{"query": "chain"}', headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert client.post("/search", content=b'{"query": "chain"}',
                       headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200


def test_host_header_is_checked(live):
    for host, expected in ((f"127.0.0.1:{live}", 200), (f"localhost:{live}", 200), (f"[::1]:{live}", 200),
                           ("evil.example", 400), (f"evil.example:{live}", 400)):
        status, response = raw_request(live, f"GET /health HTTP/1.1\nHost: {host}\nConnection: close\n")
        assert status == expected, host
        if status == 400:  # JSON like every other error of the API
            assert b"content-type: application/json" in response.lower()
    assert hosts_for("0.0.0.0") is None and hosts_for("0.0.0.0", ["search.example"]) == ["search.example"]


def test_no_favicon_404(client):
    assert client.get("/favicon.ico").status_code == 204


def test_a_foreign_host_gets_a_json_error(searcher):
    from fastapi.testclient import TestClient

    guarded = TestClient(create_app(searcher, allowed_hosts=["127.0.0.1"]))  # TestClient says Host: testserver
    response = guarded.get("/health")
    assert response.status_code == 400 and response.json() == {"error": "invalid Host header"}


def test_docs_only_when_asked(searcher, client):
    from fastapi.testclient import TestClient

    assert [client.get(p).status_code for p in ("/docs", "/redoc", "/openapi.json")] == [404, 404, 404]
    with_docs = TestClient(create_app(searcher, docs=True))
    assert with_docs.get("/docs").status_code == 200 and with_docs.get("/openapi.json").status_code == 200


def test_head_on_get_routes(client):
    for path in ("/", "/health", "/info", "/search?q=chain"):
        response = client.head(path)
        assert response.status_code == 200 and response.content == b"", path


def test_info_names_no_absolute_paths(client):
    info = client.get("/info").json()
    assert not any(isinstance(v, str) and v.startswith("/") for v in info.values())
    assert str(Path.home()) not in json.dumps(info)


# 14. a bounded load: 8 clients, 0 errors, memory flat
def _rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def test_load_eight_clients_no_errors_memory_flat(live):
    clients, requests_each = 8, 40
    errors: list[str] = []
    latencies: list[float] = []

    def hammer(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", live, timeout=30)
        try:
            for i in range(requests_each):
                started = time.perf_counter()
                if i % 2:
                    body = json.dumps({"queries": [f"oil the chain {number}", "brake lever"], "k": 5})
                    connection.request("POST", "/search", body, {"Content-Type": "application/json"})
                else:
                    connection.request("GET", f"/search?q=adjust+gear+{i}&k=10&mode=hybrid")
                response = connection.getresponse()
                payload = response.read()
                latencies.append(time.perf_counter() - started)
                if response.status != 200 or not json.loads(payload):
                    errors.append(f"{response.status}: {payload[:100]!r}")
        except Exception as exc:  # a dropped connection is an error of the server under load
            errors.append(repr(exc))
        finally:
            connection.close()

    def round_of_load() -> None:
        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads), "a client hung"

    round_of_load()  # warm-up: allocator pools, caches
    before = _rss_mb()
    round_of_load()
    round_of_load()
    after = _rss_mb()
    assert errors == [] and len(latencies) == 3 * clients * requests_each
    if before is not None:
        assert after - before < 100, f"memory grew {after - before:.0f} MB over {2 * clients * requests_each} requests"
