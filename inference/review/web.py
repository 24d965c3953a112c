"""Request plumbing the review app's routers share: settings, the per-request database connection, the
logged-in session, the queue filters of a URL, page rendering, the client's address.

Why a module of its own: ``app.create_app`` wires the application (the security guard, headers, error
pages) and each ``routes_*`` module holds the routes of one concern; both need these helpers, and the
routers must not import the app (that would be a circle). Everything a route needs at run time hangs off
``request.app.state`` (``settings``, ``templates``, ``image_cache``), so a router is a plain module-level
``APIRouter`` with no closure over ``create_app``'s locals.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from parcelscan.inference.review import DECISIONS, auth, store
from parcelscan.inference.review.db import connect

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Settings:
    db_path: Path
    secure_cookies: bool = False
    session_hours: float = 12.0
    rate_limit: auth.RateLimit = field(default_factory=auth.RateLimit)


class LoginRequired(Exception):
    """No valid session: 401 for the API, images and POSTs; a redirect to the login page for pages."""


class Forbidden(Exception):
    """A logged-in request refused (CSRF token missing or wrong, cross-origin): 403."""


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def open_db(request: Request) -> sqlite3.Connection:
    return connect(settings_of(request).db_path)


def _db(request: Request) -> Iterator[sqlite3.Connection]:
    """One connection per request (sqlite3 connections are cheap; WAL lets readers and a writer overlap)."""
    conn = open_db(request)
    try:
        yield conn
    finally:
        conn.close()


Conn = Annotated[sqlite3.Connection, Depends(_db)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/images/")) or request.method not in SAFE_METHODS


def safe_next(target: str | None) -> str:
    """Only a local path may follow a login (no open redirect to another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def session_of(request: Request) -> auth.Session:
    """The session the app-wide guard found (every non-public route runs after it)."""
    return request.state.session


def filters_of(request: Request) -> store.QueueFilter:
    q = request.query_params
    return store.QueueFilter(station=q.get("station"), date_from=q.get("date_from"), date_to=q.get("date_to"),
                             verdict=q.get("verdict"), state=q.get("state") or "undecided")


def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """A server-rendered page with what every page shows: the user, the CSRF token, the decisions."""
    session = getattr(request.state, "session", None)
    base = {"user": session.user.name if session else None, "csrf_token": session.csrf_token if session else "",
            "decisions": list(DECISIONS.values())}
    return request.app.state.templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)
