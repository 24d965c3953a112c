"""Images and static files. Images are addressed by item id and a fixed image kind and rendered from the
files recorded (and hashed) at ingest; static files come from a fixed list. No request ever names a file."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from parcelscan.errors import ScanReadError
from parcelscan.inference.review import store
from parcelscan.inference.review.images import IMAGE_KINDS, ImageUnavailable
from parcelscan.inference.review.web import Conn, ItemId

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"app.css": "text/css; charset=utf-8", "review.js": "text/javascript; charset=utf-8",
                "queue.js": "text/javascript; charset=utf-8", "supervisor.js": "text/javascript; charset=utf-8"}

router = APIRouter()


@router.get("/images/{item_id}/{name}")
def image(request: Request, item_id: ItemId, name: str, conn: Conn):
    kind = name.removesuffix(".png")
    if not name.endswith(".png") or kind not in IMAGE_KINDS:
        return JSONResponse({"detail": "no such image"}, status_code=404)
    item = store.get_item(conn, item_id)
    if item is None:
        return JSONResponse({"detail": "no such item"}, status_code=404)
    try:
        data = request.app.state.image_cache.get(item, kind)
    except ImageUnavailable as error:
        return JSONResponse({"detail": str(error)}, status_code=404)
    except ScanReadError as error:
        return JSONResponse({"detail": str(error)}, status_code=409)
    # an item's images never change (ingest pinned the files' SHA-256): cacheable, briefly, by this browser only
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})


@router.get("/static/{name}")
def static(name: str):
    if name not in STATIC_FILES:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response((STATIC_DIR / name).read_bytes(), media_type=STATIC_FILES[name],
                    headers={"Cache-Control": "no-cache"})
