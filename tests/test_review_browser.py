"""The review app in a real browser: Debian's Chromium, headless, driven by Playwright.

Log in, review three items with the keyboard only (S with material and scenario, F, U), toggle the
heatmap, undo, open the help, reload, and see every decision persisted (in the page and in the
database). The page is screenshot into the test's folder; the README's pictures are made by
``examples/review_screenshots.py`` with the shipped model on the sample scans, not from these handwritten results.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from parcelscan.inference.review import auth
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    yield from _serve(tmp_path, write_sample_results(tmp_path / "sample"))


def _serve(tmp_path: Path, results: Path):
    """Ingest ``results`` into a fresh database and run `parcelscan review serve` on it until the test ends."""
    db = tmp_path / "review.sqlite"
    conn = connect(db, create=True)
    auth.add_user(conn, "inspector", PASSWORD)
    ingest(conn, results)
    conn.close()
    port = free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below, after the server stops
    process = subprocess.Popen([sys.executable, "-m", "parcelscan", "review", "serve", "--db", str(db),
                                "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(base + "/login", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield base, db
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def wait_loaded(page, selector: str, timeout_s: float = 20.0) -> None:
    """An <img> has decoded (polled from Python: the app's CSP forbids the eval wait_for_function uses)."""
    deadline = time.monotonic() + timeout_s
    while not page.locator(selector).evaluate("img => img.complete && img.naturalWidth > 0"):
        assert time.monotonic() < deadline, f"{selector} did not load"
        time.sleep(0.05)


def open_page(browser):
    """A page at the review layout's size, and the list its script errors, console errors and failed requests
    are collected in (a test ends by asserting it empty)."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return page, errors


def test_keyboard_review_persists_across_reload(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    base, db = server
    shot = tmp_path / "review.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, errors = open_page(browser)

            page.goto(base + "/")
            expect(page).to_have_url(f"{base}/login?next=%2F")
            page.fill("input[name=username]", "inspector")
            page.fill("input[name=password]", PASSWORD)
            page.keyboard.press("Enter")
            expect(page.locator("table.items tbody tr")).to_have_count(5)
            page.wait_for_load_state("load")  # queue.js (at the end of the page) listens for the key

            page.keyboard.press("r")  # start reviewing: highest score first
            expect(page.locator("#scan-id")).to_have_text("PX-0001")
            for image in ("#img-pseudo", "#img-heatmap", "#thumb-material"):
                wait_loaded(page, image)
            expect(page.locator("#position")).to_have_text("1 / 5")

            # heatmap overlay toggles with H
            heat = page.locator("#img-heatmap")
            expect(heat).to_be_visible()
            page.keyboard.press("h")
            expect(heat).to_be_hidden()
            expect(page.locator("#heat-state")).to_have_text("off")
            page.keyboard.press("h")
            expect(heat).to_be_visible()

            # the material view is one key away, and back
            page.keyboard.press("4")
            expect(page.locator("#img-material")).to_be_visible()
            page.keyboard.press("1")
            expect(page.locator("#img-pseudo")).to_be_visible()

            # help on ?
            page.keyboard.press("?")
            expect(page.locator("#help")).to_be_visible()
            page.keyboard.press("Escape")
            expect(page.locator("#help")).to_be_hidden()

            # 1: seizure, with material and scenario typed via their keys
            page.keyboard.press("m")
            page.keyboard.type("Nd2O3")
            page.keyboard.press("Escape")
            page.keyboard.press("c")
            page.keyboard.type("tile adhesive")
            page.keyboard.press("Escape")
            page.screenshot(path=str(shot))
            page.keyboard.press("s")
            expect(page.locator("#scan-id")).to_have_text("PX-0002")
            expect(page.locator("#status")).to_contain_text("Saved: SEIZURE · PX-0001")
            # 2: false alarm; 3: unsure
            page.keyboard.press("f")
            expect(page.locator("#scan-id")).to_have_text("PX-0006")
            expect(page.locator("#status")).to_contain_text("Saved: FALSE ALARM · PX-0002")
            page.keyboard.press("u")
            expect(page.locator("#scan-id")).to_have_text("PX-0004")
            expect(page.locator("#status")).to_contain_text("Saved: UNSURE · PX-0006")

            # undo goes back to PX-0006 and makes it undecided; decide it again
            page.keyboard.press("z")
            expect(page.locator("#scan-id")).to_have_text("PX-0006")
            expect(page.locator("#status")).to_contain_text("Undone: UNSURE · PX-0006")
            expect(page.locator("#state")).to_have_text("undecided")
            page.keyboard.press("u")
            expect(page.locator("#scan-id")).to_have_text("PX-0004")

            # reload: the decisions are on the server, not in the page
            page.reload()
            expect(page.locator("#scan-id")).to_have_text("PX-0004")
            expect(page.locator("#position")).to_have_text("1 / 2")  # two undecided left
            page.goto(base + "/?state=all")
            rows = page.locator("table.items tbody tr")
            expect(rows).to_have_count(5)
            states = {}
            for k in range(5):
                cells = rows.nth(k).locator("td")
                states[cells.nth(1).inner_text().strip()] = cells.last.inner_text().strip().lower()  # Decision
            assert states == {"PX-0001": "seizure", "PX-0002": "false alarm", "PX-0006": "unsure",
                              "PX-0004": "undecided", "PX-0003": "undecided"}
            page.goto(base + "/review/1?state=all")
            expect(page.locator("#decisions")).to_contain_text("inspector: SEIZURE (Nd2O3, tile adhesive)")
            assert not errors, errors
        finally:
            browser.close()

    conn = connect(db)
    rows = conn.execute("""SELECT i.scan_id, d.decision, d.material, d.scenario FROM current_decisions cd
                           JOIN decisions d ON d.id = cd.decision_id JOIN items i ON i.id = cd.item_id
                           ORDER BY i.scan_id""").fetchall()
    actions = [r[0] for r in conn.execute("SELECT action FROM audit WHERE user_name = 'inspector' ORDER BY id")]
    conn.close()
    assert [tuple(r) for r in rows] == [("PX-0001", "seizure", "Nd2O3", "tile adhesive"),
                                        ("PX-0002", "false_alarm", None, None), ("PX-0006", "unsure", None, None)]
    assert actions == ["login", "decide", "decide", "decide", "undo", "decide"]
    assert shot.stat().st_size < 500_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


DECLARED = {"item_id": "RR123456785CN", "category": "sale_of_goods", "origin": "CN", "gross_weight_kg": 2.5,
            "items": [{"description": "machinery parts", "hs_code": "8487.90", "quantity": 1, "net_weight_kg": 2.0,
                       "value": 30}]}
CHECK = {"status": "mismatch", "priority": "raised", "source": "sidecar",
         "reasons": ["declared 'machinery parts' (HS 8487.90), 2 kg; seen: 1 body ≈ 1400 g — no line holds it"],
         "observed": {"xray_mass_kg": 2.4, "xray_mass_lower_bound": True,
                      "bodies": [{"mass_g": 1400.0, "nearest": "barite", "twins": ["barite", "Nd2O3"],
                                  "mass_material": "Nd2O3", "could_be": ["Nd2O3", "Pr6O11", "barite"],
                                  "mass_as_g": {"Nd2O3": 1400.0, "Pr6O11": 1380.0, "barite": 1610.0}},
                                 {"mass_g": 810.0, "mass_lower_bound": True, "nearest": None, "twins": [],
                                  "opaque_share": 0.51},
                                 {"mass_g": 165.7, "nearest": "lead", "d_prime": 12.75, "twins": [],
                                  "mass_material": "Dy2O3", "could_be": ["sand"], "mass_as_g": {"sand": 2447.0}}]}}


@pytest.fixture
def declared_server(tmp_path):
    """The sample results with a declaration mismatch on one flagged item (its sidecar carries the declaration)."""
    import json

    results = write_sample_results(tmp_path / "sample")
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    target = next(v for v in lines if v["verdict"] != "clear")
    target.update(declaration_check=CHECK, powder_mass_g=[1400.0])
    undeclared = next(v for v in lines if v is not target)  # as inspect writes a parcel without advance data
    undeclared.update(declaration_check={"status": "absent", "priority": "normal",
                                         "reasons": ["no declaration for this item"],
                                         "observed": {"xray_mass_kg": 1.6, "xray_mass_lower_bound": False,
                                                      "bodies": []}})
    results.write_text("".join(json.dumps(v, sort_keys=True) + "\n" for v in lines))
    sidecar = Path(target["inputs"][0]).with_name(f"{target['scan_id']}.json")
    meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    sidecar.write_text(json.dumps({**meta, "item_id": DECLARED["item_id"], "declaration": DECLARED}))
    for base_db in _serve(tmp_path, results):
        yield (*base_db, target["scan_id"], undeclared["scan_id"])


def test_the_declaration_panel_shows_what_the_body_could_be_in_grams(declared_server):
    """Sorted by declaration, the mismatched item opens first with the declaration beside the image: the declared
    line, the check's reason, and each body with the materials it could be, each with its own grams; a body behind
    a stopped beam with its lower bound ("≥"); the grams name the material they assume when the nearest reading is
    another (a twin: weighed as Nd2O3, read nearest barite), and a reading far from every reference as no match."""
    from playwright.sync_api import expect, sync_playwright

    base, _, scan_id, undeclared_id = declared_server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, errors = open_page(browser)
            page.goto(base + "/")
            page.fill("input[name=username]", "inspector")
            page.fill("input[name=password]", PASSWORD)
            page.keyboard.press("Enter")
            expect(page.locator("table.items tbody tr")).to_have_count(5)
            first = page.request.get(base + "/api/queue?state=all&sort=declaration").json()["items"][0]
            assert first["scan_id"] == scan_id  # mismatches first
            page.goto(f"{base}/review/{first['id']}?sort=declaration&state=all")
            expect(page.locator("#scan-id")).to_have_text(scan_id)
            expect(page.locator("#declaration")).to_be_visible()
            expect(page.locator("#declaration-status")).to_have_text("mismatch")
            expect(page.locator("#declaration-items")).to_contain_text("machinery parts")
            expect(page.locator("#declaration-seen")).to_have_text(
                "≈ 1400 g as Nd2O3, nearest barite; could be Nd2O3 1400 g, Pr6O11 1380 g, barite 1610 g; "
                "≥ 810 g no signature (the beam is stopped); ≈ 166 g as Dy2O3, matches no listed material "
                "(nearest lead, d′ 12.8); could be sand 2447 g · parcel ≥ 2.4 kg by X-ray")
            expect(page.locator("#declaration-problems")).to_be_hidden()  # none: no empty red bar
            # a parcel without a declaration: its status and reason, no empty table, head or problems box
            undeclared = next(i for i in page.request.get(base + "/api/queue?state=all").json()["items"]
                              if i["scan_id"] == undeclared_id)
            page.goto(f"{base}/review/{undeclared['id']}?state=all")
            expect(page.locator("#scan-id")).to_have_text(undeclared_id)
            expect(page.locator("#declaration-status")).to_have_text("absent")
            expect(page.locator("#declaration-reasons")).to_have_text("no declaration for this item")
            expect(page.locator("#declaration-seen")).to_have_text(
                "no powder body localised · parcel ≈ 1.6 kg by X-ray")
            for empty in ("#declaration-table", "#declaration-head", "#declaration-problems"):
                expect(page.locator(empty)).to_be_hidden()
            assert not errors, errors
        finally:
            browser.close()
