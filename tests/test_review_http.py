"""The review app over HTTP (FastAPI TestClient, in-process) on a real SQLite file with real scans.

Security: every route refuses anonymous requests (routes enumerated from the app, so a new one cannot
be forgotten), CSRF, path traversal, login rate limiting, session cookies. Rules: duplicate ingest,
two inspectors' conflict, undo in the audit trail, the append-only audit table, export.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*install `httpx2`.*")
from fastapi.routing import APIRoute, iter_route_contexts  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from parcelscan.inference.review import auth, store  # noqa: E402
from parcelscan.inference.review.app import create_app  # noqa: E402
from parcelscan.inference.review.db import connect  # noqa: E402
from parcelscan.inference.review.ingest import ingest  # noqa: E402
from parcelscan.inference.review.sample import write_sample_results  # noqa: E402

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}
# Deliberately a copy, not an import of app.PUBLIC_ROUTES: making a route public must change this test.
EXPECTED_PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/static/{name}")}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return write_sample_results(tmp_path_factory.mktemp("review_sample"), rows=120, cols=160)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory, sample) -> Path:
    """Users and the ingested sample, built once (argon2 is slow on purpose); each test gets a copy."""
    path = tmp_path_factory.mktemp("review_db") / "template.sqlite"
    conn = connect(path, create=True)
    for name, password in PASSWORDS.items():
        auth.add_user(conn, name, password)
    report = ingest(conn, sample)
    assert report.added == 5
    conn.close()  # the last connection checkpoints the WAL: one self-contained file
    return path


@pytest.fixture
def db_path(tmp_path, template_db) -> Path:
    path = tmp_path / "review.sqlite"
    shutil.copyfile(template_db, path)
    return path


@pytest.fixture
def app(db_path):
    return create_app(db_path, rate_limit=auth.RateLimit(max_failures=5, lockout_s=60.0))


def login(client: TestClient, user: str, password: str | None = None, expect: int = 303):
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/login", data={"username": user, "password": password or PASSWORDS[user],
                                           "csrf_token": token, "next": "/"}, follow_redirects=False)
    assert response.status_code == expect, response.text[:300]
    if expect != 303:
        return response
    home = client.get("/")
    return re.search(r'name="csrf-token" content="([^"]+)"', home.text).group(1)


def item_id(conn_path: Path, scan_id: str) -> int:
    conn = connect(conn_path)
    try:
        return int(conn.execute("SELECT id FROM items WHERE scan_id = ?", (scan_id,)).fetchone()[0])
    finally:
        conn.close()


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: {"name": "pseudo.png", "item_id": "1"}.get(m.group(1), "1"), path)


# --- access control --------------------------------------------------------------------------------------
def app_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route, those of included routers too (FastAPI keeps a router as one entry)."""
    return [(method, context.path) for context in iter_route_contexts(app.routes)
            if isinstance(context.original_route, APIRoute) for method in context.methods]


def test_every_route_refuses_anonymous_requests(app):
    routes = app_routes(app)
    assert len(routes) >= 12  # the app's real surface, not an empty list that passes trivially
    public = {(m, p) for m, p in routes if (m, p) in EXPECTED_PUBLIC}
    assert public == EXPECTED_PUBLIC
    client = TestClient(app)
    checked = 0
    for method, path in routes:
        if (method, path) in EXPECTED_PUBLIC:
            continue
        url = _concrete(path)
        kwargs = {"json": {"decision": "seizure"}} if method == "POST" else {}
        response = client.request(method, url, follow_redirects=False, **kwargs)
        if response.status_code == 303:
            assert method == "GET" and response.headers["location"].startswith("/login?next="), (method, url)
        else:
            assert response.status_code == 401, (method, url, response.status_code)
            assert response.json() == {"detail": "login required"}
        checked += 1
    assert checked == len(routes) - len(EXPECTED_PUBLIC)
    # and nothing was decided by all those anonymous POSTs
    conn = connect(app.state.settings.db_path)
    assert conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 0
    conn.close()


def test_no_interactive_docs_or_schema_exposed(app):
    client = TestClient(app)
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404


def test_login_sets_a_strict_httponly_cookie_stored_hashed(app, db_path):
    client = TestClient(app)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/login", data={"username": "alice", "password": PASSWORDS["alice"], "csrf_token": token},
                           follow_redirects=False)
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(auth.SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    conn = connect(db_path)
    stored = [row[0] for row in conn.execute("SELECT token_sha256 FROM sessions")]
    conn.close()
    assert value not in stored and len(stored) == 1 and len(stored[0]) == 64
    assert client.get("/api/queue").status_code == 200
    # logging out ends the session on the server: the old cookie no longer works
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)
    assert client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    stale = TestClient(app, cookies={auth.SESSION_COOKIE: value})
    assert stale.get("/api/queue").status_code == 401


def test_login_form_needs_its_csrf_token(app):
    client = TestClient(app)
    client.get("/login")
    response = client.post("/login", data={"username": "alice", "password": PASSWORDS["alice"]},
                           follow_redirects=False)
    assert response.status_code == 403
    assert client.get("/api/queue").status_code == 401


def test_open_redirect_after_login_is_refused(app):
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        client = TestClient(app)
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        response = client.post("/login", data={"username": "alice", "password": PASSWORDS["alice"],
                                               "csrf_token": token, "next": target}, follow_redirects=False)
        assert response.headers["location"] == "/"


def test_state_changing_requests_need_the_csrf_token(app, db_path):
    client = TestClient(app)
    csrf = login(client, "alice")
    target = item_id(db_path, "PX-0001")
    url = f"/api/items/{target}/decision"
    assert client.post(url, json={"decision": "false_alarm"}).status_code == 403
    assert client.post(url, json={"decision": "false_alarm"}, headers={"X-CSRF-Token": "x" * 43}).status_code == 403
    assert client.post("/api/undo").status_code == 403
    assert client.post("/logout", data={}).status_code == 403
    # another user's token is not this session's token
    other = TestClient(app)
    other_csrf = login(other, "bob")
    assert client.post(url, json={"decision": "false_alarm"}, headers={"X-CSRF-Token": other_csrf}).status_code == 403
    # a cross-site page cannot post even with a token it somehow learned
    response = client.post(url, json={"decision": "false_alarm"},
                           headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert response.status_code == 403
    conn = connect(db_path)
    assert conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 0
    conn.close()
    ok = client.post(url, json={"decision": "false_alarm"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json()["ok"] is True


# --- path traversal and images ---------------------------------------------------------------------------
def test_images_only_from_ingested_files_no_traversal(app, db_path, sample):
    secret = sample.parent / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER")
    client = TestClient(app)
    login(client, "alice")
    target = item_id(db_path, "PX-0001")
    attempts = [
        f"/images/{target}/../../secret.txt", f"/images/{target}/..%2F..%2Fsecret.txt",
        f"/images/{target}/%2e%2e%2f%2e%2e%2fsecret.txt", f"/images/{target}/secret.txt",
        f"/images/{target}/{secret}", f"/images/{target}/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/images/../../etc/passwd", "/static/../app.py", "/static/..%2Fapp.py", "/static/%2e%2e%2fdb.py",
        f"/images/{target}/pseudo.png%00.txt", f"/images/{target}/PX-0001_low.png",
    ]
    for url in attempts:
        response = client.get(url)
        assert response.status_code in (404, 401), (url, response.status_code)
        assert b"TOP-SECRET" not in response.content and b"root:" not in response.content
        assert b"import" not in response.content
    # ids of things never ingested
    for url in ("/images/999/pseudo.png", "/images/0/pseudo.png", "/images/-1/low.png"):
        assert client.get(url).status_code in (404, 422)
    assert client.get("/api/items/999").status_code == 404


def _png(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def test_every_image_kind_is_a_viewable_png(app, db_path):
    client = TestClient(app)
    login(client, "alice")
    target = item_id(db_path, "PX-0001")
    shapes = {kind: _png(client.get(f"/images/{target}/{kind}.png").content).shape
              for kind in ("pseudo", "heatmap", "low", "high", "material")}
    assert shapes["pseudo"] == (120, 160, 3)
    assert shapes["heatmap"] == (120, 160, 3)  # the station's overlay picture, served as written
    assert shapes["low"] == shapes["high"] == (120, 160)
    assert shapes["material"][2] == 3 and shapes["material"][1] > 500
    low = _png(client.get(f"/images/{target}/low.png").content)
    high = _png(client.get(f"/images/{target}/high.png").content)
    assert low.mean() < high.mean()  # the low channel is attenuated more: darker
    no_heat = item_id(db_path, "PX-0003")  # manual inspection without heatmap
    response = client.get(f"/images/{no_heat}/heatmap.png")
    assert response.status_code == 404 and "heatmap" in response.json()["detail"]
    assert client.get(f"/api/items/{no_heat}").json()["images"]["heatmap"] is None


def test_probability_map_heatmaps_become_a_transparent_overlay(tmp_path):
    results = write_sample_results(tmp_path / "prob", rows=120, cols=160, heatmap_format="probability")
    db = tmp_path / "prob.sqlite"
    conn = connect(db, create=True)
    auth.add_user(conn, "alice", PASSWORDS["alice"])
    ingest(conn, results)
    conn.close()
    client = TestClient(create_app(db))
    login(client, "alice")
    overlay = _png(client.get(f"/images/{item_id(db, 'PX-0001')}/heatmap.png").content)
    assert overlay.shape == (120, 160, 4)  # RGBA at the scan's size, though the file was half size
    alpha = overlay[..., 3]
    assert alpha.max() > 100 and (alpha == 0).mean() > 0.5  # opaque where flagged, clear elsewhere


def test_station_overlay_inverts_to_the_heatmap_it_was_drawn_from(sample):
    from parcelscan.inference.heatmap import overlay_heatmap
    from parcelscan.inference.review.images import overlay_to_probability, render_pseudo
    from parcelscan.inference.review.ingest import load_scan_any
    from parcelscan.inference.review.sample import heatmap_from_region, sample_scene

    scan = load_scan_any(sample.parent / "scans" / "PX-0001_low.png")
    _, _, region = sample_scene("nd_tile_adhesive", 120, 160)
    heat = heatmap_from_region(region, 0.97, np.random.default_rng(1))
    base = render_pseudo(scan)
    recovered = overlay_to_probability(overlay_heatmap(base, heat), base)
    assert ((recovered >= 0.5) == (heat >= 0.5)).all()  # the flagged pixels of the material view
    inside = (heat >= 0.25) & (heat < 0.45)
    assert np.median(np.abs(recovered[inside] - heat[inside])) < 0.01
    assert (recovered[heat < 0.2] == 0).all()


def test_a_scan_changed_after_ingest_is_refused(app, db_path, sample, tmp_path):
    target = item_id(db_path, "PX-0002")
    low = sample.parent / "scans" / "PX-0002_low.png"
    backup = tmp_path / "low.bak"
    shutil.copyfile(low, backup)
    try:
        shutil.copyfile(sample.parent / "scans" / "PX-0004_low.png", low)
        client = TestClient(app)
        login(client, "alice")
        response = client.get(f"/images/{target}/pseudo.png")
        assert response.status_code == 409 and "changed since it was ingested" in response.json()["detail"]
    finally:
        shutil.copyfile(backup, low)


# --- login rate limiting -----------------------------------------------------------------------------------
def test_wrong_passwords_are_rate_limited_per_user(app):
    client = TestClient(app)
    for _ in range(5):
        response = login(client, "alice", "wrong-password-x", expect=401)
        assert "Wrong user name or password" in response.text
    locked = login(client, "alice", "wrong-password-x", expect=429)
    assert 50 <= int(locked.headers["Retry-After"]) <= 61
    # while locked, even the right password is refused
    login(client, "alice", PASSWORDS["alice"], expect=429)
    assert client.get("/api/queue").status_code == 401


def test_wrong_passwords_are_rate_limited_per_address(app):
    client = TestClient(app)
    for k in range(5):  # a different (even non-existent) user name each time, one client address
        login(client, f"guess{k}", "wrong-password-x", expect=401)
    login(client, "bob", PASSWORDS["bob"], expect=429)


def test_lockout_ends_and_success_resets_the_user_counter(db_path):
    app = create_app(db_path, rate_limit=auth.RateLimit(max_failures=3, lockout_s=1.0))
    client = TestClient(app)
    for _ in range(3):
        login(client, "alice", "wrong-password-x", expect=401)
    login(client, "alice", PASSWORDS["alice"], expect=429)
    time.sleep(1.2)
    login(client, "alice", PASSWORDS["alice"])
    conn = connect(db_path)
    assert conn.execute("SELECT COUNT(*) FROM login_failures WHERE subject = 'user:alice'").fetchone()[0] == 0
    actions = [r[0] for r in conn.execute("SELECT action FROM audit WHERE user_name = 'alice' ORDER BY id")]
    conn.close()
    assert actions.count("login_failed") == 3 and actions[-1] == "login"


def test_a_database_that_became_unavailable_answers_503_not_a_traceback(app, db_path):
    """The SQLite file vanishes under a running app (moved, unmounted): every request that needs it gets
    503 with a plain reason and Retry-After (JSON for the API, a page for pages), and nothing is recorded;
    when it is back, the same request works."""
    client = TestClient(app, raise_server_exceptions=False)
    token = login(client, "alice")
    target = item_id(db_path, "PX-0001")
    away = db_path.with_name("elsewhere.sqlite")
    db_path.rename(away)
    try:
        for response in (client.get("/api/queue"), client.get(f"/review/{target}"),
                         client.post(f"/api/items/{target}/decision", json={"decision": "seizure"},
                                     headers={"X-CSRF-Token": token})):
            assert response.status_code == 503, response.text[:300]
            assert response.headers["retry-after"] == "5"
            assert "review database is unavailable" in response.text and "Traceback" not in response.text
            assert str(db_path) not in response.text  # the server's paths are not for the browser
        assert client.get("/api/queue").json()["detail"].startswith("The review database is unavailable")
        assert "<h1>Review database unavailable</h1>" in client.get("/").text
    finally:
        away.rename(db_path)
    assert client.get("/api/queue").status_code == 200
    assert store.item_decisions(connect(db_path), target) == []  # the refused decision was not recorded


# --- ingest -----------------------------------------------------------------------------------------------
def test_ingest_ignores_duplicates_and_clear_verdicts(tmp_path, sample):
    conn = connect(tmp_path / "q.sqlite", create=True)
    first = ingest(conn, sample)
    second = ingest(conn, sample)
    assert (first.added, first.duplicates, first.not_flagged) == (5, 0, 1)
    assert (second.added, second.duplicates, second.not_flagged) == (0, 5, 1)
    # the same scan flagged by another model is a new item; the same line again is not
    lines = [json.loads(line) for line in sample.read_text().splitlines()]
    other = dict(lines[0], model={"name": "m2", "version": "2", "sha256": "b" * 64})
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps(other) + "\n" + json.dumps(lines[0]) + "\n")
    third = ingest(conn, extra)
    assert (third.added, third.duplicates) == (1, 1)
    assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 6
    conn.close()


def test_ingest_dedups_by_scan_id_and_the_stations_content_digest(tmp_path, sample):
    """The station's inputs_sha256 (contents) is the key: files moved to done/ are the same item, a new scan
    reusing the file names is a new item; a line without the digest falls back to its paths."""
    from parcelscan.inference.verdict import inputs_digest

    line = next(json.loads(x) for x in sample.read_text().splitlines() if json.loads(x)["verdict"] == "suspect")
    hot = tmp_path / "hot"
    hot.mkdir()
    for path in line["inputs"]:
        shutil.copyfile(path, hot / Path(path).name)
    first = dict(line, inputs=[str(hot / Path(p).name) for p in line["inputs"]])
    first["inputs_sha256"] = inputs_digest(first["inputs"])
    done = tmp_path / "done"
    shutil.copytree(hot, done)
    moved = dict(first, inputs=[str(done / Path(p).name) for p in line["inputs"]])  # same contents, new paths
    conn = connect(tmp_path / "q.sqlite", create=True)
    lines = tmp_path / "verdicts.jsonl"
    lines.write_text(json.dumps(first) + "\n" + json.dumps(moved) + "\n")
    report = ingest(conn, lines)
    assert (report.added, report.duplicates) == (1, 1)
    key = conn.execute("SELECT inputs_sha256 FROM items").fetchone()[0]
    assert key == first["inputs_sha256"]
    # a new scan under the same names (the scanner reused them): other contents, so a new item
    again = tmp_path / "again"
    again.mkdir()
    for name in (Path(p).name for p in line["inputs"]):
        shutil.copyfile(hot / name, again / name)
    low = again / Path(line["inputs"][0]).name
    from parcelscan.datasets.scans.scanfile import read_png16, write_png

    pixels = read_png16(low)
    pixels[0, 0] ^= 1
    write_png(low, pixels)
    reused = dict(first, inputs=[str(again / Path(p).name) for p in line["inputs"]])
    reused["inputs_sha256"] = inputs_digest(reused["inputs"])
    # without a digest: the paths are the key (the same paths twice is one item)
    legacy = {k: v for k, v in reused.items() if k != "inputs_sha256"}
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps(reused) + "\n" + json.dumps(legacy) + "\n" + json.dumps(legacy) + "\n")
    report = ingest(conn, more)
    assert (report.added, report.duplicates) == (2, 1)
    # files that no longer hold what the station hashed are queued (fail closed) with that as their error
    changed = dict(first, scan_id="changed-since", inputs_sha256="0" * 64)
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps(changed) + "\n")
    assert ingest(conn, odd).scan_errors == 1
    error = conn.execute("SELECT scan_error FROM items WHERE scan_id = 'changed-since'").fetchone()[0]
    assert "changed since the station inspected them" in error
    conn.close()


def test_ingest_is_atomic_and_names_a_bad_line(tmp_path, sample):
    from parcelscan.errors import ParcelscanError

    lines = sample.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n{not json\n" + lines[1] + "\n")
    conn = connect(tmp_path / "q.sqlite", create=True)
    with pytest.raises(ParcelscanError, match=r"bad.jsonl:2: not valid JSON"):
        ingest(conn, bad)
    assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0
    # a torn last line (inspect still writing) is left for the next ingest
    torn = tmp_path / "torn.jsonl"
    torn.write_text(lines[0] + "\n" + lines[1][:40])
    report = ingest(conn, torn)
    assert report.added == 1 and report.incomplete_last_line
    conn.close()


def test_unreadable_flagged_scan_is_queued_not_dropped(tmp_path, app, db_path):
    line = {"scan_id": "GONE-1", "inputs": [str(tmp_path / "GONE-1_low.png"), str(tmp_path / "GONE-1_high.png")],
            "verdict": "manual_inspection", "score": None, "threshold": 0.5, "model": {"name": "m", "version": "1",
            "sha256": "c" * 64}, "heatmap": None, "error": "cannot read GONE-1_low.png", "latency_ms": 1.0,
            "station": "LHR-2", "scanned_at": "2026-03-05T10:00:00Z", "reasons": [], "provider": "cpu"}
    results = tmp_path / "gone.jsonl"
    results.write_text(json.dumps(line) + "\n")
    conn = connect(db_path)
    report = ingest(conn, results)
    conn.close()
    assert report.added == 1 and report.scan_errors == 1
    client = TestClient(app)
    login(client, "alice")
    queue = client.get("/api/queue").json()["items"]
    assert queue[0]["scan_id"] == "GONE-1"  # unscored: first, unknown risk is the highest
    gone = queue[0]["id"]
    item = client.get(f"/api/items/{gone}").json()
    assert "no such file" in item["scan_error"] and all(v is None for v in item["images"].values())
    assert client.get(f"/images/{gone}/pseudo.png").status_code == 404


# --- decisions, conflict, undo, audit ------------------------------------------------------------------------
def test_two_inspectors_both_kept_and_conflict_shown(app, db_path):
    alice, bob = TestClient(app), TestClient(app)
    alice_csrf, bob_csrf = login(alice, "alice"), login(bob, "bob")
    target = item_id(db_path, "PX-0004")
    first = alice.post(f"/api/items/{target}/decision", json={"decision": "seizure", "material": "Nd2O3"},
                       headers={"X-CSRF-Token": alice_csrf}).json()
    assert first["state"] == "seizure"
    second = bob.post(f"/api/items/{target}/decision", json={"decision": "false_alarm", "notes": "tiles, checked"},
                      headers={"X-CSRF-Token": bob_csrf}).json()
    assert second["state"] == "conflict"
    item = alice.get(f"/api/items/{target}").json()
    assert item["conflict"] is True
    assert {(d["user"], d["decision"]) for d in item["decisions"]} == {("alice", "seizure"), ("bob", "false_alarm")}
    assert item["mine"]["decision"] == "seizure"
    conflicts = alice.get("/api/queue?state=conflict").json()["items"]
    assert [i["id"] for i in conflicts] == [target]
    page = alice.get("/?state=conflict").text
    assert "PX-0004" in page and "state-conflict" in page


def test_undo_restores_and_is_recorded_in_the_audit(app, db_path):
    client = TestClient(app)
    csrf = login(client, "alice")
    headers = {"X-CSRF-Token": csrf}
    target = item_id(db_path, "PX-0001")
    first = client.post(f"/api/items/{target}/decision", json={"decision": "false_alarm"}, headers=headers).json()
    second = client.post(f"/api/items/{target}/decision", json={"decision": "seizure", "material": "Nd2O3",
                                                                 "scenario": "tile adhesive"}, headers=headers).json()
    assert second["replaced_decision_id"] == first["decision_id"]
    undone = client.post("/api/undo", headers=headers).json()
    assert (undone["undone"], undone["restored"], undone["item_id"]) == ("seizure", "false_alarm", target)
    assert client.get(f"/api/items/{target}").json()["mine"]["decision"] == "false_alarm"
    assert client.post("/api/undo", headers=headers).json()["restored"] is None
    assert client.get(f"/api/items/{target}").json()["state"] == "undecided"
    assert client.post("/api/undo", headers=headers).status_code == 409  # nothing left to undo
    conn = connect(db_path)
    rows = conn.execute("SELECT action, decision_id, replaced_decision_id, undoes_audit_id, user_name FROM audit "
                        "WHERE item_id = ? ORDER BY id", (target,)).fetchall()
    decide_ids = [r for r in conn.execute("SELECT id FROM audit WHERE item_id = ? AND action = 'decide' ORDER BY id",
                                          (target,))]
    conn.close()
    assert [tuple(r) for r in rows] == [
        ("decide", first["decision_id"], None, None, "alice"),
        ("decide", second["decision_id"], first["decision_id"], None, "alice"),
        ("undo", first["decision_id"], second["decision_id"], decide_ids[1][0], "alice"),
        ("undo", None, first["decision_id"], decide_ids[0][0], "alice"),
    ]
    history = TestClient(app)
    login(history, "bob")
    assert [h["action"] for h in history.get(f"/api/items/{target}").json()["history"]] == [
        "decide", "decide", "undo", "undo"]


def test_audit_and_decisions_refuse_update_and_delete(db_path):
    conn = connect(db_path)
    store.decide(conn, 1, 1, "alice", "unsure", notes="check later")
    before = conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    for statement in ("UPDATE audit SET user_name = 'mallory'", "DELETE FROM audit",
                      "UPDATE decisions SET decision = 'false_alarm'", "DELETE FROM decisions"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(statement)
    raw = sqlite3.connect(db_path)  # no app code in the way: the triggers live in the database
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("DELETE FROM audit WHERE action = 'decide'")
    raw.close()
    assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == before
    conn.close()


def test_decision_input_is_validated(app, db_path):
    client = TestClient(app)
    headers = {"X-CSRF-Token": login(client, "alice")}
    target = item_id(db_path, "PX-0001")
    assert client.post(f"/api/items/{target}/decision", json={"decision": "maybe"}, headers=headers).status_code == 400
    assert client.post(f"/api/items/{target}/decision", content=b"{", headers=headers).status_code == 400
    long_notes = {"decision": "unsure", "notes": "x" * 5000}
    assert client.post(f"/api/items/{target}/decision", json=long_notes, headers=headers).status_code == 400
    assert client.post("/api/items/999/decision", json={"decision": "unsure"}, headers=headers).status_code == 404


def test_queue_sorted_by_score_and_filtered(app, db_path):
    client = TestClient(app)
    headers = {"X-CSRF-Token": login(client, "alice")}
    items = client.get("/api/queue").json()["items"]
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True) and len(items) == 5
    assert {i["scan_id"] for i in client.get("/api/queue?station=FRA-1").json()["items"]} == {"PX-0002", "PX-0004"}
    assert [i["scan_id"] for i in client.get("/api/queue?verdict=manual_inspection").json()["items"]] == ["PX-0003"]
    dated = client.get("/api/queue?date_from=2026-03-03&date_to=2026-03-03").json()["items"]
    assert {i["scan_id"] for i in dated} == {"PX-0003", "PX-0004"}
    client.post(f"/api/items/{item_id(db_path, 'PX-0002')}/decision", json={"decision": "false_alarm"},
                headers=headers)
    assert "PX-0002" not in {i["scan_id"] for i in client.get("/api/queue").json()["items"]}
    assert [i["scan_id"] for i in client.get("/api/queue?state=false_alarm").json()["items"]] == ["PX-0002"]
    assert len(client.get("/api/queue?state=all").json()["items"]) == 5
    assert client.get("/api/queue?state=bogus").status_code == 400
    assert client.get("/api/queue?date_from=yesterday").status_code == 400


# --- export ----------------------------------------------------------------------------------------------
def test_export_is_a_dataset_that_data_check_accepts(app, db_path, tmp_path):
    from parcelscan.cli import main as cli_main
    from parcelscan.datasets.manifest import read_manifest
    from parcelscan.inference.review.export import export

    alice, bob = TestClient(app), TestClient(app)
    a, b = {"X-CSRF-Token": login(alice, "alice")}, {"X-CSRF-Token": login(bob, "bob")}
    decide = {"PX-0001": ("seizure", "Nd2O3", "tile adhesive"), "PX-0002": ("seizure", "dysprosium oxide", None),
              "PX-0004": ("false_alarm", None, None), "PX-0006": ("unsure", None, None)}
    for scan_id, (decision, material, scenario) in decide.items():
        alice.post(f"/api/items/{item_id(db_path, scan_id)}/decision",
                   json={"decision": decision, "material": material, "scenario": scenario}, headers=a)
    bob.post(f"/api/items/{item_id(db_path, 'PX-0001')}/decision", json={"decision": "seizure"}, headers=b)
    bob.post(f"/api/items/{item_id(db_path, 'PX-0003')}/decision", json={"decision": "seizure"}, headers=b)
    alice.post(f"/api/items/{item_id(db_path, 'PX-0003')}/decision", json={"decision": "false_alarm"}, headers=a)
    out = tmp_path / "export"
    conn = connect(db_path)
    report = export(conn, out, actor="test")
    conn.close()
    assert (report.suspect, report.clear) == (2, 1)
    assert report.left_out == {"unsure": 1, "conflict": 1, "undecided": 0, "unreadable": 0}
    records = {r.scan_id: r for r in read_manifest(out)}
    assert set(records) == {"PX-0001", "PX-0002", "PX-0004"}
    one = records["PX-0001"]
    assert (one.label, one.material, one.scenario, one.source) == ("suspect", "Nd2O3", "tile adhesive", "review")
    assert one.provenance["inspector"] == "alice, bob" and one.provenance["station"] == "LHR-2"
    assert one.provenance["flagged_by"][0]["model"]["name"] == "handwritten-sample"
    two = records["PX-0002"]
    assert two.material is None and two.provenance["material_reported"] == "dysprosium oxide"
    assert records["PX-0004"].label == "clear" and records["PX-0004"].scenario == "none"
    for record in records.values():
        for name in record.files.values():
            assert (out / name).is_file()
    source = Path(json.loads(connect(db_path).execute("SELECT inputs FROM items WHERE scan_id='PX-0001'")
                             .fetchone()[0])[0])
    assert (out / "PX-0001_low.png").read_bytes() == source.read_bytes()  # copied byte for byte
    assert cli_main(["data", "check", str(out)]) == 0
    with pytest.raises(Exception, match="not empty"):
        export(connect(db_path), out)


# --- CLI ----------------------------------------------------------------------------------------------
def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parcelscan", "review", *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_cli_add_user_ingest_export_errors(tmp_path, sample):
    db = tmp_path / "cli.sqlite"
    added = _cli("add-user", "carol", "--db", str(db), "--password-stdin", stdin="carol-password-1\n")
    assert added.returncode == 0 and "added user carol" in added.stdout
    again = _cli("add-user", "carol", "--db", str(db), "--password-stdin", stdin="carol-password-1\n")
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    short = _cli("add-user", "dave", "--db", str(db), "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "too short" in short.stderr
    first = _cli("ingest", str(sample), "--db", str(db))
    assert first.returncode == 0 and "5 added" in first.stdout and "queue: 5 undecided" in first.stdout
    second = _cli("ingest", str(sample), "--db", str(db))
    assert "0 added, 5 duplicate(s) ignored" in second.stdout
    missing = _cli("ingest", str(tmp_path / "nope.jsonl"), "--db", str(db))
    assert missing.returncode == 2 and missing.stderr.startswith("parcelscan review: error: results file not found")
    no_db = _cli("serve", "--db", str(tmp_path / "none.sqlite"), "--port", "1")
    assert no_db.returncode == 2 and "does not exist" in no_db.stderr
    bad_proxy = _cli("serve", "--db", str(db), "--port", "1", "--trusted-proxy", "proxy.example")
    assert bad_proxy.returncode == 2 and "trusted proxy 'proxy.example'" in bad_proxy.stderr
    exported = _cli("export", "--db", str(db), "--out", str(tmp_path / "ex"))
    assert exported.returncode == 0 and "exported 0 scan(s)" in exported.stdout and "5 undecided" in exported.stdout


def test_verdict_text_is_escaped_in_pages(app, db_path, sample, tmp_path):
    line = json.loads(sample.read_text().splitlines()[0])
    line.update(station="<img src=x onerror=alert(1)>", reasons=["<script>alert(2)</script>"],
                model={"name": "<b>m</b>", "version": "1", "sha256": "d" * 64})
    results = tmp_path / "xss.jsonl"
    results.write_text(json.dumps(line) + "\n")
    conn = connect(db_path)
    assert ingest(conn, results).added == 1
    conn.close()
    client = TestClient(app)
    login(client, "alice")
    page = client.get("/?state=all")
    assert "<img src=x onerror" not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "<b>m</b>" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"


def test_tiff_and_pseudo_colour_only_scans_are_reviewed_and_exported(tmp_path, sample):
    from parcelscan.cli import main as cli_main
    from parcelscan.datasets.manifest import read_manifest
    from parcelscan.datasets.scans.scanfile import write_tiff
    from parcelscan.inference.review.export import export
    from parcelscan.inference.review.ingest import load_scan_any

    source = load_scan_any(sample.parent / "scans" / "PX-0002_low.png")
    other = tmp_path / "other"
    other.mkdir()
    source.scan_id = "TIF-1"
    write_tiff(source, other / "TIF-1.tiff")
    shutil.copyfile(sample.parent / "scans" / "PX-0004_rgb.png", other / "RGB-1_rgb.png")  # a lone operator image
    base = json.loads(sample.read_text().splitlines()[0])
    lines = [dict(base, scan_id="TIF-1", inputs=[str(other / "TIF-1.tiff")], heatmap=None),
             dict(base, scan_id="RGB-1", inputs=[str(other / "RGB-1_rgb.png")], heatmap=None)]
    results = tmp_path / "formats.jsonl"
    results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    db = tmp_path / "formats.sqlite"
    conn = connect(db, create=True)
    auth.add_user(conn, "alice", PASSWORDS["alice"])
    assert ingest(conn, results).added == 2
    conn.close()
    client = TestClient(create_app(db))
    headers = {"X-CSRF-Token": login(client, "alice")}
    tif, rgb = item_id(db, "TIF-1"), item_id(db, "RGB-1")
    assert _png(client.get(f"/images/{tif}/material.png").content).ndim == 3
    assert _png(client.get(f"/images/{rgb}/pseudo.png").content).shape[2] == 3
    refused = client.get(f"/images/{rgb}/low.png")
    assert refused.status_code == 404 and "pseudo-colour-only" in refused.json()["detail"]
    assert client.get(f"/api/items/{rgb}").json()["images"]["material"] is None
    for target in (tif, rgb):
        client.post(f"/api/items/{target}/decision", json={"decision": "false_alarm"}, headers=headers)
    out = tmp_path / "export"
    conn = connect(db)
    report = export(conn, out)
    conn.close()
    assert report.clear == 2
    records = {r.scan_id: r for r in read_manifest(out)}
    assert records["TIF-1"].kind == "dual_energy" and set(records["TIF-1"].files) >= {"low", "high"}
    assert records["RGB-1"].kind == "pseudo_color" and records["RGB-1"].files["rgb"] == "RGB-1_rgb.png"
    assert cli_main(["data", "check", str(out)]) == 0


# --- decision keys: one definition (parcelscan.inference.review.DECISIONS) ----------------------------------
def test_decision_keys_and_labels_come_from_the_python_definition(app, db_path, monkeypatch):
    from parcelscan.inference.review import DECISIONS, Decision

    monkeypatch.setitem(DECISIONS, "false_alarm", Decision("false_alarm", "x", "Not a threat", "cleared, next item"))
    client = TestClient(app)
    login(client, "alice")
    page = client.get(f"/review/{item_id(db_path, 'PX-0001')}").text
    buttons = re.findall(r'<button[^>]*data-decision="(\w+)"[^>]*data-key="(.)"[^>]*data-label="([^"]+)"[^>]*>'
                         r'\s*<kbd>(.)</kbd>\s*([^<]+?)\s*</button>', page)
    assert buttons == [("seizure", "s", "Seizure", "S", "Seizure"),
                       ("false_alarm", "x", "Not a threat", "X", "Not a threat"),
                       ("unsure", "u", "Unsure", "U", "Unsure")]
    help_rows = re.findall(r"<tr><td><kbd>(.)</kbd></td><td>([^<]+)</td></tr>", page)
    assert ("X", "cleared, next item") in help_rows and not any(key == "F" for key, _ in help_rows)
    assert "False alarm" not in page and "false alarm" not in page.lower().replace("false_alarm", "")
    queue = client.get("/?state=all").text
    assert "not a threat" in queue and "false alarm" not in queue.split("</header>")[0]


def test_a_decision_key_that_collides_with_a_page_key_is_refused(db_path, monkeypatch):
    from parcelscan.errors import ParcelscanError
    from parcelscan.inference.review import DECISIONS, Decision

    monkeypatch.setitem(DECISIONS, "unsure", Decision("unsure", "h", "Unsure", "unsure"))  # H toggles the heatmap
    with pytest.raises(ParcelscanError, match="'h'"):
        create_app(db_path)


# --- hostile values: non-finite sidecar numbers, ids beyond SQLite's integers ---------------------------------
@pytest.mark.parametrize("pitch", ["NaN", "Infinity", "-Infinity"])
def test_an_item_with_a_non_finite_sidecar_pitch_opens_and_says_so(app, db_path, sample, tmp_path, pitch):
    scans = tmp_path / "scans"
    shutil.copytree(sample.parent / "scans", scans)
    sidecar = scans / "PX-0001.json"
    sidecar.write_text(sidecar.read_text().replace('"pixel_pitch_mm": ', f'"pixel_pitch_mm": {pitch}, "was": '))
    line = json.loads(sample.read_text().splitlines()[0])
    line.update(scan_id="PX-0001", inputs=[str(scans / "PX-0001_low.png"), str(scans / "PX-0001_high.png")],
                model={"name": "m", "version": "1", "sha256": "f" * 64}, heatmap=None)
    results = tmp_path / "nan.jsonl"
    results.write_text(json.dumps(line) + "\n")
    conn = connect(db_path)
    assert ingest(conn, results).added == 1
    target = int(conn.execute("SELECT MAX(id) FROM items").fetchone()[0])
    conn.close()
    client = TestClient(app)
    login(client, "alice")
    response = client.get(f"/api/items/{target}")
    assert response.status_code == 200, response.text[:300]
    item = response.json()
    problems = " ".join(item["problems"])
    assert "pixel_pitch_mm" in problems and pitch.lstrip("-") in problems
    assert item["scan"]["meta"].get("pixel_pitch_mm") is None
    for kind in ("pseudo", "low", "high", "material"):
        assert client.get(f"/images/{target}/{kind}.png").status_code in (200, 404, 409), kind
    assert client.get(f"/review/{target}").status_code == 200


@pytest.mark.parametrize("bad_id", [2**63, 10**30, -(2**63) - 1])
def test_an_out_of_range_item_id_is_not_found_not_a_server_error(app, bad_id):
    client = TestClient(app)
    headers = {"X-CSRF-Token": login(client, "alice")}
    for url in (f"/api/items/{bad_id}", f"/review/{bad_id}", f"/images/{bad_id}/pseudo.png"):
        assert client.get(url).status_code in (404, 422), url
    response = client.post(f"/api/items/{bad_id}/decision", json={"decision": "unsure"}, headers=headers)
    assert response.status_code in (404, 422)


# --- behind the HTTPS proxy: X-Forwarded-For, from the configured proxy only -----------------------------------
PROXY = "10.0.0.5"


def via_proxy(app, client_address: str, forwarded: str | None = None) -> TestClient:
    """A browser at ``client_address`` reached through the proxy (which appends the address it saw)."""
    header = f"{forwarded}, {client_address}" if forwarded else client_address
    return TestClient(app, client=(PROXY, 40000), headers={"X-Forwarded-For": header})


def test_behind_a_trusted_proxy_one_users_wrong_passwords_do_not_lock_out_everyone(db_path):
    untrusted = create_app(db_path, rate_limit=auth.RateLimit(max_failures=5, lockout_s=60.0))
    for _ in range(5):
        login(via_proxy(untrusted, "198.51.100.1"), "alice", "wrong-password-x", expect=401)
    # without the setting, every request seems to come from the proxy: bob is locked out by alice's typos
    login(via_proxy(untrusted, "198.51.100.2"), "bob", PASSWORDS["bob"], expect=429)


def test_the_trusted_proxy_reports_the_client_address(tmp_path, template_db):
    db = tmp_path / "proxy.sqlite"
    shutil.copyfile(template_db, db)
    app = create_app(db, rate_limit=auth.RateLimit(max_failures=5, lockout_s=60.0), trusted_proxies=[PROXY])
    for _ in range(5):
        login(via_proxy(app, "198.51.100.1"), "alice", "wrong-password-x", expect=401)
    login(via_proxy(app, "198.51.100.2"), "bob", PASSWORDS["bob"])  # another client: not locked out
    login(via_proxy(app, "198.51.100.1"), "alice", PASSWORDS["alice"], expect=429)  # alice is (per user)
    # per address still holds, for the real client: five guesses at other names lock that client only
    for k in range(5):
        login(via_proxy(app, "203.0.113.9"), f"guess{k}", "wrong-password-x", expect=401)
    login(via_proxy(app, "203.0.113.9"), "bob", PASSWORDS["bob"], expect=429)
    # a client cannot escape by writing its own X-Forwarded-For: only the proxy's last entry counts
    for k in range(5):
        login(via_proxy(app, "203.0.113.20", forwarded=f"192.0.2.{k}"), f"other{k}", "wrong-password-x",
              expect=401)
    login(via_proxy(app, "203.0.113.20", forwarded="192.0.2.99"), "bob", PASSWORDS["bob"], expect=429)
    conn = connect(db)
    addresses = {row[0] for row in conn.execute("SELECT ip FROM audit WHERE action = 'login_failed'")}
    conn.close()
    assert addresses == {"198.51.100.1", "203.0.113.9", "203.0.113.20"}


def test_x_forwarded_for_from_anyone_but_the_proxy_is_ignored(db_path):
    app = create_app(db_path, rate_limit=auth.RateLimit(max_failures=5, lockout_s=60.0), trusted_proxies=[PROXY])
    for k in range(5):  # a direct client rotating forged addresses is still one address
        forged = TestClient(app, client=("198.51.100.66", 1234), headers={"X-Forwarded-For": f"192.0.2.{k}"})
        login(forged, f"guess{k}", "wrong-password-x", expect=401)
    direct = TestClient(app, client=("198.51.100.66", 1234))
    login(direct, "bob", PASSWORDS["bob"], expect=429)


def test_a_bad_trusted_proxy_setting_is_refused(db_path):
    from parcelscan.errors import ParcelscanError

    with pytest.raises(ParcelscanError, match="trusted proxy"):
        create_app(db_path, trusted_proxies=["proxy.example"])
