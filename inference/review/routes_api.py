"""The JSON API the review page runs on: the queue, one item with everything the inspector sees, a
decision (committed, ``synchronous=FULL``, before the answer is sent) and undo."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from parcelscan.inference.review import auth, store, tip
from parcelscan.inference.review.declaration_view import declaration_view
from parcelscan.inference.review.images import IMAGE_KINDS
from parcelscan.inference.review.web import Conn, ItemId, client_ip, filters_of, finite_json, open_db, session_of

router = APIRouter()


class DecisionIn(BaseModel):
    decision: str
    material: str | None = None
    scenario: str | None = None
    notes: str | None = None
    mark: list[int] | None = None  # [row, col] in scan pixels: where the inspector marked the concealment


def item_json(conn: sqlite3.Connection, item: sqlite3.Row, session: auth.Session,
              filters: store.QueueFilter) -> dict[str, Any]:
    item_id = int(item["id"])
    decisions = store.item_decisions(conn, item_id)
    mine = next((d for d in decisions if d["user_id"] == session.user.id), None)
    my_mark = tip.mark_of(conn, int(mine["id"])) if mine else None
    images = {kind: f"/images/{item_id}/{kind}.png" for kind in IMAGE_KINDS}
    if not item["heatmap_path"]:
        images["heatmap"] = None
    if item["scan_kind"] == "pseudo_color":  # no low/high channels: no raw images, no material view
        images.update(low=None, high=None, material=None)
    if item["scan_error"]:
        images = dict.fromkeys(IMAGE_KINDS)
    problems: list[str] = []  # numbers JSON cannot carry (NaN, Infinity), named for the inspector
    meta = finite_json(json.loads(item["scan_meta"]), "sidecar", problems)
    out = {
        "id": item_id, "scan_id": item["scan_id"], "verdict": item["verdict"], "score": item["score"],
        "threshold": item["threshold"], "station": item["station"], "scanned_at": item["scanned_at"],
        "model": {"name": item["model_name"], "version": item["model_version"], "sha256": item["model_sha256"]},
        "reasons": json.loads(item["reasons"]), "verdict_error": item["verdict_error"],
        "scan_error": item["scan_error"], "heatmap_error": item["heatmap_error"],
        "scan": {"kind": item["scan_kind"], "rows": item["scan_rows"], "cols": item["scan_cols"],
                 "meta": meta,
                 "files": sorted(Path(p).name for p in json.loads(item["inputs"]))},
        "ingested_at": item["ingested_at"], "images": images,
        "decisions": [{k: d[k] for k in ("user", "decision", "material", "scenario", "notes", "created_at")}
                      for d in decisions],
        "mine": ({k: mine[k] for k in ("decision", "material", "scenario", "notes", "created_at")}
                 if mine else None),
        "state": store.state_of(decisions), "conflict": store.state_of(decisions) == "conflict",
        "history": store.item_history(conn, item_id),
        "position": store.neighbours(conn, filters, session.user.id, item_id),
        "counts": store.counts(conn, session.user.id), "user": session.user.name,
        "my_mark": list(my_mark) if my_mark else None,
        # after this inspector's decision a test image reveals itself; before it (and for a parcel) None
        "tip": tip.reveal(conn, item, mine),
        "declaration": declaration_view(item["verdict_line"], meta),  # the declaration beside the image
    }
    out = finite_json(out, "", problems)
    out["problems"] = problems
    return out


@router.get("/api/queue")
def api_queue(request: Request, conn: Conn):
    session = session_of(request)
    filters = filters_of(request)
    items = finite_json(store.queue(conn, filters, session.user.id), "queue", [])
    return {"filters": filters.query_params(), "items": items, "counts": store.counts(conn, session.user.id)}


@router.get("/api/items/{item_id}")
def api_item(request: Request, item_id: ItemId, conn: Conn):
    item = store.get_item(conn, item_id)
    if item is None:
        return JSONResponse({"detail": f"no item {item_id}"}, status_code=404)
    return item_json(conn, item, session_of(request), filters_of(request))


@router.post("/api/items/{item_id}/decision")
async def api_decide(request: Request, item_id: ItemId):
    # the body is parsed here, after the guard, so an anonymous request is refused before it is read
    try:
        body = DecisionIn.model_validate_json(await request.body())
    except ValidationError as error:
        return JSONResponse({"detail": f"bad decision body: {error.errors()[0]['msg']}"}, status_code=400)
    session = session_of(request)
    filters = filters_of(request)
    ip = client_ip(request)

    def work() -> dict[str, Any] | None:
        conn = open_db(request)
        try:
            try:
                result = store.decide(conn, item_id, session.user.id, session.user.name, body.decision,
                                      material=body.material, scenario=body.scenario, notes=body.notes, ip=ip,
                                      mark=body.mark)
            except LookupError:
                return None
            # committed: from here on the decision is durable, whatever happens to this process
            result["position"] = store.neighbours(conn, filters, session.user.id, item_id)
            mine = next(d for d in result["decisions"] if d["user_id"] == session.user.id)
            result["tip"] = tip.reveal(conn, store.get_item(conn, item_id), mine)
            return result
        finally:
            conn.close()

    result = await run_in_threadpool(work)
    if result is None:
        return JSONResponse({"detail": f"no item {item_id}"}, status_code=404)
    return {"ok": True, **result}


@router.post("/api/undo")
def api_undo(request: Request, conn: Conn):
    session = session_of(request)
    result = store.undo(conn, session.user.id, session.user.name, ip=client_ip(request))
    if result is None:
        return JSONResponse({"ok": False, "detail": "nothing to undo"}, status_code=409)
    scan_id = store.get_item(conn, result["item_id"])["scan_id"]
    return {"ok": True, "scan_id": scan_id, **result}
