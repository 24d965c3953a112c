"""Queue queries, decisions, undo and the audit trail: the review app's rules, independent of HTTP.

The model of a decision: every decision is an immutable row; ``current_decisions`` points, per item
and inspector, at the one that counts now. Deciding again replaces your own pointer (the audit row
says what it replaced); undo pops your own most recent not-yet-undone decision and restores what it
replaced. Two inspectors never overwrite each other: both pointers stay, and differing decisions
make the item a *conflict*.

The SQL here is the portable subset both back ends run unchanged (``db.translate`` only swaps placeholder
styles): no boolean arithmetic (``SUM(a = b)``), no SQLite-only functions; a boolean comes back as 0/1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from parcelscan.errors import ParcelscanError
from parcelscan.inference.review import DECISIONS
from parcelscan.inference.review.db import Connection, Row, transaction, utc_now
from parcelscan.inference.review.declaration_view import RAISED_PATTERN, SORTS
from parcelscan.inference.verdict import REASON_CLASSES

STATES = ("undecided", "mine_pending", "decided", "seizure", "false_alarm", "unsure", "conflict", "all")
VERDICT_FILTERS = ("suspect", "manual_inspection")
MAX_TEXT = {"material": 120, "scenario": 120, "notes": 4000}


@dataclass
class QueueFilter:
    """What the inspector chose to look at. Unknown values are refused, never silently widened."""

    station: str | None = None
    date_from: str | None = None  # YYYY-MM-DD, inclusive, on scanned_at (UTC)
    date_to: str | None = None
    verdict: str | None = None
    state: str = "undecided"
    sort: str = "score"  # or "declaration": items whose declaration check raised priority first (declaration_view)

    def __post_init__(self) -> None:
        self.station = self.station or None
        self.verdict = self.verdict or None
        self.date_from = self.date_from or None
        self.date_to = self.date_to or None
        self.state = self.state or "undecided"
        self.sort = self.sort or "score"
        if self.sort not in SORTS:
            raise ParcelscanError(f"unknown sort {self.sort!r}; one of {', '.join(SORTS)}")
        if self.state not in STATES:
            raise ParcelscanError(f"unknown decision state {self.state!r}; one of {', '.join(STATES)}")
        if self.verdict not in (None, *VERDICT_FILTERS):
            raise ParcelscanError(f"unknown verdict {self.verdict!r}")
        for value in (self.date_from, self.date_to):
            if value is not None and not _is_date(value):
                raise ParcelscanError(f"dates are YYYY-MM-DD, got {value!r}")

    def query_params(self) -> dict[str, str]:
        params = {"station": self.station, "date_from": self.date_from, "date_to": self.date_to,
                  "verdict": self.verdict, "state": self.state, "sort": None if self.sort == "score" else self.sort}
        return {k: v for k, v in params.items() if v}


def _is_date(text: str) -> bool:
    from datetime import date

    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


_STATE_SQL = """
WITH st AS (
    SELECT cd.item_id, COUNT(*) AS n, COUNT(DISTINCT d.decision) AS kinds, MIN(d.decision) AS decision,
           SUM(CASE WHEN cd.user_id = :me THEN 1 ELSE 0 END) AS mine
    FROM current_decisions cd JOIN decisions d ON d.id = cd.decision_id
    GROUP BY cd.item_id
)
SELECT i.id, i.scan_id, i.verdict, i.score, i.threshold, i.model_name, i.model_version, i.station,
       i.scanned_at, i.scan_error, CASE WHEN i.heatmap_path IS NULL THEN 0 ELSE 1 END AS has_heatmap,
       COALESCE(st.n, 0) AS n_decisions, COALESCE(st.mine, 0) AS mine,
       CASE WHEN st.n IS NULL THEN 'undecided' WHEN st.kinds > 1 THEN 'conflict' ELSE st.decision END AS state
FROM items i LEFT JOIN st ON st.item_id = i.id
"""
# Unscored items (a scan the model could not read, sent to manual inspection) come first: unknown risk
# is treated as the highest.
_ORDER_SQL = " ORDER BY i.score IS NOT NULL, i.score DESC, i.id"


def _where(filters: QueueFilter, include_id: int | None) -> tuple[str, dict[str, Any]]:
    clauses, params = [], {}
    if filters.station:
        clauses.append("i.station = :station")
        params["station"] = filters.station
    if filters.verdict:
        clauses.append("i.verdict = :verdict")
        params["verdict"] = filters.verdict
    if filters.date_from:
        clauses.append("substr(i.scanned_at, 1, 10) >= :date_from")
        params["date_from"] = filters.date_from
    if filters.date_to:
        clauses.append("substr(i.scanned_at, 1, 10) <= :date_to")
        params["date_to"] = filters.date_to
    state_clause = {
        "undecided": "st.n IS NULL",
        "mine_pending": "COALESCE(st.mine, 0) = 0",
        "decided": "st.n IS NOT NULL",
        "conflict": "st.kinds > 1",
        "seizure": "st.kinds = 1 AND st.decision = 'seizure'",
        "false_alarm": "st.kinds = 1 AND st.decision = 'false_alarm'",
        "unsure": "st.kinds = 1 AND st.decision = 'unsure'",
        "all": None,
    }[filters.state]
    if state_clause:
        clauses.append(state_clause)
    if not clauses:
        return "", params
    where = " AND ".join(clauses)
    if include_id is not None:  # keep the current item in the ordering even once it left the filter
        where = f"({where}) OR i.id = :include_id"
        params["include_id"] = include_id
    return " WHERE " + where, params


def queue(conn: Connection, filters: QueueFilter, me: int, limit: int = 500,
          include_id: int | None = None) -> list[dict[str, Any]]:
    where, params = _where(filters, include_id)
    params["me"] = me
    order = _ORDER_SQL
    if filters.sort == "declaration":
        order = " ORDER BY CASE WHEN i.verdict_line LIKE :raised THEN 0 ELSE 1 END," + _ORDER_SQL[len(" ORDER BY"):]
        params["raised"] = RAISED_PATTERN
    sql = _STATE_SQL.replace("SELECT i.id,", "SELECT i.verdict_line, i.id,", 1) + where + order + (
        " LIMIT :limit" if limit else "")
    params["limit"] = limit
    return [_with_why(dict(row)) for row in conn.execute(sql, params)]


def _with_why(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with what flagged it, read from its verdict line (and the line itself dropped): the reason
    classes (``reason_classes``, the station's routing lanes) and the declaration check's status
    (``declaration_status``: consistent, mismatch, absent or None where the station checked none), so the queue
    shows why each parcel is there and where the mismatches sorted first end."""
    try:
        verdict = json.loads(row.pop("verdict_line") or "{}")
    except (json.JSONDecodeError, RecursionError, TypeError):
        verdict = {}
    verdict = verdict if isinstance(verdict, dict) else {}
    classes = verdict.get("reason_classes")
    row["reason_classes"] = [c for c in classes if c in REASON_CLASSES] if isinstance(classes, list) else []
    check = verdict.get("declaration_check")
    status = check.get("status") if isinstance(check, dict) else None
    row["declaration_status"] = status if status in ("consistent", "mismatch", "absent") else None
    return row


def neighbours(conn: Connection, filters: QueueFilter, me: int, item_id: int) -> dict[str, Any]:
    """Position of an item in the filtered queue, and the items before and after it."""
    ids = [row["id"] for row in queue(conn, filters, me, limit=0, include_id=item_id)]
    if item_id not in ids:
        return {"index": None, "total": len(ids), "prev_id": None, "next_id": ids[0] if ids else None}
    k = ids.index(item_id)
    return {"index": k + 1, "total": len(ids), "prev_id": ids[k - 1] if k > 0 else None,
            "next_id": ids[k + 1] if k + 1 < len(ids) else None}


def counts(conn: Connection, me: int) -> dict[str, int]:
    """The queue's counts. A test image (``review.tip``) once decided is no parcel: it leaves the statistics
    (seizures, false alarms, …); undecided, it counts as any item, or the count would give it away."""
    decided_tests = {int(r[0]) for r in conn.execute(
        "SELECT t.item_id FROM tip_projections t WHERE t.item_id IN (SELECT item_id FROM current_decisions)")}
    rows = [row for row in conn.execute(_STATE_SQL, {"me": me}).fetchall() if int(row["id"]) not in decided_tests]
    out = {state: 0 for state in ("undecided", "seizure", "false_alarm", "unsure", "conflict")}
    for row in rows:
        out[row["state"]] += 1
    out["total"] = len(rows)
    out["mine"] = sum(1 for row in rows if row["mine"])
    return out


def stations(conn: Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT station FROM items WHERE station IS NOT NULL ORDER BY 1")]


def get_item(conn: Connection, item_id: int) -> Row | None:
    return conn.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()


def item_decisions(conn: Connection, item_id: int) -> list[dict[str, Any]]:
    """The decisions that count now, one per inspector, oldest first."""
    rows = conn.execute(
        """SELECT d.id, d.decision, d.material, d.scenario, d.notes, d.created_at, u.name AS user, u.id AS user_id
           FROM current_decisions cd JOIN decisions d ON d.id = cd.decision_id JOIN users u ON u.id = cd.user_id
           WHERE cd.item_id = ? ORDER BY d.created_at, d.id""", (item_id,))
    return [dict(row) for row in rows]


def item_history(conn: Connection, item_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        """SELECT a.id, a.at, a.user_name AS user, a.action, a.decision_id, a.replaced_decision_id,
                  a.undoes_audit_id, d.decision, r.decision AS replaced_decision
           FROM audit a LEFT JOIN decisions d ON d.id = a.decision_id
                        LEFT JOIN decisions r ON r.id = a.replaced_decision_id
           WHERE a.item_id = ? ORDER BY a.id""", (item_id,))
    return [dict(row) for row in rows]


def state_of(decisions: list[dict[str, Any]]) -> str:
    kinds = {d["decision"] for d in decisions}
    if not kinds:
        return "undecided"
    return kinds.pop() if len(kinds) == 1 else "conflict"


def audit(conn: Connection, user_id: int | None, user_name: str, action: str, *, item_id: int | None = None,
          decision_id: int | None = None, replaced_decision_id: int | None = None,
          undoes_audit_id: int | None = None, ip: str | None = None, detail: dict[str, Any] | None = None) -> int:
    cursor = conn.execute(
        """INSERT INTO audit (at, user_id, user_name, action, item_id, decision_id, replaced_decision_id,
                              undoes_audit_id, ip, detail) VALUES (?,?,?,?,?,?,?,?,?,?)""",
        (utc_now(), user_id, user_name, action, item_id, decision_id, replaced_decision_id, undoes_audit_id, ip,
         json.dumps(detail or {}, sort_keys=True)))
    return int(cursor.lastrowid)


def _clean_text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParcelscanError(f"{name} must be text")
    value = value.strip()
    if len(value) > MAX_TEXT[name]:
        raise ParcelscanError(f"{name} is longer than {MAX_TEXT[name]} characters")
    return value or None


def decide(conn: Connection, item_id: int, user_id: int, user_name: str, decision: str, *,
           material: str | None = None, scenario: str | None = None, notes: str | None = None,
           ip: str | None = None, mark: tuple[int, int] | list[int] | None = None) -> dict[str, Any]:
    """Record one inspector's decision on one item; committed (durably) when this returns. ``mark``: where
    the inspector marked the concealment (scan pixel row, col), kept with the decision."""
    if mark is not None:
        if (not isinstance(mark, (list, tuple)) or len(mark) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in mark)):
            raise ParcelscanError("mark must be [row, col] in scan pixels")
        mark = (int(mark[0]), int(mark[1]))
    if decision not in DECISIONS:
        raise ParcelscanError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    material = _clean_text("material", material)
    scenario = _clean_text("scenario", scenario)
    notes = _clean_text("notes", notes)
    if decision != "seizure":  # material and scenario describe a seizure; keep them off other decisions
        material = scenario = None
    with transaction(conn):
        item = get_item(conn, item_id)
        if item is None:
            raise LookupError(item_id)
        inside = mark is None or (0 <= mark[0] < (item["scan_rows"] or 0) and 0 <= mark[1] < (item["scan_cols"] or 0))
        if not inside:
            raise ParcelscanError(f"mark {list(mark)} lies outside the scan")
        now = utc_now()
        decision_id = int(conn.execute(
            "INSERT INTO decisions (item_id, user_id, decision, material, scenario, notes, created_at) "
            "VALUES (?,?,?,?,?,?,?)", (item_id, user_id, decision, material, scenario, notes, now)).lastrowid)
        if mark is not None:
            conn.execute("INSERT INTO marks (decision_id, item_id, user_id, row, col) VALUES (?,?,?,?,?)",
                         (decision_id, item_id, user_id, mark[0], mark[1]))
        previous = conn.execute("SELECT decision_id FROM current_decisions WHERE item_id = ? AND user_id = ?",
                                (item_id, user_id)).fetchone()
        replaced = previous["decision_id"] if previous else None
        conn.execute("INSERT INTO current_decisions (item_id, user_id, decision_id) VALUES (?,?,?) "
                     "ON CONFLICT (item_id, user_id) DO UPDATE SET decision_id = excluded.decision_id",
                     (item_id, user_id, decision_id))
        audit_id = audit(conn, user_id, user_name, "decide", item_id=item_id, decision_id=decision_id,
                         replaced_decision_id=replaced, ip=ip,
                         detail={"decision": decision, "material": material, "scenario": scenario, "notes": notes,
                                 "mark": list(mark) if mark else None})
        current = item_decisions(conn, item_id)
    return {"decision_id": decision_id, "audit_id": audit_id, "replaced_decision_id": replaced,
            "created_at": now, "state": state_of(current), "decisions": current}


def undo(conn: Connection, user_id: int, user_name: str, ip: str | None = None) -> dict[str, Any] | None:
    """Undo this inspector's most recent decision that is not undone yet; None when there is none."""
    with transaction(conn):
        last = conn.execute(
            """SELECT a.id, a.item_id, a.decision_id, a.replaced_decision_id FROM audit a
               WHERE a.user_id = ? AND a.action = 'decide'
                 AND NOT EXISTS (SELECT 1 FROM audit u WHERE u.action = 'undo' AND u.undoes_audit_id = a.id)
               ORDER BY a.id DESC LIMIT 1""", (user_id,)).fetchone()
        if last is None:
            return None
        item_id, replaced = last["item_id"], last["replaced_decision_id"]
        if replaced is None:
            conn.execute("DELETE FROM current_decisions WHERE item_id = ? AND user_id = ?", (item_id, user_id))
        else:
            conn.execute("UPDATE current_decisions SET decision_id = ? WHERE item_id = ? AND user_id = ?",
                         (replaced, item_id, user_id))
        undone = conn.execute("SELECT decision FROM decisions WHERE id = ?", (last["decision_id"],)).fetchone()
        restored = (conn.execute("SELECT decision FROM decisions WHERE id = ?", (replaced,)).fetchone()
                    if replaced is not None else None)
        # as for every audit row: decision_id is what counts after the action, replaced_decision_id before it
        audit_id = audit(conn, user_id, user_name, "undo", item_id=item_id, decision_id=replaced,
                         replaced_decision_id=last["decision_id"], undoes_audit_id=last["id"], ip=ip,
                         detail={"undone": undone["decision"], "restored": restored["decision"] if restored else None})
        current = item_decisions(conn, item_id)
    return {"item_id": item_id, "audit_id": audit_id, "undone_decision_id": last["decision_id"],
            "undone": undone["decision"], "restored": restored["decision"] if restored else None,
            "state": state_of(current), "decisions": current}
