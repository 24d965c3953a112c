"""Durability and concurrency of the review store, on SQLite and on a real PostgreSQL server (issue 19).

* The review server, killed with SIGKILL while 10 clients post decisions, loses none it acknowledged
  (SQLite file and PostgreSQL).
* The PostgreSQL *server* killed (SIGKILL to the postmaster and every backend) under the same load and
  restarted: every decision acknowledged before or after the crash is there; the app reconnects by itself.
* Several stations ingest concurrently (one shared results file among them) while 10 inspectors decide:
  no duplicate item, no lost item, no lost decision.

Real server processes (``parcelscan review serve`` → uvicorn on 127.0.0.1, a free port), real clients
(httpx, one thread and one account each), real databases. Every decision the server answered 200 to is
counted; afterwards the database is reopened and every acknowledged decision must be there, as
acknowledged, with its audit row. Loops are bounded in count and time; nothing leaves the loopback interface.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from parcelscan.inference.review import auth, store
from parcelscan.inference.review.db import close_pools, connect
from parcelscan.inference.review.ingest import ingest
from parcelscan.inference.review.sample import write_sample_results

N_CLIENTS = 10
KILL_AFTER_ACKS = 250  # kill once this many decisions were acknowledged in all …
KILL_AFTER_S = 20.0  # … or after this long, whichever comes first
MAX_POSTS_PER_CLIENT = 5000
PASSWORD = "durable-password-1"
DECISIONS = ("seizure", "false_alarm", "unsure")
BACKENDS = ("sqlite", "postgresql")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(db: Path | str, port: int, log: Path) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115 - the server process writes it until it is killed
    process = subprocess.Popen([sys.executable, "-m", "parcelscan", "review", "serve", "--db", str(db),
                                "--host", "127.0.0.1", "--port", str(port)], stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login", timeout=1.0).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start within 60 s")


def login(base: str, user: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base, timeout=30.0, follow_redirects=True)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/login", data={"username": user, "password": PASSWORD, "csrf_token": token})
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', response.text)
    assert csrf, f"login of {user} failed: {response.status_code}"
    return client, csrf.group(1)


def _database(backend: str, request, tmp_path: Path) -> Path | str:
    return tmp_path / "review.sqlite" if backend == "sqlite" else request.getfixturevalue("review_postgres").url


def _prepare(db: Path | str, results: Path, users: list[str]) -> list[int]:
    conn = connect(db, create=True)
    for user in users:
        auth.add_user(conn, user, PASSWORD)
    ingest(conn, results)
    item_ids = [row[0] for row in conn.execute("SELECT id FROM items ORDER BY id")]
    conn.close()
    return item_ids


def _post_loop(client: httpx.Client, csrf: str, k: int, user: str, item_ids: list[int], acks: list[dict],
               errors: list[str], go: threading.Event, stop: threading.Event, deadline_s: float,
               retry: bool) -> None:
    """Post decisions until ``stop`` (or the deadline); an error ends the loop unless ``retry``."""
    go.wait(10)
    deadline = time.monotonic() + deadline_s
    for n in range(MAX_POSTS_PER_CLIENT):
        if stop.is_set() or time.monotonic() > deadline:
            break
        item, decision = item_ids[(k + n) % len(item_ids)], DECISIONS[(k * 7 + n) % 3]
        body = {"decision": decision, "notes": f"{user} #{n}"}
        try:
            response = client.post(f"/api/items/{item}/decision", json=body, headers={"X-CSRF-Token": csrf})
        except httpx.TransportError as error:  # the server is gone: this one was never acknowledged
            errors.append(type(error).__name__)
            if not retry:
                break
            time.sleep(0.2)
            continue
        if response.status_code == 200 and response.json().get("ok"):
            acks.append({"id": response.json()["decision_id"], "item": item, "decision": decision,
                         "notes": body["notes"]})
        else:
            errors.append(f"HTTP {response.status_code}")
            if not retry:
                break
            time.sleep(0.2)
    client.close()


def _check_acknowledged(db: Path | str, users: list[str], item_ids: list[int], acks: list[list[dict]]) -> dict:
    """Every acknowledged decision stored as acknowledged, with its audit row; current pointers not stale."""
    conn = connect(db)  # SQLite: WAL recovery happens here
    if isinstance(db, Path):
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {row["id"]: row for row in conn.execute(
        "SELECT d.id, d.item_id, d.decision, d.notes, u.name FROM decisions d JOIN users u ON u.id = d.user_id")}
    audited = {row[0] for row in conn.execute("SELECT decision_id FROM audit WHERE action = 'decide'")}
    acknowledged = [a for per_client in acks for a in per_client]
    lost = [a for a in acknowledged if a["id"] not in stored]
    wrong = [a for k, per_client in enumerate(acks) for a in per_client if a["id"] in stored and (
        stored[a["id"]]["item_id"], stored[a["id"]]["decision"], stored[a["id"]]["notes"], stored[a["id"]]["name"])
        != (a["item"], a["decision"], a["notes"], users[k])]
    # each inspector's current decision on an item is their last acknowledged one, or one committed after it
    current = {(row[0], row[1]): row[2] for row in conn.execute(
        "SELECT cd.item_id, u.name, cd.decision_id FROM current_decisions cd JOIN users u ON u.id = cd.user_id")}
    stale = [(users[k], a["item"]) for k, per_client in enumerate(acks)
             for a in [max((x for x in per_client if x["item"] == item), key=lambda x: x["id"], default=None)
                       for item in item_ids] if a is not None and current.get((a["item"], users[k]), -1) < a["id"]]
    conn.close()
    assert not lost, f"acknowledged decisions lost: {lost[:5]}"
    assert not wrong, f"acknowledged decisions stored differently: {wrong[:5]}"
    assert not stale, f"current decisions older than acknowledged ones: {stale[:5]}"
    assert set(stored) <= audited, "every stored decision has its audit row"
    return {"acknowledged": len(acknowledged), "stored_decisions": len(stored),
            "committed_but_unacknowledged": len(stored) - len(acknowledged), "lost": len(lost),
            "mismatched": len(wrong), "stale_current": len(stale)}


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_during_concurrent_decisions_loses_no_acknowledged_decision(backend, request, tmp_path):
    results = write_sample_results(tmp_path / "sample", rows=96, cols=128)
    db = _database(backend, request, tmp_path)
    users = [f"inspector{k}" for k in range(N_CLIENTS)]
    item_ids = _prepare(db, results, users)

    port = free_port()
    server = start_server(db, port, tmp_path / "server.log")
    base = f"http://127.0.0.1:{port}"
    sessions = [login(base, user) for user in users]
    acks: list[list[dict]] = [[] for _ in users]
    errors: list[list[str]] = [[] for _ in users]
    go, stop = threading.Event(), threading.Event()
    threads = [threading.Thread(target=_post_loop, args=(*sessions[k], k, users[k], item_ids, acks[k], errors[k], go,
                                                         stop, KILL_AFTER_S + 10, False), daemon=True)
               for k in range(N_CLIENTS)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    go.set()
    while sum(map(len, acks)) < KILL_AFTER_ACKS and time.monotonic() - started < KILL_AFTER_S:
        time.sleep(0.01)
    acked_at_kill = sum(map(len, acks))
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    killed_after_s = time.monotonic() - started
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert server.returncode == -signal.SIGKILL
    assert acked_at_kill >= 50, f"too few decisions before the kill ({acked_at_kill}): the test would prove little"
    assert all(errors), "every client must have seen the server die (else the kill was not mid-traffic)"

    summary = {"backend": backend, "clients": N_CLIENTS, "acked_at_kill": acked_at_kill,
               **_check_acknowledged(db, users, item_ids, acks), "killed_after_s": round(killed_after_s, 2),
               "acks_per_s": round(acked_at_kill / killed_after_s, 1)}
    print("durability:", json.dumps(summary))
    assert summary["committed_but_unacknowledged"] <= N_CLIENTS  # at most one in flight per client


@pytest.mark.slow
def test_killing_the_postgresql_server_loses_no_acknowledged_decision(review_postgres, tmp_path):
    results = write_sample_results(tmp_path / "sample", rows=96, cols=128)
    users = [f"inspector{k}" for k in range(N_CLIENTS)]
    item_ids = _prepare(review_postgres.url, results, users)
    close_pools()  # this process's connections would die with the server

    port = free_port()
    server = start_server(review_postgres.url, port, tmp_path / "server.log")
    base = f"http://127.0.0.1:{port}"
    sessions = [login(base, user) for user in users]
    acks: list[list[dict]] = [[] for _ in users]
    errors: list[list[str]] = [[] for _ in users]
    go, stop = threading.Event(), threading.Event()
    threads = [threading.Thread(target=_post_loop, args=(*sessions[k], k, users[k], item_ids, acks[k], errors[k], go,
                                                         stop, 120.0, True), daemon=True)
               for k in range(N_CLIENTS)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    go.set()
    try:
        while sum(map(len, acks)) < 150 and time.monotonic() - started < KILL_AFTER_S:
            time.sleep(0.01)
        acked_at_kill = sum(map(len, acks))
        processes = review_postgres.server.kill()
        # requests meanwhile fail: the database is gone. Wait for the first failure, bounded: on a loaded host no
        # client's request had reached the dead database within a fixed second (a CI run beside training, session 26)
        killed = time.monotonic()
        while sum(map(len, errors)) == 0 and time.monotonic() - killed < 30:
            time.sleep(0.05)
        errors_during_outage = sum(map(len, errors))
        review_postgres.server.start()  # crash recovery replays the WAL
        restarted = time.monotonic()
        while sum(map(len, acks)) < acked_at_kill + 150 and time.monotonic() - restarted < 60:
            time.sleep(0.05)
        acked_after_restart = sum(map(len, acks)) - acked_at_kill
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    assert not any(thread.is_alive() for thread in threads)
    assert acked_at_kill >= 50, f"too few decisions before the kill ({acked_at_kill})"
    assert errors_during_outage > 0, "no request failed while the server was down: the kill missed the traffic"
    assert acked_after_restart >= 50, "the app did not recover after the PostgreSQL restart"
    summary = {"clients": N_CLIENTS, "postgres_processes_killed": processes, "acked_before_kill": acked_at_kill,
               "acked_after_restart": acked_after_restart, "failed_requests": sum(map(len, errors)),
               **_check_acknowledged(review_postgres.url, users, item_ids, acks)}
    print("postgres crash:", json.dumps(summary))
    # a request in flight at the crash may have committed without its answer: at most one per client
    assert summary["committed_but_unacknowledged"] <= N_CLIENTS


def _station_files(sample: Path, folder: Path, station: str) -> Path:
    """A station's own copy of the sample scans and a results file naming them (same scan ids)."""
    shutil.copytree(sample.parent / "scans", folder / "scans")
    shutil.copytree(sample.parent / "heatmaps", folder / "heatmaps")
    lines = []
    for line in sample.read_text().splitlines():
        data = json.loads(line)
        data["inputs"] = [str(folder / "scans" / Path(p).name) for p in data["inputs"]]
        if data.get("heatmap"):
            data["heatmap"] = str(folder / "heatmaps" / Path(data["heatmap"]).name)
        data["station"] = station
        lines.append(json.dumps(data))
    results = folder / "results.jsonl"
    results.write_text("\n".join(lines) + "\n")
    return results


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_ingest_from_stations_while_inspectors_decide(backend, request, tmp_path):
    n_stations, batches = 4, 3
    sample = write_sample_results(tmp_path / "sample", rows=64, cols=80)
    flagged = sum(json.loads(line)["verdict"] != "clear" for line in sample.read_text().splitlines())
    db = _database(backend, request, tmp_path)
    users = [f"inspector{k}" for k in range(N_CLIENTS)]
    seeded = _prepare(db, sample, users)
    hub = _station_files(sample, tmp_path / "hub", "HUB")  # one file every station ingests: a race on duplicates
    files = {k: [_station_files(sample, tmp_path / f"st{k}" / f"b{b}", f"ST-{k}") for b in range(batches)]
             for k in range(n_stations)}
    expected = {(json.loads(line)["scan_id"], json.loads(line)["station"], json.loads(line)["inputs"][0])
                for results in [sample, hub, *[f for fs in files.values() for f in fs]]
                for line in results.read_text().splitlines() if json.loads(line)["verdict"] != "clear"}
    assert len(expected) == flagged * (2 + n_stations * batches)

    acks: list[list[int]] = [[] for _ in users]
    stop = threading.Event()

    def inspector(k: int) -> None:
        conn = connect(db)
        try:
            for n in range(MAX_POSTS_PER_CLIENT):
                if stop.is_set():
                    break
                items = [row[0] for row in conn.execute("SELECT id FROM items ORDER BY id")]
                result = store.decide(conn, items[(k + n) % len(items)], k + 1, users[k], DECISIONS[n % 3])
                acks[k].append(result["decision_id"])
        finally:
            conn.close()

    threads = [threading.Thread(target=inspector, args=(k,), daemon=True) for k in range(N_CLIENTS)]
    for thread in threads:
        thread.start()
    stations = [subprocess.Popen([sys.executable, "-m", "parcelscan", "review", "ingest", str(files[k][0]), str(hub),
                                  *map(str, files[k][1:]), "--db", str(db)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for k in range(n_stations)]
    outputs = [station.communicate(timeout=300)[0] for station in stations]
    stop.set()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert [station.returncode for station in stations] == [0] * n_stations, outputs

    conn = connect(db)
    rows = [(r["scan_id"], r["station"], json.loads(r["inputs"])[0]) for r in conn.execute(
        "SELECT scan_id, station, inputs FROM items")]
    added = sum(json.loads(r[0])["added"] for r in conn.execute("SELECT detail FROM audit WHERE action = 'ingest'"))
    stored = {r[0] for r in conn.execute("SELECT id FROM decisions")}
    conn.close()
    duplicates = len(rows) - len(set(rows))
    summary = {"backend": backend, "stations": n_stations, "files_ingested": n_stations * (batches + 1),
               "items": len(rows), "expected_items": len(expected), "duplicates": duplicates,
               "lost_items": len(expected - set(rows)), "decisions_acknowledged": sum(map(len, acks)),
               "decisions_lost": len({a for per in acks for a in per} - stored)}
    print("concurrent ingest:", json.dumps(summary))
    assert duplicates == 0 and set(rows) == expected
    assert added == len(rows)  # every item counted once, by the ingest that added it (the seed included)
    assert all(f"{flagged} duplicate(s) ignored" in out or f"{flagged} added" in out for out in outputs)
    assert summary["decisions_lost"] == 0 and summary["decisions_acknowledged"] >= N_CLIENTS
    assert len(seeded) == flagged
