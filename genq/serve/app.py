"""The HTTP face of a Searcher: a JSON API and a one-page search UI (FastAPI on uvicorn).

Every user input is validated before any work is done and answered with a 4xx and a JSON
``{"error": ...}`` body when wrong; the work per request is bounded (query length, k,
batch size) and model calls are serialised, so a burst of requests queues instead of
exhausting memory.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from importlib import resources
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from genq.io import GenqError
from genq.retrieval import FUSIONS, RERANK_FUSIONS, SEARCH_MODES
from genq.search import Searcher, SearchOptions
from genq.serve.limits import HeadLimits, server_options

MAX_QUERY_CHARS = 1000
MAX_K = 100
MAX_BATCH = 64


class JsonTrustedHost:
    """Starlette's TrustedHostMiddleware rule (exact names, ``*.example.org``, ``*``), answered in JSON like every
    other error of this API rather than as plain text."""

    def __init__(self, app, allowed_hosts: list[str]):
        self.app, self.allowed = app, list(allowed_hosts)

    def _allowed(self, host: str) -> bool:
        return any(pattern == "*" or host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))
                   for pattern in self.allowed)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            from starlette.datastructures import Headers

            host = Headers(scope=scope).get("host", "")
            host = host[:host.index("]") + 1] if host.startswith("[") and "]" in host else host.split(":")[0]
            if not self._allowed(host):
                response = JSONResponse({"error": "invalid Host header"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(searcher: Searcher, max_k: int = MAX_K, max_query_chars: int = MAX_QUERY_CHARS,
               max_batch: int = MAX_BATCH, defaults: SearchOptions | None = None,
               allowed_hosts: list[str] | None = None, docs: bool = False):
    """``defaults`` (mode, alpha, fusion, reranking) apply to every request that does not set its own.

    ``allowed_hosts`` are the Host header values answered (None: any); a page on another
    site that rebinds its DNS name to 127.0.0.1 then gets a 400, not your passages. The
    OpenAPI docs (/docs, /redoc, /openapi.json) are served only with ``docs``.
    """
    defaults = (defaults or SearchOptions()).validate()
    app = FastAPI(title="genq search", version=searcher.meta.get("genq_version") or "0",
                  description="Semantic search over a genq index.", docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None, openapi_url="/openapi.json" if docs else None)
    if allowed_hosts:
        app.add_middleware(JsonTrustedHost, allowed_hosts=allowed_hosts)
    app.add_middleware(HeadLimits)  # outermost: an oversized or ambiguously framed head is refused first
    max_body = max_batch * (max_query_chars * 4 + 64) + 4096  # the largest valid request, in UTF-8 bytes
    page = resources.files("genq.serve").joinpath("static", "index.html").read_text(encoding="utf-8")

    class BadInput(Exception):
        def __init__(self, message: str, status: int = 400):
            self.message, self.status = message, status

    @app.exception_handler(BadInput)
    async def bad_input(_request: Request, exc: BadInput):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", []) if x != "body")
        message = f"invalid request: {where + ': ' if where else ''}{first.get('msg', 'bad input')}"
        return JSONResponse({"error": message}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(_request: Request, exc: Exception):
        # whatever went wrong while answering (a passage store damaged after the start, a disk error), the
        # client gets JSON it can read, and the server goes on serving
        message = str(exc).splitlines()[0][:300] if isinstance(exc, GenqError) else type(exc).__name__
        return JSONResponse({"error": f"the search failed: {message}"}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    def check_query(query) -> str:
        if not isinstance(query, str):
            raise BadInput("each query must be a string")
        query = query.strip()
        if not query:
            raise BadInput("the query is empty")
        try:
            query.encode("utf-8")
        except UnicodeEncodeError:
            raise BadInput("the query holds a lone UTF-16 surrogate (like \\ud800), which is not text") from None
        if "\x00" in query:
            raise BadInput("the query holds a NUL character, which is not text")
        if len(query) > max_query_chars:
            raise BadInput(f"the query is longer than {max_query_chars} characters", 413)
        return query

    def check_k(k) -> int:
        if isinstance(k, bool) or not isinstance(k, int):
            raise BadInput("k must be an integer")
        if not 1 <= k <= max_k:
            raise BadInput(f"k must be between 1 and {max_k}")
        return k

    def check_share(name: str, value, meaning: str) -> float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise BadInput(f"{name} must be a number between 0 and 1") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not 0 <= value <= 1:
            raise BadInput(f"{name} must be a number between 0 and 1 ({meaning})")
        return float(value)

    def check_options(mode=None, alpha=None, fusion=None, rerank=None, rerank_fusion=None,
                      rerank_weight=None) -> SearchOptions:
        """The request's search settings over the server's defaults; a 400 names what is wrong."""
        changes = {}
        if mode is not None:
            if mode not in SEARCH_MODES:
                raise BadInput(f"mode must be one of {', '.join(SEARCH_MODES)}")
            if mode not in searcher.modes:
                raise BadInput(f"this index has no BM25 part, so it cannot search in {mode} mode; use mode=dense "
                               "(or rebuild the index with `genq index`)")
            changes["mode"] = mode
        if alpha is not None:
            changes["alpha"] = check_share("alpha", alpha, "the share of the dense score")
        if fusion is not None:
            if fusion not in FUSIONS:
                raise BadInput(f"fusion must be one of {', '.join(FUSIONS)}")
            changes["fusion"] = fusion
        if rerank is not None:
            if isinstance(rerank, str):
                rerank = {"true": True, "1": True, "false": False, "0": False}.get(rerank.lower(), rerank)
            if not isinstance(rerank, bool):
                raise BadInput("rerank must be true or false")
            if rerank and searcher.reranker is None:
                raise BadInput("this server has no reranker; start it with `genq serve INDEX --rerank MODEL`")
            changes["rerank"] = rerank
        if rerank_fusion is not None:
            if rerank_fusion not in RERANK_FUSIONS:
                raise BadInput(f"rerank_fusion must be one of {', '.join(RERANK_FUSIONS)}")
            changes["rerank_fusion"] = rerank_fusion
        if rerank_weight is not None:
            changes["rerank_weight"] = check_share("rerank_weight", rerank_weight, "the share of the cross-encoder")
        options = replace(defaults, **changes)
        try:
            searcher.resolve_options(options)
        except GenqError as exc:
            raise BadInput(str(exc).splitlines()[0]) from None
        return options

    def run(queries: list[str], k: int, options: SearchOptions) -> tuple[list, float]:
        started = time.perf_counter()
        results = searcher.search_batch(queries, k, options=options)
        return results, round((time.perf_counter() - started) * 1000, 2)

    def used_mode(options: SearchOptions) -> str:
        return options.mode or searcher.default_mode

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page():
        return page

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)  # no icon, and no 404 in every browser's first request

    @app.get("/health")
    def health():
        return {"status": "ok", "passages": len(searcher)}

    @app.get("/info")
    def info():
        reranks = searcher.reranker is not None and defaults.rerank is not False
        return {**searcher.info(), "defaults": {"mode": used_mode(defaults), "alpha": defaults.alpha,
                                                "fusion": defaults.fusion, "candidates": defaults.candidates,
                                                "rerank": reranks, "rerank_depth": defaults.rerank_depth,
                                                "rerank_fusion": defaults.rerank_fusion,
                                                "rerank_weight": defaults.rerank_weight},
                "limits": {"max_k": max_k, "max_query_chars": max_query_chars, "max_batch": max_batch}}

    @app.get("/search")
    def search_get(request: Request, q: str = "", k: str = "10", mode: str | None = None, alpha: str | None = None,
                   fusion: str | None = None, rerank: str | None = None, rerank_fusion: str | None = None,
                   rerank_weight: str | None = None):
        try:  # the framework decodes bad UTF-8 into U+FFFD; the raw query string says what was sent
            parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise BadInput("the query string is not valid UTF-8") from None
        if not (k.isascii() and k.isdigit()):  # int() would take "5_0" as 50 and "٥" as 5
            raise BadInput("k must be an integer written in ASCII digits")
        k_value = int(k)
        query = check_query(q)
        options = check_options(mode, alpha, fusion, rerank, rerank_fusion, rerank_weight)
        results, ms = run([query], check_k(k_value), options)
        return {"query": query, "k": k_value, "mode": used_mode(options), "took_ms": ms,
                "hits": [h.to_dict() for h in results[0]]}

    # HEAD answers wherever GET does (monitors and link checkers use it), kept out of the API schema
    for path, endpoint in (("/", index_page), ("/health", health), ("/info", info), ("/search", search_get)):
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False,
                          response_class=HTMLResponse if path == "/" else JSONResponse)

    async def read_body(request: Request) -> bytes:
        """The body, refused by its declared length before reading, and cut off at the limit while reading."""
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body):
            raise BadInput(f"request body too large (at most {max_body:,} bytes)", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise BadInput(f"request body too large (at most {max_body:,} bytes)", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/search")
    async def search_post(request: Request):
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise BadInput("send the body as JSON with Content-Type: application/json", 415)
        body = await read_body(request)
        try:
            payload = json.loads(body or b"null", parse_constant=lambda name: float("nan"))
        except RecursionError:
            raise BadInput("the body is nested too deeply") from None
        except (ValueError, UnicodeDecodeError):
            raise BadInput("the body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise BadInput('send a JSON object: {"queries": ["..."], "k": 10} or {"query": "..."}')
        if "queries" in payload:
            queries = payload["queries"]
            if not isinstance(queries, list) or not queries:
                raise BadInput('"queries" must be a non-empty list of strings')
            if len(queries) > max_batch:
                raise BadInput(f"at most {max_batch} queries per request", 413)
        elif "query" in payload:
            queries = [payload["query"]]
        else:
            raise BadInput('the body needs "queries" (a list) or "query" (a string)')
        queries = [check_query(q) for q in queries]
        k = check_k(payload.get("k", 10))
        options = check_options(payload.get("mode"), payload.get("alpha"), payload.get("fusion"),
                                payload.get("rerank"), payload.get("rerank_fusion"), payload.get("rerank_weight"))
        results, ms = await run_in_threadpool(run, queries, k, options)
        return {"k": k, "mode": used_mode(options), "took_ms": ms,
                "results": [{"query": q, "hits": [h.to_dict() for h in hits]} for q, hits in zip(queries, results)]}

    return app


LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def hosts_for(bind: str, extra: list[str] | None = None) -> list[str] | None:
    """The Host header values a server bound to ``bind`` answers: its own names, plus ``extra``.

    Bound to every interface (0.0.0.0 / ::) the server is meant to be reached by names genq
    cannot know, so only ``extra`` restricts it (None = any).
    """
    extra = list(extra or [])
    if bind in ("0.0.0.0", "::", ""):
        return extra or None
    names = [bind, *LOOPBACK_NAMES] if bind in LOOPBACK_NAMES else [bind]
    return [*names, *extra]


def run_server(searcher: Searcher, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
               defaults: SearchOptions | None = None, allowed_hosts: list[str] | None = None,
               docs: bool = False) -> None:
    import uvicorn

    app = create_app(searcher, defaults=defaults, allowed_hosts=hosts_for(host, allowed_hosts), docs=docs)
    uvicorn.run(app, host=host, port=port, log_level=log_level, **server_options())
