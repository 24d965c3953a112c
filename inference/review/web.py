"""Request plumbing the review app's routers share: settings, the per-request database connection, the
logged-in session, the queue filters of a URL, page rendering, the client's address.

Why a module of its own: ``app.create_app`` wires the application (the security guard, headers, error
pages) and each ``routes_*`` module holds the routes of one concern; both need these helpers, and the
routers must not import the app (that would be a circle). Everything a route needs at run time hangs off
``request.app.state`` (``settings``, ``templates``, ``image_cache``), so a router is a plain module-level
``APIRouter`` with no closure over ``create_app``'s locals.
"""

from __future__ import annotations

import ipaddress
import math
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse

from parcelscan.errors import ParcelscanError
from parcelscan.inference.review import DECISIONS, auth, store
from parcelscan.inference.review.db import DATABASE_ERRORS, DatabaseUnavailable, connect

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# An item id in a URL: SQLite's integers are 64-bit signed; a larger number would crash the query (500),
# so it is refused as invalid input (422) before it gets there.
ItemId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
ProxyNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class Settings:
    db_path: Path | str  # a SQLite file, or a PostgreSQL URL (db.resolve_target)
    secure_cookies: bool = False
    session_hours: float = 12.0
    rate_limit: auth.RateLimit = field(default_factory=auth.RateLimit)
    # the HTTPS reverse proxy (addresses or networks): X-Forwarded-For is believed from these peers only
    trusted_proxies: tuple[ProxyNetwork, ...] = ()


def parse_proxies(proxies: Iterable[str]) -> tuple[ProxyNetwork, ...]:
    """``--trusted-proxy`` values (``10.0.0.5``, ``10.0.0.0/24``, ``::1``) as networks; a name is refused
    (resolving it per request would let DNS decide whom to believe)."""
    networks = []
    for text in proxies:
        try:
            networks.append(ipaddress.ip_network(str(text).strip(), strict=False))
        except ValueError as error:
            raise ParcelscanError(f"trusted proxy {text!r}: an IP address or network is needed ({error})") from error
    return tuple(networks)


class LoginRequired(Exception):
    """No valid session: 401 for the API, images and POSTs; a redirect to the login page for pages."""


class Forbidden(Exception):
    """A logged-in request refused (CSRF token missing or wrong, cross-origin): 403."""


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def open_db(request: Request) -> sqlite3.Connection:
    """The request's connection. The database was there when the app started (``create_app`` opened it), so
    any failure to open it now is an outage of the server's (a SQLite file moved or unreadable, PostgreSQL
    down or out of connections), never the client's mistake: ``DatabaseUnavailable``, answered 503."""
    target = settings_of(request).db_path
    try:
        return connect(target)
    except DatabaseUnavailable:
        raise
    except (ParcelscanError, *DATABASE_ERRORS) as error:
        raise DatabaseUnavailable(f"the review database is unavailable: {' '.join(str(error).split())}") from error


def _db(request: Request) -> Iterator[sqlite3.Connection]:
    """One connection per request (sqlite3 connections are cheap; WAL lets readers and a writer overlap)."""
    conn = open_db(request)
    try:
        yield conn
    finally:
        conn.close()


Conn = Annotated[sqlite3.Connection, Depends(_db)]


def client_ip(request: Request) -> str | None:
    """The client's address, as far as it can be known (see ``client_address``)."""
    return client_address(request, settings_of(request).trusted_proxies)


def client_address(request: Request, trusted_proxies: tuple[ProxyNetwork, ...] = ()) -> str | None:
    """The peer's address; when the peer is a trusted proxy, the client that proxy reports.

    Why it matters: failed logins are counted per client address. Behind a proxy every request comes
    from the proxy, so without this one user's typos lock everyone out. ``X-Forwarded-For`` is believed
    only from a trusted proxy (anyone else could write it and pick the address to be counted against),
    and only its right-most entries: the proxy appends the address it saw, anything further left was
    sent by the client and may be forged. The client is the right-most entry that is not itself a
    trusted proxy (a chain of proxies, each configured).
    """
    peer = request.client.host if request.client else None
    if not _is_trusted(peer, trusted_proxies):
        return peer
    forwarded = [part.strip() for value in request.headers.getlist("x-forwarded-for") for part in value.split(",")]
    for entry in reversed([part for part in forwarded if part]):
        if _is_trusted(entry, trusted_proxies):
            continue
        try:
            return str(ipaddress.ip_address(entry))
        except ValueError:
            return peer  # not an address: count against the proxy itself, never against a made-up name
    return peer


def _is_trusted(address: str | None, trusted_proxies: tuple[ProxyNetwork, ...]) -> bool:
    if not address or not trusted_proxies:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted_proxies)


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
                             verdict=q.get("verdict"), state=q.get("state") or "undecided",
                             sort=q.get("sort") or "score")


def finite_json(value: Any, where: str, problems: list[str]) -> Any:
    """``value`` with every NaN or ±Infinity replaced by None, each one named in ``problems``.

    A sidecar may hold ``"pixel_pitch_mm": NaN`` (Python's json reads it); JSON proper cannot carry it,
    so the answer would fail to serialise (HTTP 500) and the item would never open. The inspector sees
    the item and the problem instead.
    """
    if isinstance(value, float) and not math.isfinite(value):
        spelled = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        problems.append(f"{where} is {spelled}, not a finite number: not shown, not trusted")
        return None
    if isinstance(value, dict):
        return {k: finite_json(v, f"{where}.{k}" if where else str(k), problems) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v, f"{where}[{k}]", problems) for k, v in enumerate(value)]
    return value


def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """A server-rendered page with what every page shows: the user, the CSRF token, the decisions."""
    session = getattr(request.state, "session", None)
    base = {"user": session.user.name if session else None, "csrf_token": session.csrf_token if session else "",
            "decisions": list(DECISIONS.values())}
    return request.app.state.templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)
