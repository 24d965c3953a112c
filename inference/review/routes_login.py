"""Login and logout routes. The login form has no session yet, so it carries its own CSRF token in a
double-submit cookie; failed logins are rate limited in ``auth`` (per user name and per client address)."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from parcelscan.inference.review import auth
from parcelscan.inference.review.web import Conn, client_ip, open_db, page, safe_next, session_of, settings_of

router = APIRouter()


def login_page(request: Request, error: str | None = None, status_code: int = 200,
               headers: dict[str, str] | None = None) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = page(request, "login.html", {"login_csrf": token, "error": error,
                                            "next": safe_next(request.query_params.get("next"))},
                    status_code)
    response.set_cookie(auth.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=settings_of(request).secure_cookies, path="/login")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request):
    return login_page(request)


@router.post("/login")
async def login(request: Request):
    form = await request.form()
    username, password = str(form.get("username") or ""), str(form.get("password") or "")
    if not auth.tokens_match(request.cookies.get(auth.LOGIN_CSRF_COOKIE), str(form.get(auth.CSRF_FIELD) or "")):
        return login_page(request, "The login form expired; please try again.", 403)
    settings = settings_of(request)
    ip = client_ip(request)

    def attempt() -> tuple[str | None, Any]:
        conn = open_db(request)
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
    response = RedirectResponse(safe_next(str(form.get("next") or "/")), status_code=303)
    response.set_cookie(auth.SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=settings.secure_cookies or request.url.scheme == "https",
                        max_age=int(settings.session_hours * 3600), path="/")
    response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, conn: Conn):
    auth.end_session(conn, session_of(request), client_ip(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response
