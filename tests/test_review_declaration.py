"""The review app shows the customs declaration beside the image (``inference/review/declaration_view.py``) and
sorts declaration mismatches first (``/api/queue?sort=declaration``); hostile declarations never break a page."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*install `httpx2`.*")

from fastapi.testclient import TestClient  # noqa: E402

from parcelscan.inference.review import auth  # noqa: E402
from parcelscan.inference.review.app import create_app  # noqa: E402
from parcelscan.inference.review.db import connect  # noqa: E402
from parcelscan.inference.review.declaration_view import declaration_view  # noqa: E402
from parcelscan.inference.review.ingest import ingest  # noqa: E402
from parcelscan.inference.review.sample import write_sample_results  # noqa: E402
from parcelscan.inference.verdict import REASON_CLASSES  # noqa: E402

ITEM = "RR123456785CN"
DECLARATION = {"item_id": ITEM, "category": "sale_of_goods", "origin": "CN", "gross_weight_kg": 2.5,
               "items": [{"description": "machinery parts", "hs_code": "8487.90", "quantity": 1,
                          "net_weight_kg": 2.0, "value": 30}]}
MISMATCH = {"status": "mismatch", "priority": "raised", "source": "sidecar",
            "reasons": ["declared 'machinery parts' (HS 8487.90), 2 kg; seen: 1 body of dense material ≈ 1400 g, "
                        "signature of Nd2O3 or Pr6O11 — not what HS 8487 holds"],
            "observed": {"bodies": [{"mass_g": 1400.0, "nearest": "Nd2O3", "twins": ["Nd2O3", "Pr6O11"],
                                     "could_be": ["Nd2O3", "Pr6O11", "barite"],
                                     "mass_as_g": {"Nd2O3": 1400.0, "Pr6O11": 1380.0, "barite": 1610.0,
                                                   "steel": 99.0}},
                                    {"mass_g": 810.0, "mass_lower_bound": True, "nearest": None, "opaque_share": 0.5}],
                         "xray_mass_kg": 2.4, "xray_mass_lower_bound": True}}


@pytest.fixture(scope="module")
def review(tmp_path_factory):
    """The sample results with a declaration mismatch on the *lowest*-scored suspect and a hostile check on
    another, ingested; a logged-in client."""
    root = tmp_path_factory.mktemp("review_declaration")
    results = write_sample_results(root, rows=120, cols=160)
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    flagged = sorted((v for v in lines if v["verdict"] != "clear"), key=lambda v: v["score"] or 0.0)
    target, hostile = flagged[0], flagged[-1]
    target.update(declaration_check=MISMATCH, powder_mass_g=[1400.0], reason_classes=["powder", "declaration"])
    hostile.update(declaration_check={"status": ["x"], "reasons": "not a list", "observed": {"bodies": [7, {
        "mass_g": "heavy", "twins": "Nd2O3", "could_be": "Nd2O3", "mass_as_g": ["Nd2O3"], "mass_lower_bound": "yes",
        "d_prime": "far"}, {
        "could_be": [3, "x" * 500, None], "mass_as_g": {"x" * 40: float("nan")}, "d_prime": float("inf")}],
        "xray_mass_lower_bound": "yes"}},
        powder_mass_g=["a", float("inf")], reason_classes=["opaque", "<b>x</b>", 7])
    results.write_text("".join(json.dumps(v, sort_keys=True) + "\n" for v in lines))
    sidecar = Path(target["inputs"][0]).with_name(f"{target['scan_id']}.json")
    meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    sidecar.write_text(json.dumps({**meta, "item_id": ITEM, "declaration": DECLARATION}))
    db = root / "review.sqlite"
    conn = connect(db, create=True)
    auth.add_user(conn, "alice", "alice-password-1")
    ingest(conn, results)
    conn.close()
    client = TestClient(create_app(db))
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    client.post("/login", data={"username": "alice", "password": "alice-password-1", "csrf_token": token,
                                "next": "/"}, follow_redirects=False)
    return client, target["scan_id"], hostile["scan_id"]


def test_mismatches_sort_first_and_the_declaration_shows_beside_the_image(review):
    client, target, _ = review
    by_score = client.get("/api/queue?state=all").json()["items"]
    assert by_score[0]["scan_id"] != target  # the lowest-scored suspect is not first by score
    first = client.get("/api/queue?state=all&sort=declaration").json()["items"][0]
    assert first["scan_id"] == target
    item = client.get(f"/api/items/{first['id']}?sort=declaration&state=all").json()
    view = item["declaration"]
    assert view["status"] == "mismatch" and view["priority"] == "raised"
    assert view["declared"]["items"][0] == {"description": "machinery parts", "hs_code": "8487.90", "quantity": 1,
                                            "net_weight_kg": 2.0, "value": 30.0}
    assert view["bodies"][0]["nearest"] == "Nd2O3" and view["powder_mass_g"] == [1400.0]
    # what the body could be, each with its own grams (only for the materials it could be)
    assert view["bodies"][0]["could_be"] == ["Nd2O3", "Pr6O11", "barite"]
    assert view["bodies"][0]["mass_as_g"] == {"Nd2O3": 1400.0, "Pr6O11": 1380.0, "barite": 1610.0}
    # a body behind a stopped beam: its grams are a lower bound, and the view says so
    assert [b["mass_lower_bound"] for b in view["bodies"]] == [False, True]
    assert view["xray_mass_kg"] == 2.4 and view["xray_mass_lower_bound"] is True  # the parcel's mass: a floor too
    assert item["position"]["index"] == 1
    page = client.get(f"/review/{first['id']}?sort=declaration")
    assert page.status_code == 200 and 'id="declaration"' in page.text
    queue = client.get("/?sort=declaration&state=all")
    assert queue.status_code == 200 and 'value="declaration" selected' in queue.text
    assert client.get("/api/queue?sort=bogus").status_code == 400


def test_the_queue_says_why_each_parcel_is_there(review):
    """Each row names its reason classes (the station's lanes) and a declaration mismatch, so the mismatches sorted
    first are seen as such; a hostile check is shown as no status, never an error."""
    client, target, hostile = review
    rows = {r["scan_id"]: r for r in client.get("/api/queue?state=all&sort=declaration").json()["items"]}
    assert rows[target]["declaration_status"] == "mismatch" and rows[hostile]["declaration_status"] is None
    assert all(r["declaration_status"] is None for k, r in rows.items() if k != target)
    assert rows[target]["reason_classes"] == ["powder", "declaration"]
    assert rows[hostile]["reason_classes"] == ["opaque"]  # only the documented classes
    assert all(set(r["reason_classes"]) <= set(REASON_CLASSES) for r in rows.values())
    assert all("verdict_line" not in r for r in rows.values())  # the line itself stays on the server
    html = client.get("/?sort=declaration&state=all").text
    assert html.count("declaration mismatch</span>") == 1


def test_a_hostile_declaration_check_is_shown_as_unusable_never_an_error(review):
    client, _, hostile = review
    items = client.get("/api/queue?state=all").json()["items"]
    hostile_id = next(i["id"] for i in items if i["scan_id"] == hostile)
    response = client.get(f"/api/items/{hostile_id}")
    assert response.status_code == 200
    view = response.json()["declaration"]
    assert view["status"] is None and view["reasons"] == [] and view["powder_mass_g"] == []
    assert view["xray_mass_kg"] is None and view["xray_mass_lower_bound"] is False
    assert view["bodies"] == [{"mass_g": None, "nearest": None, "d_prime": None, "mass_material": None, "twins": [],
                               "could_be": [], "mass_as_g": {}, "opaque_share": None, "mass_lower_bound": False},
                              {"mass_g": None, "nearest": None, "d_prime": None, "mass_material": None, "twins": [],
                               "could_be": ["x" * 40], "mass_as_g": {}, "opaque_share": None,
                               "mass_lower_bound": False}]


def test_the_view_reads_anything():
    assert declaration_view("{", {}) is None
    assert declaration_view(json.dumps({"verdict": "suspect"}), {"declaration": "gift"})["problems"] == [
        "the declaration is not an object (str)"]
    long = declaration_view(json.dumps({"declaration_check": {"status": "mismatch", "reasons": ["x" * 10**5]}}), None)
    assert long["status"] == "mismatch" and len(long["reasons"][0]) <= 480


def test_a_declaration_from_advance_data_is_shown_from_the_check():
    """A station reading advance data (``inspect --declarations``) has no declaration in the sidecar: the page shows
    the one its check read, carried in ``declaration_check.declared``; the sidecar's, where there is one, wins."""
    check = {**MISMATCH, "source": "advance.csv", "declared": DECLARATION}
    view = declaration_view(json.dumps({"declaration_check": check}), {"item_id": ITEM})
    assert view["declared"]["item_id"] == ITEM and view["problems"] == []
    assert view["declared"]["items"][0]["description"] == "machinery parts"
    assert view["declared"]["items"][0]["hs_code"] == "8487.90"
    other = {**DECLARATION, "items": [{"description": "toys", "hs_code": "9503.00", "net_weight_kg": 1.0}]}
    assert declaration_view(json.dumps({"declaration_check": check}), {"declaration": other})["declared"]["items"][0][
        "description"] == "toys"
    hostile = declaration_view(json.dumps({"declaration_check": {**check, "declared": [1, "x"]}}), {})
    assert hostile["declared"]["items"] == [] and hostile["problems"] == ["the declaration is not an object (list)"]


def test_a_scan_nothing_was_weighed_of_says_why_not_no_body():
    """A scan not analysed has no bodies because nobody looked: the view carries the check's note, which the page
    shows instead of "no powder body localised"."""
    line = json.dumps({"declaration_check": {"status": "absent", "reasons": ["no declaration for this item"],
                                             "observed": {"bodies": [], "note": "the scan was not analysed"}}})
    assert declaration_view(line, {})["weighed_note"] == "the scan was not analysed"
    hostile = json.dumps({"declaration_check": {"status": "absent", "observed": {"note": ["x"]}}})
    assert declaration_view(hostile, {})["weighed_note"] is None
