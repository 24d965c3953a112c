"""Threat image projection in the review app (inference/review/tip.py) with the real inspector (shipped model).

Backgrounds are items inspectors cleared; the test images are composed in the forward model, inspected by the
shipped model and queued by their own score; model misses are recorded, never shown. Secrecy before the
decision (API keys, page, files, batch), the reveal after it, hit scoring with the mark, exclusion from
exports and statistics, and the supervisor role, enforced server-side.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*install `httpx2`.*")
from fastapi.testclient import TestClient  # noqa: E402

from parcelscan.datasets.scans.customs import make_s10, s10_valid  # noqa: E402
from parcelscan.datasets.simulator.projection import make_library  # noqa: E402
from parcelscan.inference.declaration import attach_declaration_check  # noqa: E402
from parcelscan.inference.inspector import Inspector  # noqa: E402
from parcelscan.inference.review import auth, store, tip  # noqa: E402
from parcelscan.inference.review.app import create_app  # noqa: E402
from parcelscan.inference.review.db import connect  # noqa: E402
from parcelscan.inference.review.export import export  # noqa: E402
from parcelscan.inference.review.ingest import ingest  # noqa: E402
from parcelscan.inference.review.sample import write_sample_results  # noqa: E402

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "sue": "sue-password-333"}


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tip_library")
    make_library(folder, 1.0, seed=2, scenarios=("mail_pouch",), targets=("Dy2O3", "Nd2O3"), per_pair=2)
    return folder


def _judged_by(results: Path, inspector: Inspector) -> Path:
    """``results`` (hand-written sample verdicts) as if ``inspector``'s model had judged them at its threshold: a
    test image is made only for a batch of its own judge (``TipContext.judges_like``)."""
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    for verdict in lines:
        verdict.update(model=dict(inspector.model_info), threshold=inspector.threshold)
    results.write_text("".join(json.dumps(v) + "\n" for v in lines))
    return results


@pytest.fixture(scope="module")
def world(tmp_path_factory, library):
    """A queue with cleared backgrounds, then a second batch ingested with TIP at rate 0.5 for LHR-2, every
    projection flagged (threshold 0: the model's own score still orders the queue)."""
    base = tmp_path_factory.mktemp("tip_world")
    first = write_sample_results(base / "day1", seed=0)
    db = base / "review.sqlite"
    conn = connect(db, create=True)
    users = {name: auth.add_user(conn, name, password) for name, password in PASSWORDS.items()}
    tip.grant_supervisor(conn, users["sue"])
    ingest(conn, first)
    for row in conn.execute("SELECT id FROM items WHERE station = 'LHR-2'").fetchall():
        store.decide(conn, int(row["id"]), users["alice"], "alice", "false_alarm")
    tip.set_rate(conn, "LHR-2", 0.5, users["sue"])
    judge = Inspector(threshold=0.0)
    second = _judged_by(write_sample_results(base / "day2", seed=1), judge)
    context = tip.TipContext(library, base / "tip-scans", judge, np.random.default_rng(3))
    report = ingest(conn, second, tip=context)
    conn.close()
    return {"db": db, "users": users, "report": report, "second": second, "library": library, "base": base}


def _client(db: Path, user: str) -> tuple[TestClient, str]:
    client = TestClient(create_app(db))
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"username": user, "password": PASSWORDS[user], "csrf_token": token, "next": "/"})
    return client, re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)


def _projections(db: Path) -> list[dict]:
    conn = connect(db)
    rows = [dict(r) for r in conn.execute("SELECT * FROM tip_projections ORDER BY id")]
    conn.close()
    return rows


def _keys(value, prefix=""):
    if isinstance(value, dict):
        return {f"{prefix}{k}" for k in value} | {x for k, v in value.items() if k not in ("images",)
                                                   for x in _keys(v, f"{prefix}{k}.")}
    return set()


def test_projections_are_made_from_cleared_backgrounds_each_once_and_inspected(world):
    report, projections = world["report"], _projections(world["db"])
    assert report.tip_queued >= 1 and report.tip_queued + report.tip_model_misses == len(projections)
    conn = connect(world["db"])
    backgrounds = [p["background_item_id"] for p in projections]
    assert len(set(backgrounds)) == len(backgrounds)  # each background used once
    for p in projections:
        background = store.get_item(conn, p["background_item_id"])
        assert background["station"] == "LHR-2" == p["station"]
        assert store.state_of(store.item_decisions(conn, p["background_item_id"])) == "false_alarm"
        assert p["outcome"] == "queued" and p["item_id"] is not None
        item = store.get_item(conn, p["item_id"])
        # queued by the model's own score: the shipped model on the composite's files gives it again
        again = Inspector(threshold=0.0).inspect(Path(json.loads(item["inputs"])[0]))
        assert item["score"] == pytest.approx(again.score, abs=1e-6) and item["score"] == p["score"]
        # a new id of the station's own pattern, on no other item; files named like a station's
        assert re.fullmatch(r"PX-\d{4}", item["scan_id"])
        assert conn.execute("SELECT COUNT(*) FROM items WHERE scan_id = ?", (item["scan_id"],)).fetchone()[0] == 1
        assert sorted(Path(f).name for f in json.loads(item["inputs"])) == [f"{item['scan_id']}_high.png",
                                                                            f"{item['scan_id']}_low.png"]
        # the same batch as the real items: same ingest time and source
        batch = conn.execute("SELECT DISTINCT ingested_at, ingested_from FROM items WHERE ingested_from = ?",
                             (item["ingested_from"],)).fetchall()
        assert len(batch) == 1 and item["ingested_from"] == str(world["second"].resolve())
        # the composite's files are as large as a real scan of that parcel (same writer, same noise)
        real = {Path(f).name.split("_")[-1]: Path(f).stat().st_size for f in json.loads(background["inputs"])}
        for path in json.loads(item["inputs"]):
            assert Path(path).stat().st_size == pytest.approx(real[Path(path).name.split("_")[-1]], rel=0.1)
    conn.close()


def test_the_model_decides_and_a_miss_is_recorded_not_shown(tmp_path, world, library):
    """With the model's own threshold: whatever it clears is a model miss (no item), the rest is queued."""
    conn = connect(world["db"])
    users = world["users"]
    for row in conn.execute("SELECT id FROM items WHERE station = 'FRA-1'").fetchall():
        store.decide(conn, int(row["id"]), users["bob"], "bob", "false_alarm")
    tip.set_rate(conn, "FRA-1", 0.5, users["sue"])
    before = len(_projections(world["db"]))
    inspector = Inspector()
    context = tip.TipContext(library, tmp_path / "tip", inspector, np.random.default_rng(11))
    report = ingest(conn, _judged_by(write_sample_results(tmp_path / "day3", seed=3), inspector), tip=context)
    made = _projections(world["db"])[before:]
    assert len(made) == report.tip_queued + report.tip_model_misses >= 1
    for p in made:
        flagged = p["score"] is None or p["score"] >= inspector.threshold
        assert (p["outcome"] == "queued") == flagged and (p["item_id"] is not None) == flagged
    conn.close()


def test_nothing_tells_a_projection_before_the_decision(world):
    client, _ = _client(world["db"], "bob")
    projection = _projections(world["db"])[0]
    test_id = projection["item_id"]
    queue = client.get("/api/queue?state=undecided").json()["items"]
    real_id = next(r["id"] for r in queue if r["id"] != test_id)
    test_item, real_item = client.get(f"/api/items/{test_id}").json(), client.get(f"/api/items/{real_id}").json()
    assert _keys(test_item) == _keys(real_item) and test_item["tip"] is None is real_item["tip"]
    assert set(test_item["images"]) == set(real_item["images"])
    rows = {r["id"]: r for r in queue}
    assert set(rows[test_id]) == set(rows[real_id])
    pages = [client.get(f"/review/{i}").text.replace(f"/review/{i}", "").replace(f'data-item-id="{i}"', "")
             for i in (test_id, real_id)]
    assert pages[0] == pages[1]
    assert "tip" not in json.dumps(rows[test_id]).lower() and "projection" not in json.dumps(test_item).lower()
    for kind in ("pseudo", "low", "high", "material"):
        response = client.get(f"/images/{test_id}/{kind}.png")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert client.get("/supervisor").status_code == 403 and client.get("/api/tip/stats").status_code == 403


def _as_declared(results: Path, first_serial: int, advance_data: Path | None = None) -> Path:
    """``results`` as a station that checks declarations writes them: every sidecar with the parcel's S10 item
    id and its declaration, every verdict with its ``declaration_check``. With ``advance_data`` the declarations
    go to that JSON-lines file instead (``inspect --declarations FILE``; appended), the sidecars hold the id only."""
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    for k, verdict in enumerate(lines):
        item_id = make_s10("RR", first_serial + k, "CN")
        sidecar = Path(verdict["inputs"][0]).with_name(f"{verdict['scan_id']}.json")
        declaration = {"item_id": item_id, "category": "gift", "origin": "CN", "gross_weight_kg": 1.5,
                       "items": [{"description": "clothes", "hs_code": "620442", "quantity": 2,
                                  "net_weight_kg": 1.2, "value": 40}]}
        written = {"item_id": item_id} if advance_data else {"item_id": item_id, "declaration": declaration}
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **written}))
        if advance_data:
            with advance_data.open("a") as out:
                out.write(json.dumps(declaration) + "\n")
        source = str(advance_data) if advance_data else "sidecar"
        verdict["declaration_check"] = {"status": "consistent", "priority": "normal", "source": source,
                                        "reasons": ["declared 'clothes' (HS 6204.42), 1.2 kg; seen: nothing dense"],
                                        "observed": {"xray_mass_kg": 1.4, "xray_mass_lower_bound": False,
                                                     "bodies": []}}
    results.write_text("".join(json.dumps(v) + "\n" for v in lines))
    return results


def test_a_test_image_is_declared_and_checked_as_the_station_writes_its_parcels(tmp_path, library):
    """Where the station's verdicts carry a declaration check, so does a test image's (its page shows the
    declaration panel as a real parcel's does), under an S10 item id of its own — the background's declaration
    travels with the parcel, the background's identifier does not. An inspector that runs no declaration check
    makes no test image for such a station: one without the panel would tell itself."""
    db = tmp_path / "review.sqlite"
    conn = connect(db, create=True)
    users = {name: auth.add_user(conn, name, password) for name, password in PASSWORDS.items()}
    tip.grant_supervisor(conn, users["sue"])
    ingest(conn, _as_declared(write_sample_results(tmp_path / "day1", seed=0), 10_000_000))
    for row in conn.execute("SELECT id FROM items WHERE station = 'LHR-2'").fetchall():
        store.decide(conn, int(row["id"]), users["alice"], "alice", "false_alarm")
    tip.set_rate(conn, "LHR-2", tip.MAX_RATE, users["sue"])
    judge = Inspector(threshold=0.0)
    unchecked = tip.TipContext(library, tmp_path / "tip-unchecked", judge, np.random.default_rng(3))
    day2 = _judged_by(_as_declared(write_sample_results(tmp_path / "day2", seed=1), 20_000_000), judge)
    report = ingest(conn, day2, tip=unchecked)
    assert report.tip_queued + report.tip_model_misses == 0 and not _projections(db)
    inspector = Inspector(threshold=0.0)
    attach_declaration_check(inspector)
    context = tip.TipContext(library, tmp_path / "tip", inspector, np.random.default_rng(3))
    day3 = _judged_by(_as_declared(write_sample_results(tmp_path / "day3", seed=2), 30_000_000), inspector)
    report = ingest(conn, day3, tip=context)
    conn.close()
    projections = [p for p in _projections(db) if p["item_id"] is not None]
    assert report.tip_queued >= 1 and projections
    client, _ = _client(db, "bob")
    queue = client.get("/api/queue?state=undecided").json()["items"]
    for projection in projections:
        background = client.get(f"/api/items/{projection['background_item_id']}").json()
        test_item = client.get(f"/api/items/{projection['item_id']}").json()
        real_id = next(r["id"] for r in queue if r["id"] != projection["item_id"])
        real_item = client.get(f"/api/items/{real_id}").json()
        assert test_item["declaration"] is not None and real_item["declaration"] is not None
        assert _keys(test_item) == _keys(real_item)
        assert test_item["declaration"]["status"] in ("consistent", "mismatch")  # checked on the composite itself
        item_id = test_item["declaration"]["declared"]["item_id"]
        assert s10_valid(item_id) and item_id != background["declaration"]["declared"]["item_id"]


def test_a_station_with_advance_data_gets_test_images_declared_from_it(tmp_path, library):
    """A station that reads declarations from advance data (``inspect --declarations FILE``) shows its parcels
    declared; a test image checked without that file would read "no declaration for this item" every time. Without
    the file no test image is made and ingest says why; with it (``review ingest --declarations``), the composite
    carries its background's declaration under its own S10 id and is checked against it like a real parcel."""
    from parcelscan.inference.policy import load_policy

    db = tmp_path / "review.sqlite"
    advance = tmp_path / "advance.jsonl"
    conn = connect(db, create=True)
    users = {name: auth.add_user(conn, name, password) for name, password in PASSWORDS.items()}
    tip.grant_supervisor(conn, users["sue"])
    ingest(conn, _as_declared(write_sample_results(tmp_path / "day1", seed=0), 10_000_000, advance))
    for row in conn.execute("SELECT id FROM items WHERE station = 'LHR-2'").fetchall():
        store.decide(conn, int(row["id"]), users["alice"], "alice", "false_alarm")
    tip.set_rate(conn, "LHR-2", tip.MAX_RATE, users["sue"])
    judge = Inspector(threshold=0.0)
    without = tip.TipContext(library, tmp_path / "tip-without", judge, np.random.default_rng(3),
                             declarations=attach_declaration_check(judge))
    day2 = _judged_by(_as_declared(write_sample_results(tmp_path / "day2", seed=1), 20_000_000, advance), judge)
    report = ingest(conn, day2, tip=without)
    assert report.tip_queued + report.tip_model_misses == 0 and not _projections(db)
    assert report.tip_no_advance_data >= 1 and "--declarations" in report.summary()

    day3 = _judged_by(_as_declared(write_sample_results(tmp_path / "day3", seed=2), 30_000_000, advance), judge)
    context = tip.station_context(library, tmp_path / "tip", declarations_path=advance)
    context.inspector.threshold = 0.0  # the station's threshold (judges_like): as `_judged_by` wrote the batch
    context.rng = np.random.default_rng(3)
    assert load_policy(None).alarms_on("declaration")
    report = ingest(conn, day3, tip=context)
    projections = [p for p in _projections(db) if p["item_id"] is not None]
    assert report.tip_queued >= 1 and report.tip_no_advance_data == 0 and projections
    station_file = {json.loads(line)["item_id"] for line in advance.read_text().splitlines()}
    for projection in projections:
        item = store.get_item(conn, projection["item_id"])
        background = store.get_item(conn, projection["background_item_id"])
        check = json.loads(item["verdict_line"])["declaration_check"]
        assert check["source"] == str(advance) and check["status"] in ("consistent", "mismatch")
        assert any("clothes" in reason for reason in check["reasons"])  # the background's declaration, checked
        new_id, old_id = (json.loads(Path(json.loads(row["inputs"])[0]).with_name(f"{row['scan_id']}.json")
                                     .read_text())["item_id"] for row in (item, background))
        assert s10_valid(new_id) and new_id != old_id and new_id not in station_file  # the file is not written
        assert check["declared"]["item_id"] == new_id  # the page shows the declaration under the parcel's own id
    conn.close()


def test_a_batch_judged_by_another_model_or_threshold_gets_no_test_image(tmp_path, library):
    """The page shows the model and the threshold: a test image scored by the shipped default at its stored
    threshold, among parcels a station judged at its own calibrated threshold (or with a retrained model), would
    tell itself. No test image is made for such a batch, and ingest says why; given the station's judge, it is."""
    db = tmp_path / "review.sqlite"
    conn = connect(db, create=True)
    users = {name: auth.add_user(conn, name, password) for name, password in PASSWORDS.items()}
    tip.grant_supervisor(conn, users["sue"])
    ingest(conn, write_sample_results(tmp_path / "day1", seed=0))
    for row in conn.execute("SELECT id FROM items WHERE station = 'LHR-2'").fetchall():
        store.decide(conn, int(row["id"]), users["alice"], "alice", "false_alarm")
    tip.set_rate(conn, "LHR-2", tip.MAX_RATE, users["sue"])
    station_judge = Inspector(threshold=0.0)  # the station's own threshold
    shipped = tip.TipContext(library, tmp_path / "tip-shipped", Inspector(), np.random.default_rng(3))
    report = ingest(conn, _judged_by(write_sample_results(tmp_path / "day2", seed=1), station_judge), tip=shipped)
    assert report.tip_queued + report.tip_model_misses == 0 and not _projections(db)
    assert report.tip_other_judge >= 1 and "judged by another model or threshold" in report.summary()
    same = tip.TipContext(library, tmp_path / "tip-same", station_judge, np.random.default_rng(3))
    report = ingest(conn, _judged_by(write_sample_results(tmp_path / "day3", seed=2), station_judge), tip=same)
    assert report.tip_queued >= 1 and report.tip_other_judge == 0
    conn.close()


def test_a_projection_is_numbered_in_sequence_with_its_batch(world):
    """The scanner's counter: a test image's id follows the batch it arrives in, not the station's last stored
    scan (an id far below its neighbours would give it away)."""
    conn = connect(world["db"])
    number = re.compile(r"^(.*?)(\d+)$")
    for projection in _projections(world["db"]):
        if projection["item_id"] is None:
            continue
        test_id = conn.execute("SELECT scan_id FROM items WHERE id = ?", (projection["item_id"],)).fetchone()[0]
        batch = [row[0] for row in conn.execute(
            "SELECT scan_id FROM items WHERE station = ? AND ingested_at = (SELECT ingested_at FROM items WHERE id = ?)"
            " AND id NOT IN (SELECT item_id FROM tip_projections WHERE item_id IS NOT NULL)",
            (projection["station"], projection["item_id"]))]
        prefix, digits = number.match(test_id).groups()
        batch_numbers = [int(m.group(2)) for s in batch if (m := number.match(s)) and m.group(1) == prefix]
        assert batch_numbers and int(digits) > max(batch_numbers)
    conn.close()


def test_a_test_image_takes_the_number_after_its_batch_not_after_the_stored_scans(tmp_path):
    conn = connect(tmp_path / "review.sqlite", create=True)
    conn.execute("INSERT INTO items (scan_id, station, ingested_at, model_sha256, inputs_sha256, inputs, "
                 "verdict, verdict_line) VALUES ('sim31-000075', 'LHR-2', 'x', 'm', 'i', '[]', 'suspect', '{}')")
    batch = {"sim31-000286", "sim31-000592", "sim31-000401"}
    assert tip.new_scan_id(conn, "LHR-2", "sim31-000286", batch) == "sim31-000593"
    assert tip.new_scan_id(conn, "LHR-2", "sim31-000286") == "sim31-000076"  # without the batch: out of sequence
    conn.close()


def test_after_the_decision_it_reveals_itself_and_a_hit_needs_the_mark(world):
    projection = _projections(world["db"])[0]
    test_id = projection["item_id"]
    mask_box = json.loads(projection["mask"])["box"]
    conn = connect(world["db"])
    item = store.get_item(conn, test_id)
    mask = tip.decode_mask(projection["mask"], (item["scan_rows"], item["scan_cols"]))
    conn.close()
    inside = [int(v) for v in np.argwhere(mask)[len(np.argwhere(mask)) // 2]]
    far = [0, 0] if not mask[:40, :40].any() else [item["scan_rows"] - 1, item["scan_cols"] - 1]
    outcomes = {}
    for user, body in (("alice", {"decision": "seizure", "mark": inside}),
                       ("bob", {"decision": "seizure", "mark": far}),
                       ("sue", {"decision": "false_alarm"})):
        client, token = _client(world["db"], user)
        answer = client.post(f"/api/items/{test_id}/decision", json=body, headers={"X-CSRF-Token": token}).json()
        shown = client.get(f"/api/items/{test_id}").json()["tip"]
        assert answer["tip"] == shown and shown["text"].startswith("test image: ")
        assert projection["description"] in shown["text"] and shown["box"] == mask_box
        outcomes[user] = shown["hit"]
    assert outcomes == {"alice": True, "bob": False, "sue": False}
    # a real parcel decided: nothing to reveal
    client, token = _client(world["db"], "alice")
    real = next(r["id"] for r in client.get("/api/queue?state=undecided").json()["items"]
                if r["id"] not in {p["item_id"] for p in _projections(world["db"])})
    answer = client.post(f"/api/items/{real}/decision", json={"decision": "seizure", "mark": [5, 5]},
                         headers={"X-CSRF-Token": token}).json()
    assert answer["tip"] is None and client.get(f"/api/items/{real}").json()["my_mark"] == [5, 5]
    # a mark outside the scan is refused
    bad = client.post(f"/api/items/{real}/decision", json={"decision": "seizure", "mark": [10**6, 0]},
                      headers={"X-CSRF-Token": token})
    assert bad.status_code == 400


def test_projections_never_reach_exports_statistics_or_backgrounds(world, tmp_path):
    conn = connect(world["db"])
    tests = {p["item_id"] for p in _projections(world["db"]) if p["item_id"]}
    decided = {r[0] for r in conn.execute("SELECT item_id FROM current_decisions")}
    assert tests & decided  # at least one decided test image (the test above)
    report = export(conn, tmp_path / "export")
    manifest = [json.loads(line) for line in (tmp_path / "export" / "manifest.jsonl").read_text().splitlines()]
    exported = {item for r in manifest for item in (f["review_item"] for f in r["provenance"]["flagged_by"])}
    assert exported and not exported & tests and report.suspect + report.clear == len(manifest)
    alice = world["users"]["alice"]
    counts = store.counts(conn, alice)
    everything = [r for r in store.queue(conn, store.QueueFilter(state="all"), alice, limit=0)]
    assert counts["total"] == len([r for r in everything if not (r["id"] in tests and r["id"] in decided)])
    seizures = [r for r in everything if r["state"] == "seizure" and r["id"] not in tests]
    assert counts["seizure"] == len(seizures)
    backgrounds = tip.cleared_backgrounds(conn, "LHR-2") + tip.cleared_backgrounds(conn, "FRA-1")
    assert not {int(b["id"]) for b in backgrounds} & tests
    assert not {int(b["id"]) for b in backgrounds} & {p["background_item_id"] for p in _projections(world["db"])}
    conn.close()


def test_supervisors_set_rates_and_see_scores_others_are_refused(world):
    inspector, token = _client(world["db"], "bob")
    for method, path, body in (("GET", "/api/tip/stats", None), ("GET", "/supervisor", None),
                               ("POST", "/api/tip/rate", {"station": "LHR-2", "rate": 0.2})):
        response = inspector.request(method, path, json=body, headers={"X-CSRF-Token": token})
        assert response.status_code == 403, (method, path)
    conn = connect(world["db"])
    assert tip.rate_of(conn, "LHR-2") == 0.5  # the refused request changed nothing
    conn.close()
    supervisor, token = _client(world["db"], "sue")
    assert supervisor.post("/api/tip/rate", json={"station": "LHR-2", "rate": 0.9},
                           headers={"X-CSRF-Token": token}).status_code == 400
    stats = supervisor.post("/api/tip/rate", json={"station": "LHR-2", "rate": 0.02},
                            headers={"X-CSRF-Token": token}).json()
    assert {r["station"]: r["rate"] for r in stats["rates"]}["LHR-2"] == 0.02
    by_user = {s["user"]: s for s in stats["inspectors"]}
    assert (by_user["alice"]["hits"], by_user["alice"]["tip_items"]) == (1, 1)
    assert (by_user["bob"]["hits"], by_user["bob"]["tip_items"]) == (0, 1)
    rate, low, high = tip.wilson(1, 1)
    assert by_user["alice"]["hit_rate"] == rate == 1.0 and by_user["alice"]["hit_rate_ci95"] == [low, high]
    assert 0.2 < low < 0.21 and high == 1.0  # Wilson 95 % for 1 of 1: 0.207–1
    assert by_user["alice"]["trend"][0]["tip_items"] == 1
    page = supervisor.get("/supervisor")
    assert page.status_code == 200 and "Hit rate" in page.text and "alice" in page.text


def test_wilson_interval_matches_the_textbook_values():
    assert tip.wilson(0, 0) == (None, None, None)
    rate, low, high = tip.wilson(8, 10)
    assert rate == 0.8 and low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)


def test_review_ingest_takes_the_tip_judge_only_with_a_library(tmp_path, capsys):
    """--model, --policy and --declarations say how the test images are judged; without --tip-library they would be
    ignored: refused."""
    from parcelscan.cli import main

    results = write_sample_results(tmp_path / "day", seed=0)
    for option in (["--model", "x.onnx"], ["--policy", "p.toml"], ["--declarations", "advance.csv"]):
        assert main(["review", "ingest", str(results), "--db", str(tmp_path / "r.sqlite"), *option]) == 2
        assert "give them with --tip-library" in capsys.readouterr().err
    assert not (tmp_path / "r.sqlite").exists()
