"""The README's review-app screenshots: docs/images/review_queue.png, review.png, tip_{reveal,supervisor}.png.

    .venv/bin/python examples/review_screenshots.py [--out docs/images] [--seed 3]

Everything shown is made by the project's own code on the sample scans shipped in ``examples/scans``;
nothing is drawn or typed into the pictures:

1. the shipped model inspects the sample scans (``parcelscan inspect --station LHR-2 --heatmaps``, a
   subprocess, as a station runs it) in two batches: day 1 (sim31-000074, sim31-000141), day 2 (the rest);
2. a throwaway review database (a temporary folder, deleted at the end) gets day 1; inspector ``alice``
   clears sim31-000074, which the model flagged but the simulator made clear (a real false alarm); that
   cleared parcel is the only background TIP may use;
3. supervisor ``sue`` sets the TIP rate of LHR-2 to 50 %; a small TIP library is made by the simulator
   (``make_library``, Dy2O3 and Nd2O3 mail pouches, as ``tests/test_review_tip.py`` does); day 2 is ingested
   with it (``ingest(..., tip=TipContext(...))``, the real inspector judging the composite);
4. the app (``create_app``) is served by uvicorn in a thread on 127.0.0.1 (a free port) and Debian's
   Chromium, driven by Playwright, logs in as ``alice``: (0) the queue, with its Why column; (1) the review page
   on a real flagged parcel (the first in the queue);
   (2) the test image, marked by a click on the threat (the script knows where it put it) and decided
   seizure with the S key: the page reveals it; then ``alice`` decides the real parcels as the simulator
   labelled them and ``bob`` decides the test image as a false alarm (a miss), through the same store
   functions the API calls; (3) ``sue``'s supervisor page.

Re-runnable: a fixed seed gives the same library and the same choices; the model's scores do not depend
on the seed. Needs /usr/bin/chromium and Playwright (the review tests' setup installs both). Light: one
model session on one thread, three page loads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from parcelscan.datasets.simulator.projection import make_library
from parcelscan.inference.declaration import attach_declaration_check
from parcelscan.inference.inspector import Inspector
from parcelscan.inference.review import auth, store, tip
from parcelscan.inference.review.db import connect
from parcelscan.inference.review.ingest import ingest

ROOT = Path(__file__).resolve().parents[1]
SCANS = ROOT / "examples" / "scans"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STATION = "LHR-2"
DAY1 = ("sim31-000074", "sim31-000141")
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "sue": "sue-password-333"}
VIEWPORT = {"width": 1200, "height": 800}


def manifest() -> dict[str, dict]:
    """The sample scans' manifest lines by parcel id: the simulator's ground truth (label, material, scenario)."""
    lines = (SCANS / "manifest.jsonl").read_text().splitlines()
    return {row["parcel_id"]: row for row in (json.loads(line) for line in lines if line.strip())}


def inspect_batch(parcels: list[dict], folder: Path, heatmaps: Path) -> Path:
    """Copy the parcels' station files into ``folder`` and run the station CLI on it: the verdict lines."""
    folder.mkdir(parents=True)
    for parcel in parcels:
        for name in parcel["files"].values():
            shutil.copy2(SCANS / name, folder / name)
    results = folder.parent / f"{folder.name}.jsonl"
    with results.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "parcelscan", "inspect", str(folder), "--station", STATION,
                               "--heatmaps", str(heatmaps), "--threads", "1", "--quiet"],
                              stdout=out, stderr=subprocess.PIPE, text=True)
    if done.returncode not in (0, 1, 2):  # clamscan-like: 1 = a suspect, 2 = a manual inspection
        raise SystemExit(f"parcelscan inspect failed ({done.returncode}):\n{done.stderr}")
    return results


def build_database(work: Path, seed: int) -> tuple[Path, dict[str, int], dict]:
    """The review database of steps 1-3; returns it, the user ids and the projection's row."""
    truth = manifest()
    day1 = inspect_batch([truth[p] for p in DAY1], work / "day1", work / "heatmaps")
    day2 = inspect_batch([row for p, row in sorted(truth.items()) if p not in DAY1], work / "day2",
                         work / "heatmaps")
    db = work / "review.sqlite"
    conn = connect(db, create=True)
    try:
        users = {name: auth.add_user(conn, name, password) for name, password in PASSWORDS.items()}
        tip.grant_supervisor(conn, users["sue"])
        ingest(conn, day1)
        for row in conn.execute("SELECT id, scan_id FROM items").fetchall():
            assert truth[row["scan_id"]]["label"] == "clear", "day 1 should queue only the model's false alarm"
            store.decide(conn, int(row["id"]), users["alice"], "alice", "false_alarm")
        tip.set_rate(conn, STATION, 0.5, users["sue"])
        library = work / "tip-library"
        make_library(library, 1.0, seed=2, scenarios=("mail_pouch",), targets=("Dy2O3", "Nd2O3"), per_pair=2)
        inspector = Inspector(heatmap_dir=work / "tip-scans" / "heatmaps", threads=1)
        attach_declaration_check(inspector)  # as `inspect` ran on the batch: the test image's page has the panel too
        context = tip.TipContext(library, work / "tip-scans", inspector, np.random.default_rng(seed))
        report = ingest(conn, day2, tip=context)
        print(f"day 2: {report.added} queued, TIP: {report.tip_queued} test image(s) queued, "
              f"{report.tip_model_misses} missed by the model")
        projection = conn.execute("SELECT * FROM tip_projections WHERE outcome = 'queued'").fetchone()
        if projection is None:
            raise SystemExit(f"seed {seed} queued no test image (model miss or no draw): try another --seed")
        return db, users, dict(projection)
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_loaded(page, selector: str, timeout_s: float = 30.0) -> None:
    """An <img> has decoded (polled: the app's CSP forbids the eval that wait_for_function needs)."""
    deadline = time.monotonic() + timeout_s
    while not page.locator(selector).evaluate("img => img.complete && img.naturalWidth > 0"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{selector} did not load")
        time.sleep(0.1)


def log_in(browser, base: str, user: str, target: str):
    page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
    page.set_default_timeout(30_000)
    page.goto(base + target)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.keyboard.press("Enter")
    page.wait_for_url(base + target)
    page.wait_for_load_state("load")
    return page


def save(page, path: Path) -> None:
    """The viewport as PNG, reduced to 256 colours (median cut, no dithering: the UI's flat colours and text
    stay sharp) and optimised, to keep the repository small (about 100 KiB instead of 300)."""
    page.screenshot(path=str(path))
    image = Image.open(path).convert("RGB")
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KiB")


def review_item(page, base: str, item_id: int) -> None:
    page.goto(f"{base}/review/{item_id}")
    page.wait_for_load_state("load")
    for image in ("#img-pseudo", "#img-heatmap", "#thumb-material"):
        wait_loaded(page, image)


def click_scan_pixel(page, row: int, col: int, rows: int, cols: int) -> None:
    """Click scan pixel (row, col) on the pseudo-colour image (drawn with object-fit: contain, centred)."""
    box = page.locator("#img-pseudo").bounding_box()
    scale = min(box["width"] / cols, box["height"] / rows)
    left = box["x"] + (box["width"] - cols * scale) / 2
    top = box["y"] + (box["height"] - rows * scale) / 2
    page.mouse.click(left + (col + 0.5) * scale, top + (row + 0.5) * scale)


def screenshots(db: Path, users: dict[str, int], projection: dict, out: Path) -> None:
    import uvicorn
    from playwright.sync_api import expect, sync_playwright

    from parcelscan.inference.review.app import create_app

    truth = manifest()
    conn = connect(db)
    items = {row["scan_id"]: dict(row) for row in conn.execute("SELECT * FROM items")}
    conn.close()
    test = next(item for item in items.values() if item["id"] == projection["item_id"])
    real = [item for scan_id, item in items.items() if scan_id in truth and scan_id not in DAY1]
    first = max(real, key=lambda item: item["score"])  # the queue's first real parcel (highest score)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(db), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit("the review app did not start")
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = log_in(browser, base, "alice", "/")
                expect(page.locator("table.items tbody tr").first).to_be_visible()
                save(page, out / "review_queue.png")
                review_item(page, base, first["id"])
                expect(page.locator("#scan-id")).to_have_text(first["scan_id"])
                save(page, out / "review.png")

                review_item(page, base, test["id"])
                mask = tip.decode_mask(projection["mask"], (test["scan_rows"], test["scan_cols"]))
                inside = np.argwhere(mask)
                row, col = (int(v) for v in inside[len(inside) // 2])
                click_scan_pixel(page, row, col, test["scan_rows"], test["scan_cols"])
                expect(page.locator("#mark")).to_be_visible()
                page.keyboard.press("s")
                expect(page.locator("#tip-reveal")).to_be_visible()
                expect(page.locator("#tip-reveal")).to_contain_text("test image: ")
                expect(page.locator("#tip-box")).to_be_visible()
                save(page, out / "tip_reveal.png")
                page.close()

                conn = connect(db)
                try:
                    for item in real:  # as the simulator labelled them
                        row_truth = truth[item["scan_id"]]
                        if row_truth["label"] == "suspect":
                            store.decide(conn, item["id"], users["alice"], "alice", "seizure",
                                         material=row_truth["material"], scenario=row_truth["scenario"])
                        else:
                            store.decide(conn, item["id"], users["alice"], "alice", "false_alarm")
                    store.decide(conn, test["id"], users["bob"], "bob", "false_alarm")
                    store.decide(conn, first["id"], users["bob"], "bob", "seizure")
                finally:
                    conn.close()

                page = log_in(browser, base, "sue", "/supervisor")
                expect(page.locator("#inspectors")).to_contain_text("alice")
                save(page, out / "tip_supervisor.png")
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="where the PNGs go")
    parser.add_argument("--seed", type=int, default=3, help="TIP draws (which rows get a test image, where)")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is not installed (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="parcelscan-screens-") as folder:
        db, users, projection = build_database(Path(folder), args.seed)
        print(f"test image: {projection['description']}, score {projection['score']:.4f}")
        screenshots(db, users, projection, args.out)


if __name__ == "__main__":
    main()
