"""Request-size limits and framing checks, answered in JSON at both layers where a request can be refused.

A request head reaches the app only if it arrived whole: h11 (uvicorn's HTTP/1.1 parser)
refuses a head that is still incomplete past its buffer limit, but accepts one of any size
that came in a single read. So the same limits are enforced twice, with the same numbers
and the same JSON answers:

* ``HeadLimits``, an ASGI middleware, checks every head the parser accepted;
* ``GenqH11Protocol``, uvicorn's h11 protocol with two changes, answers the parser's own
  refusals with 414/431/400 JSON instead of a plain-text 400, and then *lingers*: it
  half-closes and reads and drops what the client is still sending before closing, so the
  client reads the answer instead of a connection reset (closing a socket with unread
  input makes the kernel send RST, which destroys the response in flight).

No HTTP is parsed here: the parser stays h11's; this only chooses the answer and the close.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_REQUEST_LINE_BYTES = 16 * 1024  # a 1,000-character query percent-encodes to at most 12 KiB
MAX_HEAD_BYTES = 16 * 1024  # request line and headers together: h11's incomplete-event limit
MAX_HEADERS = 100
LINGER_SECONDS = 2.0
LONG_LINE_FIX = "send long queries with POST /search and a JSON body"


def json_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def refusal(scope: dict) -> tuple[int, str, bool] | None:
    """(status, message, close the connection) for a head that breaks a limit, None for one that does not."""
    line = len(scope.get("method", "")) + len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 10
    if line > MAX_REQUEST_LINE_BYTES:
        return 414, f"the request line is longer than {MAX_REQUEST_LINE_BYTES:,} bytes; {LONG_LINE_FIX}", True
    headers = scope.get("headers", [])
    if len(headers) > MAX_HEADERS:
        return 431, f"more than {MAX_HEADERS} request headers", True
    if line + sum(len(name) + len(value) + 4 for name, value in headers) > MAX_HEAD_BYTES:
        return 431, f"the request headers are larger than {MAX_HEAD_BYTES:,} bytes", True
    names = {name.lower() for name, _ in headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        # RFC 9112 6.1: a server MAY reject such a message and MUST then close the connection, since
        # whatever follows on it may be a request smuggled past a proxy that framed the body otherwise
        return 400, "the request has both Content-Length and Transfer-Encoding; send one of them", True
    return None


class HeadLimits:
    """ASGI middleware: a head over the limits, or framed ambiguously, gets its JSON 4xx before any route runs."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        refused = refusal(scope) if scope["type"] == "http" else None
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, message, close = refused
        body = json_body(message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class GenqH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering the parser's refusals in JSON with the right status and a lingering close."""

    lingering = False

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # the answer is sent; what the client still sends is read only so that it is not reset
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        import h11

        head, _ = self.conn.trailing_data
        status, message = 400, "the request is not valid HTTP/1.1"
        if len(head) > MAX_HEAD_BYTES:  # h11 gave up on a head that never ended
            line_ended = b"\n" in head[:MAX_REQUEST_LINE_BYTES]
            status, message = (431, f"the request headers are larger than {MAX_HEAD_BYTES:,} bytes") if line_ended \
                else (414, f"the request line is longer than {MAX_REQUEST_LINE_BYTES:,} bytes; {LONG_LINE_FIX}")
        self.logger.warning("Refused a request: %s (%d)", message, status)
        body = json_body(message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        response = h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase.encode())
        try:
            for event in (response, h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # a response had already started: nothing sensible can follow it
            self.transport.close()
            return
        self.lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def server_options() -> dict:
    """The uvicorn.Config keyword arguments that put these limits in place (``genq serve`` and the tests use them)."""
    return {"http": GenqH11Protocol, "h11_max_incomplete_event_size": MAX_HEAD_BYTES}
