"""The API's front door: a pure ASGI middleware that refuses what must not reach a route.

Each request, before any route runs:

- **auth disabled** (``MODOMO_AUTH_DISABLED``): a client that is not on loopback, or a request
  that came through a proxy (``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``), gets 403
  with the reason, whatever address the server was bound to and however it was started
  (``uvicorn modomo.api:app --host 0.0.0.0`` included);
- **headers** larger in total (names and values) than ``MODOMO_API_MAX_HEADER_BYTES``: 431;
- **a body** whose ``Content-Length`` exceeds ``MODOMO_API_MAX_BODY_BYTES``: 413 at once,
  before a byte of it is read. A chunked body is counted as it streams in, and the read
  that passes the limit raises 413 instead of handing the route more.

While the route reads the body, **credentials come first**: FastAPI reads a route's body
before it resolves the route's dependencies, so on the first read of the body of a route
that depends on :func:`modomo.api.auth.authenticate` the caller is authenticated there and
then, and a caller without valid credentials gets 401 before any of the body is read. The
principal is kept in the request's scope, and :func:`authenticate_once` (installed as the
app's override of ``authenticate``) hands it to the route's dependencies, so a credential is
looked up once per request. Routes that read their body only after their dependencies (the
job POSTs, :mod:`modomo.api.jobrequest`) have authenticated by then, and nothing is redone.

A response sent before the request's body was read to its end carries ``Connection: close``,
so the server does not go on draining a body nobody wants (uvicorn closes the connection
after such a response instead of reading the rest).

All refusals are JSON ``{"detail": ...}``, as FastAPI's own errors. A pure ASGI middleware
(not Starlette's ``BaseHTTPMiddleware``) so the body is never buffered here: messages pass
through one by one, counted.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modomo.api.auth import authenticate
from modomo.api.keys import Principal

__all__ = ["PROXY_HEADERS", "RequestGuard", "authenticate_once", "is_loopback", "needs_credentials"]

PROXY_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-real-ip")
"""Headers a reverse proxy adds: a request carrying one did not come from a local client."""

_PRINCIPAL = "modomo.principal"


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a client address) is a loopback address."""
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def authenticate_once(request: Request) -> Principal:
    """:func:`~modomo.api.auth.authenticate`, at most once per request: the app's override of
    it, sharing the principal with :class:`RequestGuard`'s check before the body is read."""
    principal = request.scope.get(_PRINCIPAL)
    if isinstance(principal, Principal):
        return principal
    principal = authenticate(request)
    request.scope[_PRINCIPAL] = principal
    return principal


_needs_auth: dict[int, bool] = {}


def needs_credentials(route: Any) -> bool:
    """Whether a matched route depends (at any depth) on ``authenticate``."""
    if not isinstance(route, APIRoute):
        return False
    known = _needs_auth.get(id(route))
    if known is None:
        pending = [route.dependant]
        known = False
        while pending:
            dependant = pending.pop()
            if dependant.call in (authenticate, authenticate_once):
                known = True
                break
            pending.extend(dependant.dependencies)
        _needs_auth[id(route)] = known
    return known


class _Refused(HTTPException):
    """A refusal raised while the body is read: FastAPI's routes pass an HTTPException on to
    the app's handler (a JSON answer); :class:`RequestGuard` answers one that escapes."""


async def _answer(
    send: Send, code: int, detail: str, headers: Mapping[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": code, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Pure ASGI middleware: loopback-only service while auth is disabled, header and body
    size limits, credentials before the body (see the module).

    Args:
        app: the application inside.
        max_body_bytes: the largest body handed to a route (413 beyond).
        max_header_bytes: the largest total of header names and values (431 beyond).
        loopback_only: serve loopback clients only, and no proxied request (auth disabled).
    """

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int, loopback_only: bool
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if self.loopback_only:
            client = scope.get("client")
            host = client[0] if client else None
            proxied = any(name.lower() in PROXY_HEADERS for name, _ in headers)
            if not is_loopback(host) or proxied:
                why = "a request through a proxy" if proxied else f"client {host}"
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await _answer(
                    send,
                    status.HTTP_403_FORBIDDEN,
                    "auth is disabled (MODOMO_AUTH_DISABLED): only loopback clients are "
                    f"served, not {why}",
                )
                return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(name) + len(value) for name, value in headers)
        if header_bytes > self.max_header_bytes:
            await _answer(
                send,
                status.HTTP_431_REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"request headers of {header_bytes} bytes exceed the limit of "
                f"{self.max_header_bytes} (MODOMO_API_MAX_HEADER_BYTES)",
            )
            return
        length: int | None = None
        chunked = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _answer(send, status.HTTP_400_BAD_REQUEST, "invalid Content-Length")
                    return
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if length is not None and length > self.max_body_bytes:
            await _answer(send, status.HTTP_413_CONTENT_TOO_LARGE, self._too_large(length))
            return
        await _Exchange(self, scope, receive, send, has_body=chunked or bool(length)).run()

    def _too_large(self, size: int | None = None) -> str:
        what = f"a body of {size} bytes" if size is not None else "the body"
        return (
            f"request too large: {what} exceeds the limit of {self.max_body_bytes} bytes "
            "(MODOMO_API_MAX_BODY_BYTES)"
        )


class _Exchange:
    """One request through :class:`RequestGuard`: counts the body, checks credentials before
    its first read, closes the connection after a response sent before the body's end."""

    def __init__(
        self, guard: RequestGuard, scope: Scope, receive: Receive, send: Send, *, has_body: bool
    ) -> None:
        self.guard = guard
        self.scope = scope
        self._receive = receive
        self._send = send
        self.body_pending = has_body
        self.checked = False
        self.received = 0
        self.started = False

    async def run(self) -> None:
        try:
            await self.guard.app(self.scope, self.receive, self.send)
        except _Refused as refused:
            if self.started:
                raise
            await _answer(self._send, refused.status_code, str(refused.detail), refused.headers)

    async def receive(self) -> Message:
        if self.body_pending and not self.checked:
            self.checked = True
            await self._credentials_first()
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.guard.max_body_bytes:
                raise _Refused(status.HTTP_413_CONTENT_TOO_LARGE, self.guard._too_large())
            if not message.get("more_body", False):
                self.body_pending = False
        elif message["type"] == "http.disconnect":
            self.body_pending = False
        return message

    async def _credentials_first(self) -> None:
        if _PRINCIPAL in self.scope or not needs_credentials(self.scope.get("route")):
            return
        try:
            principal = await run_in_threadpool(authenticate, Request(self.scope))
        except HTTPException as exc:
            raise _Refused(exc.status_code, exc.detail, exc.headers) from None
        self.scope[_PRINCIPAL] = principal

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            if self.body_pending:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
        await self._send(message)
