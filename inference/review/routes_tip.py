"""Supervisors' routes (threat image projection, ``review.tip``): the TIP rate per queue and the per-inspector
scores. Every route checks the supervisor role on the server (``roles``), whatever the page shows: an
inspector gets 403 from each, with no hint of what TIP holds."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ValidationError

from parcelscan.inference.review import store, tip
from parcelscan.inference.review.db import transaction
from parcelscan.inference.review.web import Conn, Forbidden, page, session_of

router = APIRouter()


class RateIn(BaseModel):
    station: str
    rate: float


def _supervisor(request: Request, conn) -> int:
    session = session_of(request)
    if not tip.is_supervisor(conn, session.user.id):
        raise Forbidden("supervisors only")
    return session.user.id


def _overview(conn) -> dict:
    stations = store.stations(conn)
    current = tip.rates(conn)
    return {"rates": [{"station": s, "rate": tip.rate_of(conn, s), "own": s in current} for s in ["*", *stations]],
            "inspectors": tip.inspector_stats(conn), "projections": tip.projection_counts(conn)}


@router.get("/api/tip/stats")
def api_tip_stats(request: Request, conn: Conn):
    _supervisor(request, conn)
    return _overview(conn)


@router.post("/api/tip/rate")
async def api_tip_rate(request: Request, conn: Conn):
    user_id = _supervisor(request, conn)
    try:
        body = RateIn.model_validate_json(await request.body())
    except ValidationError as error:
        return JSONResponse({"detail": f"bad rate body: {error.errors()[0]['msg']}"}, status_code=400)
    with transaction(conn):
        tip.set_rate(conn, body.station, body.rate, user_id)
        store.audit(conn, user_id, session_of(request).user.name, "tip_rate",
                    detail={"station": body.station, "rate": body.rate})
    return {"ok": True, **_overview(conn)}


@router.get("/supervisor", response_class=HTMLResponse)
def supervisor_page(request: Request, conn: Conn):
    _supervisor(request, conn)
    return page(request, "supervisor.html", _overview(conn))
