"""The server-rendered pages: the queue, the start of a review run, one item's review page (whose data
comes from the JSON API in ``routes_api``)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from parcelscan.inference.review import store
from parcelscan.inference.review.web import Conn, ItemId, filters_of, page, session_of

QUEUE_PAGE_LIMIT = 500
MATERIAL_SUGGESTIONS = ("Nd2O3", "Pr6O11", "Dy2O3", "Tb4O7", "CeO2", "La2O3", "Y2O3", "Gd2O3", "Sm2O3",
                        "NdFeB powder", "RE carbonate", "Sb2O3", "GeO2", "Ga", "W powder", "unknown")
SCENARIO_SUGGESTIONS = ("tile adhesive / ceramic ingredients", "water bottle slurry", "mislabelled machinery parts",
                        "powder bag", "hidden in electronics", "other")

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def queue_page(request: Request, conn: Conn):
    session = session_of(request)
    filters = filters_of(request)
    rows = store.queue(conn, filters, session.user.id, limit=QUEUE_PAGE_LIMIT)
    return page(request, "queue.html", {
        "rows": rows, "limit": QUEUE_PAGE_LIMIT, "filters": filters, "query": urlencode(filters.query_params()),
        "stations": store.stations(conn), "states": store.STATES, "counts": store.counts(conn, session.user.id)})


@router.get("/review")
def review_start(request: Request, conn: Conn):
    filters = filters_of(request)
    rows = store.queue(conn, filters, session_of(request).user.id, limit=1)
    query = urlencode(filters.query_params())
    if not rows:
        return RedirectResponse(f"/?{query}", status_code=303)
    return RedirectResponse(f"/review/{rows[0]['id']}?{query}", status_code=303)


@router.get("/review/{item_id}", response_class=HTMLResponse)
def review_page(request: Request, item_id: ItemId, conn: Conn):
    if store.get_item(conn, item_id) is None:
        return page(request, "message.html", {"title": "No such item", "text": f"There is no item {item_id}."},
                    404)
    filters = filters_of(request)
    return page(request, "review.html", {
        "item_id": item_id, "query": urlencode(filters.query_params()), "filters": filters,
        "materials": MATERIAL_SUGGESTIONS, "scenarios": SCENARIO_SUGGESTIONS})
