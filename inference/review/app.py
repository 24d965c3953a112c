"""The review web app: ``create_app(db_path)`` → a FastAPI application.

Security is one guard for every route (an app-wide dependency), so a route added later is protected
without anyone remembering to: no session → 401 (API, images, any POST) or a redirect to the login
page (pages); a state-changing request without the session's CSRF token → 403; a cross-origin
``Origin`` → 403. Only ``PUBLIC_ROUTES`` are reachable without logging in. Images are addressed by
item id and a fixed image kind, and rendered from the files recorded at ingest; no request ever
names a file. Every decision is committed (``synchronous=FULL``) before its response is sent.

This module wires the application (guard, security headers, error answers); the routes live with their
concern: ``routes_login`` (login, logout), ``routes_pages`` (queue and review pages), ``routes_api``
(the JSON API: queue, item, decision, undo), ``routes_files`` (images, static files); the request
plumbing they share is in ``web``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from psycopg import OperationalError as PgOperationalError
from starlette.concurrency import run_in_threadpool

from parcelscan.errors import ParcelscanError
from parcelscan.inference.review import (
    auth,
    check_decision_keys,
    routes_api,
    routes_files,
    routes_login,
    routes_pages,
    routes_tip,
)
from parcelscan.inference.review.db import DatabaseUnavailable, connect, resolve_target
from parcelscan.inference.review.images import ImageCache
from parcelscan.inference.review.web import (
    SAFE_METHODS,
    Forbidden,
    LoginRequired,
    Settings,
    open_db,
    page,
    parse_proxies,
    wants_json,
)

HERE = Path(__file__).parent
# (method, route path) reachable without a session. The HTTP tests keep their own copy of this list.
PUBLIC_ROUTES = frozenset({("GET", "/login"), ("POST", "/login"), ("GET", "/static/{name}")})
ROUTERS = (routes_login.router, routes_pages.router, routes_api.router, routes_files.router, routes_tip.router)
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
                                "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


async def guard(request: Request) -> None:
    """Every route's first dependency: a session (unless public), the CSRF token and same origin for changes."""
    route = request.scope.get("route")
    route_path = getattr(route, "path", request.url.path)
    method = "GET" if request.method == "HEAD" else request.method
    if (method, route_path) in PUBLIC_ROUTES:
        return
    token = request.cookies.get(auth.SESSION_COOKIE)

    def lookup() -> auth.Session | None:
        conn = open_db(request)
        try:
            return auth.lookup_session(conn, token)
        finally:
            conn.close()

    session = await run_in_threadpool(lookup) if token else None
    if session is None:
        raise LoginRequired()
    request.state.session = session
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("cross-origin request refused")
    given = request.headers.get(auth.CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        given = (await request.form()).get(auth.CSRF_FIELD)
    if not auth.tokens_match(session.csrf_token, given if isinstance(given, str) else None):
        raise Forbidden("CSRF token missing or wrong")


async def security_headers(request: Request, call_next):
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.url.path.startswith(("/images/", "/static/")):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


async def login_required(request: Request, _exc: LoginRequired):
    if wants_json(request):
        return JSONResponse({"detail": "login required"}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


async def forbidden(_request: Request, exc: Forbidden):
    return JSONResponse({"detail": str(exc)}, status_code=403)


LOG = logging.getLogger("parcelscan.review")
RETRY_AFTER_S = 5
# sqlite3.OperationalError texts that mean "the file cannot be used now", not a bug in a query
SQLITE_OUTAGES = ("database is locked", "unable to open database file", "disk i/o error", "readonly database",
                  "database or disk is full", "no such table")


async def database_unavailable(request: Request, exc: Exception):
    """503 with a plain reason, never a traceback; the server's own log gets the cause (a file path or a
    server address is not for the browser). Nothing was recorded, so the inspector may simply retry."""
    if isinstance(exc, sqlite3.OperationalError) and not any(t in str(exc).lower() for t in SQLITE_OUTAGES):
        raise exc  # a query bug stays a server error (500), it is not an outage
    LOG.warning("review database unavailable (%s %s): %s", request.method, request.url.path,
                " ".join(str(exc).split()))
    detail = ("The review database is unavailable right now (the server is down, restarting or out of "
              "connections). Nothing was recorded; try again in a moment.")
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    if wants_json(request):
        return JSONResponse({"detail": detail}, status_code=503, headers=headers)
    response = page(request, "message.html", {"title": "Review database unavailable", "text": detail}, 503)
    response.headers.update(headers)
    return response


async def bad_request(_request: Request, exc: ParcelscanError):
    return JSONResponse({"detail": str(exc)}, status_code=400)


def create_app(db_path: str | Path, *, secure_cookies: bool = False, session_hours: float = 12.0,
               rate_limit: auth.RateLimit | None = None, trusted_proxies: Iterable[str] = ()) -> FastAPI:
    """The app on ``db_path``. ``trusted_proxies``: addresses or networks of the HTTPS reverse proxy in
    front; only from these is ``X-Forwarded-For`` believed (see ``web.client_address``)."""
    check_decision_keys()  # a key clash is a configuration error: refuse to start, not a dead key later
    settings = Settings(resolve_target(db_path), secure_cookies, session_hours, rate_limit or auth.RateLimit(),
                        parse_proxies(trusted_proxies))
    connect(settings.db_path).close()  # exists and is migrated, or a clear error now rather than per request
    app = FastAPI(title="parcelscan review", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(guard)])
    app.state.settings = settings
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.state.image_cache = ImageCache()
    app.middleware("http")(security_headers)
    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(ParcelscanError, bad_request)
    for outage in (DatabaseUnavailable, PgOperationalError, sqlite3.OperationalError):
        app.add_exception_handler(outage, database_unavailable)
    for router in ROUTERS:
        # the guard matches PUBLIC_ROUTES on a route's own path (FastAPI 0.165 hands it the router's route):
        # a router prefix would make "/api/login" look like "/login". Routers write full paths.
        if router.prefix:
            raise AssertionError(f"review routers take no prefix, got {router.prefix!r}")
        app.include_router(router)
    return app
