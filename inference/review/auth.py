"""Accounts, sessions, CSRF tokens and login rate limiting.

* Passwords: argon2id (argon2-cffi defaults: 64 MiB, 3 passes), rehashed on login when the
  parameters change. Unknown user names cost the same argon2 verification as known ones, so a
  timing difference does not reveal which names exist.
* Sessions: a random 256-bit token in an HttpOnly, SameSite=Strict cookie; the database stores only
  its SHA-256, so a copy of the database does not log anyone in. Sessions expire after a shift.
* CSRF: each session has its own random token; every state-changing request must send it back
  (form field ``csrf_token`` or header ``X-CSRF-Token``). The login form, which has no session yet,
  uses a double-submit cookie.
* Rate limiting: failures are counted per user name and per client address in the database (so they
  survive a restart and hold across processes); ``max_failures`` within the window lock that subject
  for ``lockout_s`` seconds (HTTP 429), even for the right password. The client address is the
  peer's, or behind the HTTPS proxy named with ``serve --trusted-proxy`` the one that proxy reports in
  ``X-Forwarded-For`` (``web.client_address``): without it, every login seems to come from the proxy and
  one user's wrong passwords lock everyone out.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import sqlite3
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from parcelscan.errors import ParcelscanError
from parcelscan.inference.review.db import transaction
from parcelscan.inference.review.store import audit
from parcelscan.inference.verdict import utc_now

SESSION_COOKIE = "parcelscan_session"
LOGIN_CSRF_COOKIE = "parcelscan_login_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
MIN_PASSWORD_LENGTH = 10
_USER_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


@dataclass(frozen=True)
class RateLimit:
    max_failures: int = 5
    lockout_s: float = 60.0
    window_s: float = 900.0  # failures older than this are forgotten


@dataclass(frozen=True)
class User:
    id: int
    name: str


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str
    token_sha256: str


class LockedOut(Exception):
    def __init__(self, retry_after_s: float):
        super().__init__(f"too many failed logins; try again in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


def _hasher() -> PasswordHasher:
    return PasswordHasher()


_DUMMY_HASH: str | None = None


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def check_user_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= _USER_NAME_CHARS:
        raise ParcelscanError(f"invalid user name {name!r}: 1-64 letters, digits, '.', '_', '-' or '@'")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ParcelscanError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise ParcelscanError("password too long (max 1024 characters)")
    return password


def add_user(conn: sqlite3.Connection, name: str, password: str, *, update: bool = False,
             actor: str = "cli") -> int:
    check_user_name(name)
    check_password(password)
    password_hash = hash_password(password)
    with transaction(conn):
        row = conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
        if row is not None and not update:
            raise ParcelscanError(f"user {name!r} exists; use --update to set a new password")
        if row is None:
            user_id = int(conn.execute("INSERT INTO users (name, password_hash, created_at) VALUES (?,?,?)",
                                       (name, password_hash, utc_now())).lastrowid)
            audit(conn, None, actor, "add_user", detail={"user": name})
        else:
            user_id = int(row["id"])
            conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
            conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))  # a new password ends old sessions
            audit(conn, None, actor, "set_password", detail={"user": name})
    return user_id


def _subjects(user_name: str, ip: str | None) -> list[str]:
    return [f"user:{user_name.lower()}", f"ip:{ip or 'unknown'}"]


def _lockout_remaining(conn: sqlite3.Connection, subject: str, limit: RateLimit, now: float) -> float:
    row = conn.execute("SELECT COUNT(*) AS n, MAX(at) AS last FROM login_failures WHERE subject = ? AND at > ?",
                       (subject, now - limit.window_s)).fetchone()
    if row["n"] >= limit.max_failures:
        return max(0.0, row["last"] + limit.lockout_s - now)
    return 0.0


def authenticate(conn: sqlite3.Connection, user_name: str, password: str, ip: str | None,
                 limit: RateLimit) -> User | None:
    """The user on the right password; None on a wrong one; LockedOut while a subject is locked.

    The attempt is counted as a failure *before* the (slow) password check and un-counted on success,
    so a burst of parallel guesses cannot slip past the limit.
    """
    global _DUMMY_HASH
    now = time.time()
    subjects = _subjects(user_name[:64], ip)
    with transaction(conn):
        remaining = max(_lockout_remaining(conn, s, limit, now) for s in subjects)
        if remaining > 0:
            raise LockedOut(remaining)
        failure_ids = [int(conn.execute("INSERT INTO login_failures (subject, at) VALUES (?, ?)",
                                        (s, now)).lastrowid) for s in subjects]
        conn.execute("DELETE FROM login_failures WHERE at < ?", (now - limit.window_s,))
    row = conn.execute("SELECT id, name, password_hash FROM users WHERE name = ? AND active = 1",
                       (user_name,)).fetchone()
    hasher = _hasher()
    ok = False
    if row is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hasher.hash(secrets.token_hex(16))
        with contextlib.suppress(VerificationError, VerifyMismatchError, InvalidHashError):
            hasher.verify(_DUMMY_HASH, password)  # the same work as a real check
    else:
        try:
            ok = hasher.verify(row["password_hash"], password)
        except (VerificationError, VerifyMismatchError, InvalidHashError):
            ok = False
    with transaction(conn):
        if not ok:
            audit(conn, row["id"] if row else None, user_name[:64], "login_failed", ip=ip)
            return None
        # success: un-count this attempt and forget the user's earlier failures (not the address's)
        conn.execute(f"DELETE FROM login_failures WHERE id IN ({','.join('?' * len(failure_ids))})", failure_ids)
        conn.execute("DELETE FROM login_failures WHERE subject = ?", (subjects[0],))
        if hasher.check_needs_rehash(row["password_hash"]):
            conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (hasher.hash(password), row["id"]))
        audit(conn, row["id"], row["name"], "login", ip=ip)
    return User(int(row["id"]), row["name"])


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(conn: sqlite3.Connection, user: User, ip: str | None, lifetime_s: float) -> tuple[str, Session]:
    """A new session; returns the cookie value (never stored) and the session."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    token_sha = _sha256(token)
    with transaction(conn):
        conn.execute("DELETE FROM sessions WHERE expires_at < ?", (time.time(),))
        conn.execute("INSERT INTO sessions (token_sha256, user_id, csrf_token, created_at, expires_at, ip) "
                     "VALUES (?,?,?,?,?,?)", (token_sha, user.id, csrf, utc_now(), time.time() + lifetime_s, ip))
    return token, Session(user, csrf, token_sha)


def lookup_session(conn: sqlite3.Connection, token: str | None) -> Session | None:
    if not token or len(token) > 256:
        return None
    row = conn.execute(
        """SELECT s.token_sha256, s.csrf_token, s.expires_at, u.id, u.name FROM sessions s
           JOIN users u ON u.id = s.user_id WHERE s.token_sha256 = ? AND u.active = 1""",
        (_sha256(token),)).fetchone()
    if row is None or row["expires_at"] < time.time():
        return None
    return Session(User(int(row["id"]), row["name"]), row["csrf_token"], row["token_sha256"])


def end_session(conn: sqlite3.Connection, session: Session, ip: str | None) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM sessions WHERE token_sha256 = ?", (session.token_sha256,))
        audit(conn, session.user.id, session.user.name, "logout", ip=ip)


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
