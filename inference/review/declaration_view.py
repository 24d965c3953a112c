"""The customs declaration beside the image: what the sender declared and what the station saw, for one item.

Read from what was ingested — the station's verdict line (``declaration_check``, ``powder_mass_g``: see
``inference.declaration``) and the scan's sidecar (``item_id``, ``declaration``) — and shaped for the review
page (``_declaration.html``, ``review.js``). Both come from other systems, so everything is re-read defensively:
the declaration through ``customs.parse_declaration`` (problems named), the check's fields by type, strings cut;
anything unusable is shown as such, never an error page.

``DECLARATION_SORT`` is the queue's ``sort=declaration`` option: items whose declaration check raised priority
first (then by score, as the default order).
"""

from __future__ import annotations

import json
import math
from typing import Any

from parcelscan.datasets.scans.customs import hs_display, parse_declaration

SORTS = ("score", "declaration")
RAISED_PATTERN = '%"priority": "raised"%'  # in the verdict line as ingested (json.dumps, sort_keys)
MAX_SHOWN = 20
# a body's ``could_be``: the materials its readable core and weight allow (the check's own list, nearest first),
# each with the grams the body would weigh as that material (``mass_as_g``) — what an inspector needs to judge
# "2 kg of machinery parts" against "≈ 65 g of Y2O3, or 33 g of Sb2O3, or 99 g of brass"
MAX_MATERIALS = 8
_TEXT = 240


def _text(value: Any) -> str | None:
    return value[:_TEXT] if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def declaration_view(verdict_line: Any, scan_meta: Any) -> dict[str, Any] | None:
    """What the review page shows of the declaration, or None when the station checked none and the sidecar
    holds none."""
    try:
        verdict = json.loads(verdict_line) if isinstance(verdict_line, str) else {}
    except (json.JSONDecodeError, RecursionError):
        verdict = {}
    verdict = verdict if isinstance(verdict, dict) else {}
    meta = scan_meta if isinstance(scan_meta, dict) else {}
    check = verdict.get("declaration_check")
    check = check if isinstance(check, dict) else None
    raw = meta.get("declaration")
    if raw is None and check is not None:  # read from advance data: the station's check carries it
        raw = check.get("declared")
    if check is None and raw is None:
        return None
    view: dict[str, Any] = {"status": None, "priority": None, "reasons": [], "bodies": [], "xray_mass_kg": None,
                            "xray_mass_lower_bound": False, "powder_mass_g": None, "declared": None, "problems": [],
                            "weighed_note": None}
    if check is not None:
        status = check.get("status")
        view["status"] = status if status in ("consistent", "mismatch", "absent") else None
        view["priority"] = "raised" if check.get("priority") == "raised" else "normal"
        reasons = check.get("reasons")
        view["reasons"] = [r[:_TEXT * 2] for r in reasons[:MAX_SHOWN] if isinstance(r, str)] if isinstance(
            reasons, list) else []
        observed = check.get("observed") if isinstance(check.get("observed"), dict) else {}
        bodies = observed.get("bodies") if isinstance(observed.get("bodies"), list) else []
        for body in bodies[:MAX_SHOWN]:
            if isinstance(body, dict):
                twins = body.get("twins") if isinstance(body.get("twins"), list) else []
                could_be = body.get("could_be") if isinstance(body.get("could_be"), list) else []
                could_be = [name[:40] for name in could_be[:MAX_MATERIALS] if isinstance(name, str)]
                masses = body.get("mass_as_g") if isinstance(body.get("mass_as_g"), dict) else {}
                view["bodies"].append({"mass_g": _number(body.get("mass_g")), "nearest": _text(body.get("nearest")),
                                       "d_prime": _number(body.get("d_prime")),
                                       "mass_material": _text(body.get("mass_material")),
                                       "twins": [t[:40] for t in twins[:6] if isinstance(t, str)],
                                       "could_be": could_be,
                                       "mass_as_g": {name: grams for name in could_be
                                                     if (grams := _number(masses.get(name))) is not None},
                                       "opaque_share": _number(body.get("opaque_share")),
                                       "mass_lower_bound": body.get("mass_lower_bound") is True})
        view["xray_mass_kg"] = _number(observed.get("xray_mass_kg"))
        # why nothing was weighed (a scan not analysed: its "no body" is no observation, and is not to read as one)
        view["weighed_note"] = _text(observed.get("note"))
        view["xray_mass_lower_bound"] = observed.get("xray_mass_lower_bound") is True
    masses = verdict.get("powder_mass_g")
    if isinstance(masses, list):
        view["powder_mass_g"] = [m for m in (_number(x) for x in masses[:MAX_SHOWN]) if m is not None]
    if raw is not None:
        declaration = parse_declaration(raw)
        view["declared"] = {
            "item_id": declaration.item_id, "category": declaration.category, "origin": declaration.origin,
            "gross_weight_kg": declaration.gross_weight_kg,
            "items": [{"description": i.description, "hs_code": hs_display(i.hs_code) if i.hs_code else None,
                       "quantity": i.quantity, "net_weight_kg": i.net_weight_kg, "value": i.value}
                      for i in declaration.items[:MAX_SHOWN]]}
        view["problems"] = declaration.problems[:MAX_SHOWN]
    return view
