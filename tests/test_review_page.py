"""The review page in a real browser (Debian's Chromium, headless, Playwright) against the app served
in this process (uvicorn in a thread), so a test can change the app's definitions and see the page follow.

What the HTTP tests cannot see: which keys the page's script binds, and what it shows.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from parcelscan.inference.review import DECISIONS, Decision, auth
from parcelscan.inference.review.db import connect
from parcelscan.inference.review.ingest import ingest
from parcelscan.inference.review.sample import write_sample_results

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "inspector-password-1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is not installed (apt-get install chromium; the test setup does this)"),
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return write_sample_results(tmp_path_factory.mktemp("page_sample"), rows=120, cols=160)


@pytest.fixture
def db(tmp_path, sample) -> Path:
    path = tmp_path / "review.sqlite"
    conn = connect(path, create=True)
    auth.add_user(conn, "inspector", PASSWORD)
    ingest(conn, sample)
    conn.close()
    return path


def serve(app) -> Iterator[str]:
    """The app on a free loopback port, served by uvicorn in a thread of this process."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(20_000)
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            yield page
        finally:
            browser.close()


def log_in(page, base: str, target: str) -> None:
    page.goto(base + target)
    page.fill("input[name=username]", "inspector")
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(base + target)
    page.wait_for_load_state("load")


def item_id(db: Path, scan_id: str) -> int:
    conn = connect(db)
    try:
        return int(conn.execute("SELECT id FROM items WHERE scan_id = ?", (scan_id,)).fetchone()[0])
    finally:
        conn.close()


def current_decisions(db: Path) -> list[tuple[str, str]]:
    conn = connect(db)
    try:
        return [tuple(r) for r in conn.execute("""SELECT i.scan_id, d.decision FROM current_decisions cd
            JOIN decisions d ON d.id = cd.decision_id JOIN items i ON i.id = cd.item_id ORDER BY i.scan_id""")]
    finally:
        conn.close()


def test_a_key_changed_in_decisions_is_the_key_the_page_binds(db, browser_page, monkeypatch):
    from playwright.sync_api import expect

    from parcelscan.inference.review.app import create_app

    monkeypatch.setitem(DECISIONS, "false_alarm", Decision("false_alarm", "x", "Not a threat", "cleared, next item"))
    page = browser_page
    for base in serve(create_app(db)):
        target = item_id(db, "PX-0001")
        log_in(page, base, f"/review/{target}")
        expect(page.locator("#scan-id")).to_have_text("PX-0001")
        expect(page.locator("button.decision.false_alarm")).to_have_text("X Not a threat")
        page.keyboard.press("f")  # the old key does nothing now
        page.keyboard.press("?")  # a round trip through the key handler: F was handled (and ignored) before it
        expect(page.locator("#help")).to_contain_text("cleared, next item")
        page.keyboard.press("Escape")
        expect(page.locator("#scan-id")).to_have_text("PX-0001")
        assert current_decisions(db) == []
        page.keyboard.press("x")
        expect(page.locator("#status")).to_contain_text("Saved: NOT A THREAT · PX-0001")
        expect(page.locator("#scan-id")).to_have_text("PX-0002")
        assert current_decisions(db) == [("PX-0001", "false_alarm")]
        assert not page.errors, page.errors


def ingest_lines(db: Path, sample: Path, tmp_path: Path, changes: list[dict]) -> None:
    """Ingest copies of the sample's first (flagged) verdict line with ``changes`` applied."""
    import json

    base = json.loads(sample.read_text().splitlines()[0])
    results = tmp_path / "extra.jsonl"
    results.write_text("".join(json.dumps({**base, **change}) + "\n" for change in changes))
    conn = connect(db)
    try:
        assert ingest(conn, results).added == len(changes)
    finally:
        conn.close()


def test_threshold_and_score_are_shown_to_four_decimals(db, sample, tmp_path, browser_page):
    from playwright.sync_api import expect

    from parcelscan.inference.review.app import create_app

    ingest_lines(db, sample, tmp_path, [{"scan_id": "PX-T", "threshold": 0.8891029357910156,
                                         "score": 0.9712345, "model": {"name": "t", "version": "1",
                                                                      "sha256": "e" * 64}}])
    page = browser_page
    for base in serve(create_app(db)):
        log_in(page, base, f"/review/{item_id(db, 'PX-T')}")
        expect(page.locator("#scan-id")).to_have_text("PX-T")
        expect(page.locator("#threshold")).to_have_text("0.8891")
        expect(page.locator("#score")).to_have_text("0.9712")
        assert not page.errors, page.errors
