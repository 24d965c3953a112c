"""The review web app: ``create_app(db_path)`` → a FastAPI application.

Security is one guard for every route (an app-wide dependency), so a route added later is protected
without anyone remembering to: no session → 401 (API, images, any POST) or a redirect to the login
page (pages); a state-changing request without the session's CSRF token → 403; a cross-origin
``Origin`` → 403. Only ``PUBLIC_ROUTES`` are reachable without logging in. Images are addressed by
item id and a fixed image kind, and rendered from the files recorded at ingest; no request ever
names a file. Every decision is committed (``synchronous=FULL``) before its response is sent.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from parcelscan.errors import ParcelscanError, ScanReadError
from parcelscan.inference.review import DECISIONS, auth, store
from parcelscan.inference.review.db import connect
from parcelscan.inference.review.images import IMAGE_KINDS, ImageCache, ImageUnavailable

HERE = Path(__file__).parent
STATIC_FILES = {"app.css": "text/css; charset=utf-8", "review.js": "text/javascript; charset=utf-8",
                "queue.js": "text/javascript; charset=utf-8"}
# (method, route path) reachable without a session. The HTTP tests keep their own copy of this list.
PUBLIC_ROUTES = frozenset({("GET", "/login"), ("POST", "/login"), ("GET", "/static/{name}")})
QUEUE_PAGE_LIMIT = 500
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
                                "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
MATERIAL_SUGGESTIONS = ("Nd2O3", "Pr6O11", "Dy2O3", "Tb4O7", "CeO2", "La2O3", "Y2O3", "Gd2O3", "Sm2O3",
                        "NdFeB powder", "RE carbonate", "Sb2O3", "GeO2", "Ga", "W powder", "unknown")
SCENARIO_SUGGESTIONS = ("tile adhesive / ceramic ingredients", "water bottle slurry", "mislabelled machinery parts",
                        "powder bag", "hidden in electronics", "other")


@dataclass
class Settings:
    db_path: Path
    secure_cookies: bool = False
    session_hours: float = 12.0
    rate_limit: auth.RateLimit = field(default_factory=auth.RateLimit)


class LoginRequired(Exception):
    pass


class Forbidden(Exception):
    pass


class DecisionIn(BaseModel):
    decision: str
    material: str | None = None
    scenario: str | None = None
    notes: str | None = None


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/images/")) or request.method not in SAFE_METHODS


def _safe_next(target: str | None) -> str:
    """Only a local path may follow a login (no open redirect to another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _db(request: Request) -> Iterator[sqlite3.Connection]:
    """One connection per request (sqlite3 connections are cheap; WAL lets readers and a writer overlap)."""
    conn = connect(request.app.state.settings.db_path)
    try:
        yield conn
    finally:
        conn.close()


Conn = Annotated[sqlite3.Connection, Depends(_db)]


def create_app(db_path: str | Path, *, secure_cookies: bool = False, session_hours: float = 12.0,
               rate_limit: auth.RateLimit | None = None) -> FastAPI:
    settings = Settings(Path(db_path).resolve(), secure_cookies, session_hours, rate_limit or auth.RateLimit())
    connect(settings.db_path).close()  # exists and is migrated, or a clear error now rather than per request
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    cache = ImageCache()

    def open_db() -> sqlite3.Connection:
        return connect(settings.db_path)

    async def guard(request: Request) -> None:
        route = request.scope.get("route")
        route_path = getattr(route, "path", request.url.path)
        method = "GET" if request.method == "HEAD" else request.method
        if (method, route_path) in PUBLIC_ROUTES:
            return
        token = request.cookies.get(auth.SESSION_COOKIE)

        def lookup() -> auth.Session | None:
            conn = open_db()
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

    app = FastAPI(title="parcelscan review", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(guard)])
    app.state.settings = settings

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith(("/images/", "/static/")):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired):
        if _wants_json(request):
            return JSONResponse({"detail": "login required"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(_request: Request, exc: Forbidden):
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(ParcelscanError)
    async def bad_request(_request: Request, exc: ParcelscanError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    def session_of(request: Request) -> auth.Session:
        return request.state.session

    def filters_of(request: Request) -> store.QueueFilter:
        q = request.query_params
        return store.QueueFilter(station=q.get("station"), date_from=q.get("date_from"), date_to=q.get("date_to"),
                                 verdict=q.get("verdict"), state=q.get("state") or "undecided")

    def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
        session = getattr(request.state, "session", None)
        base = {"user": session.user.name if session else None, "csrf_token": session.csrf_token if session else ""}
        return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)

    # --- login -------------------------------------------------------------------------------------------
    def login_page(request: Request, error: str | None = None, status_code: int = 200,
                   headers: dict[str, str] | None = None) -> HTMLResponse:
        import secrets

        token = secrets.token_urlsafe(32)
        response = page(request, "login.html", {"login_csrf": token, "error": error,
                                                "next": _safe_next(request.query_params.get("next"))},
                        status_code)
        response.set_cookie(auth.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                            secure=settings.secure_cookies, path="/login")
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request):
        return login_page(request)

    @app.post("/login")
    async def login(request: Request):
        form = await request.form()
        username, password = str(form.get("username") or ""), str(form.get("password") or "")
        if not auth.tokens_match(request.cookies.get(auth.LOGIN_CSRF_COOKIE), str(form.get(auth.CSRF_FIELD) or "")):
            return login_page(request, "The login form expired; please try again.", 403)
        ip = _client_ip(request)

        def attempt() -> tuple[str | None, Any]:
            conn = open_db()
            try:
                try:
                    user = auth.authenticate(conn, username, password, ip, settings.rate_limit)
                except auth.LockedOut as locked:
                    return "locked", locked
                if user is None:
                    return "wrong", None
                return None, auth.create_session(conn, user, ip, settings.session_hours * 3600.0)
            finally:
                conn.close()

        problem, value = await run_in_threadpool(attempt)
        if problem == "locked":
            retry = int(value.retry_after_s) + 1
            return login_page(request, f"Too many failed logins. Try again in {retry} s.", 429,
                              {"Retry-After": str(retry)})
        if problem == "wrong":
            return login_page(request, "Wrong user name or password.", 401)
        token, _session = value
        response = RedirectResponse(_safe_next(str(form.get("next") or "/")), status_code=303)
        response.set_cookie(auth.SESSION_COOKIE, token, httponly=True, samesite="strict",
                            secure=settings.secure_cookies or request.url.scheme == "https",
                            max_age=int(settings.session_hours * 3600), path="/")
        response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/login")
        return response

    @app.post("/logout")
    def logout(request: Request, conn: Conn):
        auth.end_session(conn, session_of(request), _client_ip(request))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
        return response

    # --- pages -------------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def queue_page(request: Request, conn: Conn):
        session = session_of(request)
        filters = filters_of(request)
        rows = store.queue(conn, filters, session.user.id, limit=QUEUE_PAGE_LIMIT)
        return page(request, "queue.html", {
            "rows": rows, "limit": QUEUE_PAGE_LIMIT, "filters": filters, "query": urlencode(filters.query_params()),
            "stations": store.stations(conn), "states": store.STATES, "counts": store.counts(conn, session.user.id)})

    @app.get("/review")
    def review_start(request: Request, conn: Conn):
        filters = filters_of(request)
        rows = store.queue(conn, filters, session_of(request).user.id, limit=1)
        query = urlencode(filters.query_params())
        if not rows:
            return RedirectResponse(f"/?{query}", status_code=303)
        return RedirectResponse(f"/review/{rows[0]['id']}?{query}", status_code=303)

    @app.get("/review/{item_id}", response_class=HTMLResponse)
    def review_page(request: Request, item_id: int, conn: Conn):
        if store.get_item(conn, item_id) is None:
            return page(request, "message.html", {"title": "No such item", "text": f"There is no item {item_id}."},
                        404)
        filters = filters_of(request)
        return page(request, "review.html", {
            "item_id": item_id, "query": urlencode(filters.query_params()), "filters": filters,
            "materials": MATERIAL_SUGGESTIONS, "scenarios": SCENARIO_SUGGESTIONS, "keys": DECISIONS})

    # --- JSON API ----------------------------------------------------------------------------------------
    def item_json(conn: sqlite3.Connection, item: sqlite3.Row, session: auth.Session,
                  filters: store.QueueFilter) -> dict[str, Any]:
        item_id = int(item["id"])
        decisions = store.item_decisions(conn, item_id)
        mine = next((d for d in decisions if d["user_id"] == session.user.id), None)
        images = {kind: f"/images/{item_id}/{kind}.png" for kind in IMAGE_KINDS}
        if not item["heatmap_path"]:
            images["heatmap"] = None
        if item["scan_kind"] == "pseudo_color":  # no low/high channels: no raw images, no material view
            images.update(low=None, high=None, material=None)
        if item["scan_error"]:
            images = dict.fromkeys(IMAGE_KINDS)
        return {
            "id": item_id, "scan_id": item["scan_id"], "verdict": item["verdict"], "score": item["score"],
            "threshold": item["threshold"], "station": item["station"], "scanned_at": item["scanned_at"],
            "model": {"name": item["model_name"], "version": item["model_version"], "sha256": item["model_sha256"]},
            "reasons": json.loads(item["reasons"]), "verdict_error": item["verdict_error"],
            "scan_error": item["scan_error"], "heatmap_error": item["heatmap_error"],
            "scan": {"kind": item["scan_kind"], "rows": item["scan_rows"], "cols": item["scan_cols"],
                     "meta": json.loads(item["scan_meta"]),
                     "files": sorted(Path(p).name for p in json.loads(item["inputs"]))},
            "ingested_at": item["ingested_at"], "images": images,
            "decisions": [{k: d[k] for k in ("user", "decision", "material", "scenario", "notes", "created_at")}
                          for d in decisions],
            "mine": ({k: mine[k] for k in ("decision", "material", "scenario", "notes", "created_at")}
                     if mine else None),
            "state": store.state_of(decisions), "conflict": store.state_of(decisions) == "conflict",
            "history": store.item_history(conn, item_id),
            "position": store.neighbours(conn, filters, session.user.id, item_id),
            "counts": store.counts(conn, session.user.id), "user": session.user.name,
        }

    @app.get("/api/queue")
    def api_queue(request: Request, conn: Conn):
        session = session_of(request)
        filters = filters_of(request)
        return {"filters": filters.query_params(), "items": store.queue(conn, filters, session.user.id),
                "counts": store.counts(conn, session.user.id)}

    @app.get("/api/items/{item_id}")
    def api_item(request: Request, item_id: int, conn: Conn):
        item = store.get_item(conn, item_id)
        if item is None:
            return JSONResponse({"detail": f"no item {item_id}"}, status_code=404)
        return item_json(conn, item, session_of(request), filters_of(request))

    @app.post("/api/items/{item_id}/decision")
    async def api_decide(request: Request, item_id: int):
        # the body is parsed here, after the guard, so an anonymous request is refused before it is read
        try:
            body = DecisionIn.model_validate_json(await request.body())
        except ValidationError as error:
            return JSONResponse({"detail": f"bad decision body: {error.errors()[0]['msg']}"}, status_code=400)
        session = session_of(request)
        filters = filters_of(request)

        def work() -> dict[str, Any] | None:
            conn = open_db()
            try:
                try:
                    result = store.decide(conn, item_id, session.user.id, session.user.name, body.decision,
                                          material=body.material, scenario=body.scenario, notes=body.notes,
                                          ip=_client_ip(request))
                except LookupError:
                    return None
                # committed: from here on the decision is durable, whatever happens to this process
                result["position"] = store.neighbours(conn, filters, session.user.id, item_id)
                return result
            finally:
                conn.close()

        result = await run_in_threadpool(work)
        if result is None:
            return JSONResponse({"detail": f"no item {item_id}"}, status_code=404)
        return {"ok": True, **result}

    @app.post("/api/undo")
    def api_undo(request: Request, conn: Conn):
        session = session_of(request)
        result = store.undo(conn, session.user.id, session.user.name, ip=_client_ip(request))
        if result is None:
            return JSONResponse({"ok": False, "detail": "nothing to undo"}, status_code=409)
        scan_id = store.get_item(conn, result["item_id"])["scan_id"]
        return {"ok": True, "scan_id": scan_id, **result}

    # --- images and static files -------------------------------------------------------------------------
    @app.get("/images/{item_id}/{name}")
    def image(item_id: int, name: str, conn: Conn):
        kind = name.removesuffix(".png")
        if not name.endswith(".png") or kind not in IMAGE_KINDS:
            return JSONResponse({"detail": "no such image"}, status_code=404)
        item = store.get_item(conn, item_id)
        if item is None:
            return JSONResponse({"detail": "no such item"}, status_code=404)
        try:
            data = cache.get(item, kind)
        except ImageUnavailable as error:
            return JSONResponse({"detail": str(error)}, status_code=404)
        except ScanReadError as error:
            return JSONResponse({"detail": str(error)}, status_code=409)
        # an item's images never change (ingest pinned the files' SHA-256): cacheable, briefly, by this browser only
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    @app.get("/static/{name}")
    def static(name: str):
        if name not in STATIC_FILES:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC_FILES[name],
                        headers={"Cache-Control": "no-cache"})

    return app
