"""Durability: the review server, killed with SIGKILL while 10 clients post decisions, loses none it acknowledged.

A real server process (``parcelscan review serve`` → uvicorn on 127.0.0.1, a free port), real
clients (httpx, one thread and one account each), a real SQLite file. Every decision the server
answered 200 to is counted; after the kill the database is reopened (WAL recovery) and every
acknowledged decision must be there, as acknowledged, with its audit row. Loops are bounded in count
and time; nothing leaves the loopback interface.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from parcelscan.inference.review import auth
from parcelscan.inference.review.db import connect
from parcelscan.inference.review.ingest import ingest
from parcelscan.inference.review.sample import write_sample_results

N_CLIENTS = 10
KILL_AFTER_ACKS = 250  # kill once this many decisions were acknowledged in all …
KILL_AFTER_S = 20.0  # … or after this long, whichever comes first
MAX_POSTS_PER_CLIENT = 5000
PASSWORD = "durable-password-1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(db: Path, port: int, log: Path) -> subprocess.Popen:
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
    client = httpx.Client(base_url=base, timeout=10.0, follow_redirects=True)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/login", data={"username": user, "password": PASSWORD, "csrf_token": token})
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', response.text)
    assert csrf, f"login of {user} failed: {response.status_code}"
    return client, csrf.group(1)


@pytest.mark.slow
def test_sigkill_during_concurrent_decisions_loses_no_acknowledged_decision(tmp_path):
    results = write_sample_results(tmp_path / "sample", rows=96, cols=128)
    db = tmp_path / "review.sqlite"
    conn = connect(db, create=True)
    users = [f"inspector{k}" for k in range(N_CLIENTS)]
    for user in users:
        auth.add_user(conn, user, PASSWORD)
    ingest(conn, results)
    item_ids = [row[0] for row in conn.execute("SELECT id FROM items ORDER BY id")]
    conn.close()

    port = free_port()
    server = start_server(db, port, tmp_path / "server.log")
    base = f"http://127.0.0.1:{port}"
    sessions = [login(base, user) for user in users]
    acks: list[list[dict]] = [[] for _ in users]
    errors: list[list[str]] = [[] for _ in users]
    go = threading.Event()
    decisions = ("seizure", "false_alarm", "unsure")

    def client_loop(k: int) -> None:
        client, csrf = sessions[k]
        go.wait(10)
        deadline = time.monotonic() + KILL_AFTER_S + 10
        for n in range(MAX_POSTS_PER_CLIENT):
            if time.monotonic() > deadline:
                break
            item, decision = item_ids[(k + n) % len(item_ids)], decisions[(k * 7 + n) % 3]
            body = {"decision": decision, "notes": f"{users[k]} #{n}"}
            try:
                response = client.post(f"/api/items/{item}/decision", json=body, headers={"X-CSRF-Token": csrf})
            except httpx.TransportError as error:  # the server is gone: this one was never acknowledged
                errors[k].append(type(error).__name__)
                break
            if response.status_code == 200 and response.json().get("ok"):
                acks[k].append({"id": response.json()["decision_id"], "item": item, "decision": decision,
                                "notes": body["notes"]})
            else:
                errors[k].append(f"HTTP {response.status_code}")
                break
        client.close()

    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(N_CLIENTS)]
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
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert server.returncode == -signal.SIGKILL

    acknowledged = [a for per_client in acks for a in per_client]
    assert acked_at_kill >= 50, f"too few decisions before the kill ({acked_at_kill}): the test would prove little"
    assert all(errors), "every client must have seen the server die (else the kill was not mid-traffic)"

    conn = connect(db)  # WAL recovery happens here
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {row["id"]: row for row in conn.execute(
        "SELECT d.id, d.item_id, d.decision, d.notes, u.name FROM decisions d JOIN users u ON u.id = d.user_id")}
    audited = {row[0] for row in conn.execute("SELECT decision_id FROM audit WHERE action = 'decide'")}
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
    summary = {"clients": N_CLIENTS, "acknowledged": len(acknowledged), "acked_at_kill": acked_at_kill,
               "stored_decisions": len(stored), "committed_but_unacknowledged": len(stored) - len(acknowledged),
               "lost": len(lost), "mismatched": len(wrong), "stale_current": len(stale),
               "killed_after_s": round(killed_after_s, 2),
               "acks_per_s": round(acked_at_kill / killed_after_s, 1)}
    print("durability:", json.dumps(summary))
    assert not lost, f"acknowledged decisions lost: {lost[:5]}"
    assert not wrong, f"acknowledged decisions stored differently: {wrong[:5]}"
    assert not stale, f"current decisions older than acknowledged ones: {stale[:5]}"
    assert set(stored) <= audited, "every stored decision has its audit row"
    assert len(stored) - len(acknowledged) <= N_CLIENTS  # at most one in flight per client
