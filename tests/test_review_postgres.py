"""The review store on a real PostgreSQL server (issue 19): same schema and rules as SQLite, the append-only
trail enforced by the server, credentials never in the URL.

The server is a throwaway cluster (``postgres_server`` in conftest: initdb + pg_ctl from Debian's
``postgresql`` package); each test gets a fresh database with an owner role (migrations) and an
application role (everything else), passwords only in a ``PGPASSFILE``. Without PostgreSQL installed
these tests fail, they never skip.
"""

from __future__ import annotations

import io
import json
import re
import sys
import warnings
from pathlib import Path

import psycopg
import pytest

warnings.filterwarnings("ignore", message=".*install `httpx2`.*")
from fastapi.testclient import TestClient  # noqa: E402

from parcelscan.cli import main  # noqa: E402
from parcelscan.errors import ParcelscanError  # noqa: E402
from parcelscan.inference.review import auth, store  # noqa: E402
from parcelscan.inference.review.app import create_app  # noqa: E402
from parcelscan.inference.review.db import PgConnection, close_pools, connect, migrate, translate  # noqa: E402
from parcelscan.inference.review.export import export  # noqa: E402
from parcelscan.inference.review.ingest import ingest  # noqa: E402
from parcelscan.inference.review.migrations import HEAD  # noqa: E402
from parcelscan.inference.review.sample import write_sample_results  # noqa: E402

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return write_sample_results(tmp_path_factory.mktemp("pg_sample"), rows=96, cols=128)


def _scenario(conn, sample: Path, out_dir: Path) -> dict:
    """One morning's work through the store: users, ingest (twice), decisions, a conflict, undo, queries, export.
    Returns everything observable, without ids' and clocks' values (those differ between runs)."""
    ids = {name: auth.add_user(conn, name, password) for name, password in PASSWORDS.items()}
    first, again = ingest(conn, sample), ingest(conn, sample)
    items = {row["scan_id"]: int(row["id"]) for row in conn.execute("SELECT id, scan_id FROM items")}
    alice, bob = ids["alice"], ids["bob"]
    store.decide(conn, items["PX-0001"], alice, "alice", "seizure", material="Nd2O3", scenario="powder bag")
    store.decide(conn, items["PX-0001"], bob, "bob", "seizure", notes="agree")
    store.decide(conn, items["PX-0002"], alice, "alice", "false_alarm")
    store.decide(conn, items["PX-0002"], bob, "bob", "seizure")  # a conflict
    store.decide(conn, items["PX-0004"], alice, "alice", "unsure")
    store.decide(conn, items["PX-0004"], alice, "alice", "false_alarm")  # replaces her own
    undone = store.undo(conn, alice, "alice")  # back to unsure
    with pytest.raises(LookupError):
        store.decide(conn, 10_000, alice, "alice", "seizure")
    names = {v: k for k, v in items.items()}

    def strip(rows):
        return [{k: (names.get(v, v) if k in ("id", "item_id") else v) for k, v in row.items()
                 if k not in ("at", "created_at", "decision_id", "replaced_decision_id", "undoes_audit_id", "user_id")}
                for row in rows]

    queues = {state: [names[r["id"]] for r in store.queue(conn, store.QueueFilter(state=state), alice)]
              for state in store.STATES}
    filtered = [names[r["id"]] for r in store.queue(conn, store.QueueFilter(station="LHR-2", state="all",
                                                                            date_from="2026-03-03"), alice)]
    report = export(conn, out_dir)
    manifest = [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]
    return {
        "ingest": (first.summary(), again.summary()),
        "queue_all": strip(store.queue(conn, store.QueueFilter(state="all"), alice)), "queues": queues,
        "filtered": filtered, "counts": store.counts(conn, alice), "stations": store.stations(conn),
        "neighbours": {k: v for k, v in store.neighbours(conn, store.QueueFilter(state="all"), alice,
                                                          items["PX-0002"]).items() if k in ("index", "total")},
        "decisions": {s: strip(store.item_decisions(conn, i)) for s, i in items.items()},
        "history": {s: strip(store.item_history(conn, i)) for s, i in items.items()},
        "undo": {k: undone[k] for k in ("undone", "restored", "state")},
        "export": (report.suspect, report.clear, report.left_out),
        "manifest": [(r["scan_id"], r["label"], r["material"], r["provenance"]["inspector"]) for r in manifest],
    }


def test_the_store_behaves_the_same_on_postgresql_and_sqlite(review_postgres, sample, tmp_path):
    lite = connect(tmp_path / "review.sqlite", create=True)
    expected = _scenario(lite, sample, tmp_path / "export-sqlite")
    lite.close()
    conn = connect(review_postgres.url)
    assert isinstance(conn, PgConnection)
    got = _scenario(conn, sample, tmp_path / "export-pg")
    conn.close()
    assert expected["counts"]["conflict"] == 1 and expected["undo"]["restored"] == "unsure"  # a real scenario
    assert "PX-0003" in expected["queues"]["undecided"] and "PX-0001" not in expected["queues"]["undecided"]
    for key in expected:
        assert got[key] == expected[key], key


def test_the_append_only_trail_is_enforced_by_the_server(review_postgres):
    conn = connect(review_postgres.url)
    user = auth.add_user(conn, "alice", PASSWORDS["alice"])
    conn.close()
    # the application role: no privilege to change the trail at all
    with psycopg.connect(review_postgres.url, autocommit=True) as app:
        for statement in ("UPDATE audit SET user_name = 'mallory'", "DELETE FROM audit", "TRUNCATE audit",
                          "UPDATE decisions SET decision = 'seizure'", "DELETE FROM decisions", "TRUNCATE decisions",
                          "ALTER TABLE audit DISABLE TRIGGER USER"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)
        app.execute("INSERT INTO audit (at, user_id, user_name, action) VALUES ('t', %s, 'alice', 'note')", (user,))
    # the owner holds the privileges, and the triggers still refuse (TRUNCATE by a statement trigger)
    with psycopg.connect(review_postgres.owner_url, autocommit=True) as owner:
        for statement in ("UPDATE audit SET user_name = 'mallory'", "DELETE FROM audit WHERE action = 'note'",
                          "TRUNCATE audit CASCADE", "TRUNCATE decisions CASCADE"):
            with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="append-only"):
                owner.execute(statement)
        assert owner.execute("SELECT COUNT(*) FROM audit WHERE action = 'note'").fetchone()[0] == 1


def test_the_owner_role_is_refused_and_a_disabled_trigger_is_noticed(review_postgres):
    with pytest.raises(ParcelscanError, match=r"may UPDATE audit.*application role"):
        connect(review_postgres.owner_url)
    with psycopg.connect(review_postgres.owner_url, autocommit=True) as owner:
        owner.execute("ALTER TABLE audit DISABLE TRIGGER audit_no_delete")
    close_pools()
    with pytest.raises(ParcelscanError, match="audit_no_delete"):
        connect(review_postgres.url)
    report = migrate(review_postgres.owner_url, app_role=review_postgres.app_role)
    assert report.rearmed == ["audit_no_delete"] and report.before == report.after == HEAD
    connect(review_postgres.url).close()
    with pytest.raises(ParcelscanError, match="owns the review tables"):  # the owner as the app role: refused
        migrate(review_postgres.owner_url, app_role=review_postgres.owner_role)
    with psycopg.connect(review_postgres.owner_url, autocommit=True) as owner:  # and nothing was revoked
        assert owner.execute("SELECT has_table_privilege('audit', 'UPDATE')").fetchone()[0]


def test_an_unmigrated_database_says_to_run_migrate(postgres_server, review_postgres):
    with postgres_server.admin() as admin:
        admin.execute(f"CREATE DATABASE {review_postgres.name}_empty OWNER {review_postgres.owner_role}")
        admin.execute(f"GRANT CONNECT ON DATABASE {review_postgres.name}_empty TO {review_postgres.app_role}")
    with open(review_postgres.passfile, "a") as passfile:  # same roles, same passwords, another database
        for line in review_postgres.passfile.read_text().splitlines():
            if f":{review_postgres.name}:" in line:
                passfile.write(line.replace(f":{review_postgres.name}:", f":{review_postgres.name}_empty:") + "\n")
    url = review_postgres.url + "_empty"
    with pytest.raises(ParcelscanError, match=r"no review schema yet.*review migrate"):
        connect(url)


def test_a_url_with_a_password_is_refused_and_not_echoed(capsys, tmp_path):
    for url in ("postgresql://app:s3cret-pw@127.0.0.1:5432/review", "postgresql://app@127.0.0.1/review?password=s3cret-pw"):
        for verb in (["serve"], ["ingest", str(tmp_path / "x.jsonl")], ["add-user", "bob"],
                     ["export", "--out", str(tmp_path / "o")], ["migrate"]):
            assert main(["review", *verb, "--db", url]) == 2
            err = capsys.readouterr().err
            assert "carries a password" in err and "PGPASSWORD" in err and ".pgpass" in err, err
            assert "s3cret-pw" not in err
    assert not (tmp_path / "o").exists()


def test_the_cli_on_postgresql(review_postgres, sample, tmp_path, capsys, monkeypatch):
    """add-user, ingest, export and migrate with --db postgresql://… and the password from PGPASSFILE."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORDS["alice"] + "\n"))
    assert main(["review", "add-user", "alice", "--password-stdin", "--db", review_postgres.url]) == 0
    assert main(["review", "ingest", str(sample), "--db", review_postgres.url]) == 0
    assert main(["review", "ingest", str(sample), "--db", review_postgres.url]) == 0
    out = capsys.readouterr().out
    flagged = sum(json.loads(line)["verdict"] != "clear" for line in sample.read_text().splitlines())
    assert f"{flagged} added" in out and f"{flagged} duplicate(s) ignored" in out, out
    assert f"queue: {flagged} undecided" in out, out
    assert main(["review", "migrate", "--db", review_postgres.owner_url,
                 "--app-role", review_postgres.app_role]) == 0
    assert f"schema at revision {HEAD} (up to date)" in capsys.readouterr().out
    conn = connect(review_postgres.url)
    alice = int(conn.execute("SELECT id FROM users WHERE name = ?", ("alice",)).fetchone()[0])
    item = int(conn.execute("SELECT id FROM items WHERE scan_id = :s", {"s": "PX-0001"}).fetchone()[0])
    store.decide(conn, item, alice, "alice", "seizure", material="Nd2O3")
    conn.close()
    assert main(["review", "export", "--db", review_postgres.url, "--out", str(tmp_path / "out")]) == 0
    assert "exported 1 scan(s)" in capsys.readouterr().out
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-passfile"))
    close_pools()
    assert main(["review", "ingest", str(sample), "--db", review_postgres.url]) == 2
    err = capsys.readouterr().err
    assert "cannot connect" in err and "PGPASSWORD" in err and "Traceback" not in err, err


def test_the_web_app_on_postgresql(review_postgres, sample):
    conn = connect(review_postgres.url)
    for name, password in PASSWORDS.items():
        auth.add_user(conn, name, password)
    ingest(conn, sample)
    item = int(conn.execute("SELECT id FROM items WHERE scan_id = 'PX-0002'").fetchone()[0])
    conn.close()
    app = create_app(review_postgres.url)
    tokens = {}
    clients = {name: TestClient(app) for name in PASSWORDS}
    for name, client in clients.items():
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        client.post("/login", data={"username": name, "password": PASSWORDS[name], "csrf_token": token, "next": "/"})
        tokens[name] = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)
    post = {name: (lambda path, body=None, n=name: clients[n].post(path, json=body,
                                                                   headers={"X-CSRF-Token": tokens[n]}))
            for name in PASSWORDS}
    assert post["alice"](f"/api/items/{item}/decision", {"decision": "seizure"}).json()["state"] == "seizure"
    assert post["bob"](f"/api/items/{item}/decision", {"decision": "false_alarm"}).json()["state"] == "conflict"
    assert post["bob"]("/api/undo").json()["state"] == "seizure"
    body = clients["alice"].get(f"/api/items/{item}").json()
    assert [h["action"] for h in body["history"]] == ["decide", "decide", "undo"]
    assert clients["alice"].get(f"/images/{item}/pseudo.png").status_code == 200
    assert clients["alice"].get("/api/queue?state=all").json()["counts"]["seizure"] == 1
    assert post["alice"]("/api/items/99999/decision", {"decision": "seizure"}).status_code == 404


def test_translate_leaves_quoted_text_and_casts_alone():
    assert translate("SELECT ?, ':x', '%', a::text FROM t WHERE b = ? -- c?%") == (
        "SELECT %s, ':x', '%%', a::text FROM t WHERE b = %s -- c?%%", False)
    assert translate("INSERT OR IGNORE INTO items (a) VALUES (:a);") == (
        "INSERT INTO items (a) VALUES (%(a)s) ON CONFLICT DO NOTHING RETURNING id", True)
    assert translate("INSERT INTO current_decisions (a) VALUES (?)")[1] is False
    with pytest.raises(ValueError, match="mixed"):
        translate("SELECT ? WHERE a = :a")
    with pytest.raises(ValueError, match="INSERT OR IGNORE"):
        translate("INSERT OR REPLACE INTO users (a) VALUES (?)")


def test_the_web_app_answers_503_while_postgresql_is_down(review_postgres, sample, monkeypatch):
    """The server stops under a running app: requests get 503 with a plain reason (no traceback), and the app
    works again once the server is back, without a restart (the pool reconnects)."""
    from parcelscan.inference.review import db

    conn = connect(review_postgres.url)
    auth.add_user(conn, "alice", PASSWORDS["alice"])
    ingest(conn, sample)
    conn.close()
    close_pools()
    monkeypatch.setattr(db, "POOL_TIMEOUT_S", 1.0)  # how long a request waits for a connection (default 10 s)
    app = create_app(review_postgres.url)
    client = TestClient(app, raise_server_exceptions=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"username": "alice", "password": PASSWORDS["alice"], "csrf_token": token,
                                "next": "/"})
    assert client.get("/api/queue").status_code == 200
    review_postgres.server.stop()
    try:
        down = client.get("/api/queue")
        page = client.get("/")
    finally:
        review_postgres.server.start()
    assert down.status_code == 503 and down.headers["retry-after"] == "5", down.text[:300]
    assert down.json()["detail"].startswith("The review database is unavailable")
    assert page.status_code == 503 and "Review database unavailable" in page.text and "Traceback" not in page.text
    assert client.get("/api/queue").status_code == 200
