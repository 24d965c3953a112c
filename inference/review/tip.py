"""Threat image projection (TIP) in the review queue: test images that keep inspectors sharp and measure them.

At ingest (``parcelscan review ingest --tip-library DIR``), for each real flagged scan of a queue (a
station) a projection is made with the probability a supervisor set for that queue (``tip_rates``):

1. a **background** from the same station's own traffic: an item inspectors cleared (every current
   decision ``false_alarm``), readable, dual-energy, never a projection itself, and never used before
   (``tip_projections.background_item_id`` is unique: each background is used once);
2. a **threat** from the TIP library the simulator made (``datasets.simulator.projection.make_library``),
   composed into it in the forward model (``projection.project``: basis-material decomposition, beam
   hardening, Poisson noise at the scan's own measured dose and blur), at a place over the parcel;
3. the composite is written as station files with a new scan id of the station's own pattern and its
   sidecar's scan time next to the real scan that triggered it and its own S10 item identifier (the
   background's declaration travels with it, as a parcel's label does: in the sidecar, or entered under the new
   identifier in the inspector's copy of the station's advance data), and **the real inspector** (the shipped
   model, ``inference.inspector.Inspector``, with the declaration check when the station's verdicts carry one)
   inspects it: its own score, heatmap, reasons and declaration check — only where the batch was judged by the
   same model at the same threshold (``TipContext.judges_like``) and its declarations read where the station read
   them (``reads_advance_data_like``), else no test image is made. Flagged, it
   is ingested by the same code as every verdict line, in the same transaction, at a random place among
   the batch's rows; cleared by the model, it is recorded as a **model miss** and never shown.

Nothing an inspector can see tells a projection before the decision: the item row, API answer, page,
images, file names and declaration panel are made by the same code as a real one's
(``tests/test_review_tip.py`` checks the JSON keys, the HTML, the id order, the image sizes, the declaration's
presence). After the inspector's decision the API reveals it to that inspector (``reveal``): "test image: Dy2O3
mail pouch, 42 g", where it was, and whether it was a hit: a seizure decision *with a mark* (``marks``) inside
the threat (within ``HIT_TOLERANCE_MM``).

Projections never reach exports, retraining data or the seizure statistics: ``export`` skips them and
``store.counts`` leaves decided ones out. Supervisors (``roles``; every check is server-side) set the rate
per queue and see, per inspector, the hit rate and false-alarm rate with Wilson 95 % intervals, the time
per item and the weekly trend (``inspector_stats``).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from parcelscan.datasets.scans.colour import profile_for
from parcelscan.datasets.scans.customs import make_s10, s10_valid
from parcelscan.datasets.scans.scanfile import Scan, write_station_scan
from parcelscan.datasets.simulator.projection import ThreatImage, choose_position, project, read_library
from parcelscan.errors import ParcelscanError, ScanReadError
from parcelscan.inference.declaration import attach_declaration_check
from parcelscan.inference.inspector import Inspector
from parcelscan.inference.policy import load_policy
from parcelscan.inference.review.db import Connection
from parcelscan.inference.review.images import ImageUnavailable, load_item_scan
from parcelscan.inference.verdict import inputs_digest, utc_now

SUPERVISOR = "supervisor"
MAX_RATE = 0.5
HIT_TOLERANCE_MM = 15.0
WILSON_Z = 1.959964
MAX_ITEM_SECONDS = 600.0  # a gap longer than this between two decisions is a break, not time on the item


# --- roles and rates ----------------------------------------------------------------------------------------
def is_supervisor(conn: Connection, user_id: int) -> bool:
    row = conn.execute("SELECT role FROM roles WHERE user_id = ?", (user_id,)).fetchone()
    return row is not None and row["role"] == SUPERVISOR


def grant_supervisor(conn: Connection, user_id: int) -> None:
    conn.execute("INSERT OR IGNORE INTO roles (user_id, role, granted_at) VALUES (?, ?, ?)",
                 (user_id, SUPERVISOR, utc_now()))


def set_rate(conn: Connection, station: str, rate: float, user_id: int | None) -> None:
    """A supervisor's TIP rate for a queue (``*``: every queue without its own)."""
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= float(rate) <= MAX_RATE:
        raise ParcelscanError(f"a TIP rate is a share between 0 and {MAX_RATE}, got {rate!r}")
    if not isinstance(station, str) or not station.strip() or len(station) > 120:
        raise ParcelscanError("a TIP rate needs a queue (a station name, or * for every queue)")
    conn.execute("INSERT INTO tip_rates (station, rate, set_by, set_at) VALUES (?, ?, ?, ?)",
                 (station.strip(), float(rate), user_id, utc_now()))


def rate_of(conn: Connection, station: str | None) -> float:
    for key in (station, "*"):
        if key is None:
            continue
        row = conn.execute("SELECT rate FROM tip_rates WHERE station = ? ORDER BY id DESC LIMIT 1", (key,)).fetchone()
        if row is not None:
            return float(row["rate"])
    return 0.0


def rates(conn: Connection) -> dict[str, float]:
    rows = conn.execute("SELECT station, rate FROM tip_rates ORDER BY id").fetchall()
    return {row["station"]: float(row["rate"]) for row in rows}


# --- masks --------------------------------------------------------------------------------------------------
def encode_mask(mask: np.ndarray) -> str:
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    bits = np.packbits(mask[r0:r1, c0:c1].astype(np.uint8), axis=None)
    return json.dumps({"box": [r0, c0, r1 - r0, c1 - c0], "bits": base64.b64encode(bits.tobytes()).decode()})


def decode_mask(text: str, shape: tuple[int, int]) -> np.ndarray:
    data = json.loads(text)
    r0, c0, h, w = data["box"]
    bits = np.unpackbits(np.frombuffer(base64.b64decode(data["bits"]), np.uint8))[:h * w]
    mask = np.zeros(shape, bool)
    mask[r0:r0 + h, c0:c0 + w] = bits.reshape(h, w).astype(bool)
    return mask


# --- making projections -------------------------------------------------------------------------------------
@dataclass
class TipContext:
    """What ingest needs to make projections: the library, where composites go, the real inspector."""

    library_dir: Path
    out_dir: Path
    inspector: Any  # inference.inspector.Inspector (with heatmap_dir when the station writes heatmaps)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    threats: list[dict] = field(default_factory=list)
    # the inspector's declaration check (``attach_declaration_check``'s return), None when it runs none: a
    # composite's new item id is entered in its advance data under the background's declaration
    declarations: Any = None
    other_judge: int = 0  # test images not made: their batch was judged by another model or threshold
    no_advance_data: int = 0  # nor: the batch was checked against advance data this inspector was not given

    def __post_init__(self) -> None:
        self.library_dir, self.out_dir = Path(self.library_dir), Path(self.out_dir)
        try:
            self.threats = read_library(self.library_dir)
        except OSError as error:
            raise ParcelscanError(f"TIP library {self.library_dir}: {error.strerror or error}") from error
        if not self.threats:
            raise ParcelscanError(f"TIP library {self.library_dir} is empty")

    def projections(self, conn: Connection, prepared: list[dict[str, Any]],
                    prepare: Callable[[dict[str, Any], list[Path]], dict[str, Any]],
                    batch_ids: set[str] = frozenset()) -> list[tuple[Projection, Any]]:
        """Test images for an ingest batch: per new real item, one with its queue's TIP rate; each with its
        item row (made by ingest's own ``prepare``) when the model flagged it, else None (a model miss).
        ``batch_ids``: every scan id of the verdict file, cleared ones included (they took numbers too)."""
        made: list[tuple[Projection, Any]] = []
        used: set[int] = set()
        # the batch's own ids count as taken: a test image numbered after the station's last *stored* scan
        # would sit out of sequence with the batch it arrives in (sim31-000075 among 000286…000592)
        taken: set[str] = {str(row["scan_id"]) for row in prepared} | set(batch_ids)
        for row in prepared:
            known = conn.execute("SELECT 1 FROM items WHERE scan_id = ? AND model_sha256 = ? AND inputs_sha256 = ?",
                                 (row["scan_id"], row["model_sha256"], row["inputs_sha256"])).fetchone()
            rate = rate_of(conn, row["station"])
            if known is not None or rate <= 0 or self.rng.random() >= rate:
                continue
            trigger = {**row, **json.loads(row["verdict_line"])}
            if not self.judges_like(trigger):
                self.other_judge += 1
                continue
            if not self.reads_advance_data_like(trigger):
                self.no_advance_data += 1
                continue
            projection = make_projection(conn, self, trigger, used, taken)
            if projection is None:
                continue
            used.add(projection.background_item_id)
            taken.add(projection.provenance["scan_id"])
            item_row = None
            if projection.flagged:
                item_row = prepare(projection.verdict, [Path(p) for p in projection.verdict.get("inputs", [])])
            made.append((projection, item_row))
        return made

    def judges_like(self, verdict: dict[str, Any]) -> bool:
        """Is this inspector the judge of ``verdict``: the same model (sha256) at the same threshold? The page
        shows both; a test image scored by another model, or at the shipped threshold on a station that set its
        own (``parcelscan calibrate``), would tell itself — such a batch gets no test image."""
        model = verdict.get("model") if isinstance(verdict.get("model"), dict) else {}
        threshold = verdict.get("threshold")
        return (model.get("sha256") == self.inspector.model_info.get("sha256")
                and isinstance(threshold, (int, float)) and abs(float(threshold) - self.inspector.threshold) < 1e-9)

    def reads_advance_data_like(self, verdict: dict[str, Any]) -> bool:
        """Does this inspector read declarations where the station did? A station that checks advance data
        (``inspect --declarations FILE``) shows most parcels declared; a test image checked without that file would
        read "no declaration for this item" every time, and tell itself — such a batch gets no test image."""
        check = verdict.get("declaration_check")
        source = check.get("source") if isinstance(check, dict) else None
        if source in (None, "sidecar"):
            return True
        return self.declarations is not None and getattr(self.declarations, "source", None) is not None

    @staticmethod
    def record(conn: Connection, projection: Projection, item_id: int | None) -> None:
        record(conn, projection, item_id)


def station_context(library_dir: Path, out_dir: Path, model_path: Path | None = None,
                    policy_path: Path | None = None, declarations_path: Path | None = None) -> TipContext:
    """The context ``review ingest --tip-library`` uses: the model, station policy and advance data (``inspect
    --declarations``) the station's ``inspect`` runs (default: the shipped model and policy, no advance data) with the
    policy's declaration check, heatmaps beside the composites."""
    policy = load_policy(policy_path)
    inspector = Inspector(model_path, heatmap_dir=Path(out_dir) / "heatmaps", policy=policy)
    declarations = None
    if inspector.policy.alarms_on("declaration"):
        declarations = attach_declaration_check(inspector, declarations_path)
    elif declarations_path:
        raise ParcelscanError(f"--declarations: the policy {policy.path} leaves the declaration class out of "
                              "alarm.reasons, so no declaration is checked")
    return TipContext(Path(library_dir), Path(out_dir), inspector, declarations=declarations)


def cleared_backgrounds(conn: Connection, station: str | None, exclude: set[int] = frozenset()) -> list[Any]:
    """Items of ``station`` every current decision cleared (false alarm), usable and never used."""
    rows = conn.execute(
        """SELECT i.* FROM items i
           WHERE (i.station = :station OR (i.station IS NULL AND :station IS NULL))
             AND i.scan_error IS NULL AND i.scan_kind = 'dual_energy'
             AND EXISTS (SELECT 1 FROM current_decisions cd WHERE cd.item_id = i.id)
             AND NOT EXISTS (SELECT 1 FROM current_decisions cd JOIN decisions d ON d.id = cd.decision_id
                             WHERE cd.item_id = i.id AND d.decision <> 'false_alarm')
             AND NOT EXISTS (SELECT 1 FROM tip_projections t WHERE t.item_id = i.id OR t.background_item_id = i.id)
           ORDER BY i.id""", {"station": station}).fetchall()
    return [row for row in rows if int(row["id"]) not in exclude]


_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


def new_scan_id(conn: Connection, station: str | None, like: str, taken: set[str] = frozenset()) -> str:
    """A scan id of the station's own pattern (prefix + zero-padded number) that no item has: the next
    number after the station's highest, as the scanner's own counter would give."""
    match = _TRAILING_NUMBER.match(like)
    ids = {row[0] for row in conn.execute(
        "SELECT scan_id FROM items WHERE station = :station OR (station IS NULL AND :station IS NULL)",
        {"station": station})} | set(taken)
    if match is None:
        prefix, width, number = like + "-", 4, 1
    else:
        prefix, width = match.group(1), len(match.group(2))
        numbers = [int(m.group(2)) for s in ids if (m := _TRAILING_NUMBER.match(s)) and m.group(1) == prefix]
        number = max(numbers, default=int(match.group(2))) + 1
    candidate = f"{prefix}{number:0{width}d}"
    while candidate in ids:
        number += 1
        candidate = f"{prefix}{number:0{width}d}"
    return candidate


@dataclass
class Projection:
    """A composite made and judged by the model; ``line`` is its verdict line when the model flagged it."""

    background_item_id: int
    station: str | None
    threat: ThreatImage
    mask: np.ndarray
    verdict: dict[str, Any]
    provenance: dict[str, Any]

    @property
    def flagged(self) -> bool:
        return self.verdict["verdict"] in ("suspect", "manual_inspection")


def _new_item_id(item_id: Any, rng: np.random.Generator) -> Any:
    """A fresh UPU S10 identifier of ``item_id``'s service indicator and country, with its check digit: the
    composite is a parcel of its own, and the background's identifier, on a parcel inspectors have seen, would
    tell it. Anything that is not an S10 identifier is kept as it was."""
    if not s10_valid(item_id):
        return item_id
    return make_s10(item_id[:2], int(rng.integers(0, 10**8)), item_id[-2:])


def _check_source(item: Any) -> Any:
    """Where the station read an item's declaration: its verdict line's ``declaration_check.source`` (a file of
    advance data, ``sidecar``, or None: no declaration, or no check)."""
    try:
        check = json.loads(item["verdict_line"]).get("declaration_check")
    except (TypeError, ValueError, AttributeError, KeyError, IndexError):
        return None
    return check.get("source") if isinstance(check, dict) else None


def _declare_in_advance_data(checker: Any, background_source: Any, old_item_id: Any, new_item_id: Any) -> bool:
    """Enter the background's advance-data declaration under the composite's new item id, in the inspector's own
    copy of the advance data (the station's file is never written): the declaration travels with the parcel as a
    sidecar's does, and the composite is checked against it like any parcel of the batch. False when the station
    read the background's declaration from advance data that holds no entry for it here."""
    advance_data = getattr(checker, "advance_data", None)
    if not isinstance(advance_data, dict) or not isinstance(old_item_id, str) or old_item_id not in advance_data:
        return background_source in (None, "sidecar")
    raw = advance_data[old_item_id]
    advance_data[new_item_id] = {**raw, "item_id": new_item_id} if isinstance(raw, dict) else raw
    return True


def _shifted_time(scanned_at: str | None, rng: np.random.Generator) -> str:
    try:
        base = datetime.fromisoformat(str(scanned_at).replace("Z", "+00:00"))
    except ValueError:
        return utc_now()
    moment = base + timedelta(seconds=float(rng.uniform(4.0, 40.0)))
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def make_projection(conn: Connection, ctx: TipContext, trigger: dict[str, Any],
                    used: set[int] = frozenset(), taken_ids: set[str] = frozenset()) -> Projection | None:
    """A projection for the queue of the real verdict row ``trigger`` (None when no background or threat
    fits: nothing is made then, and the queue simply gets no test image this time). ``used``: backgrounds
    and ``taken_ids``: scan ids already given to projections of the same batch."""
    station = trigger.get("station")
    backgrounds = cleared_backgrounds(conn, station, set(used))
    if not backgrounds:
        return None
    background = backgrounds[int(ctx.rng.integers(len(backgrounds)))]
    try:
        scan = load_item_scan(background)
    except (ImageUnavailable, ScanReadError):
        return None
    profile = profile_for(scan)
    for k in ctx.rng.permutation(len(ctx.threats))[:12]:
        entry = ctx.threats[int(k)]
        threat = ThreatImage.load(ctx.library_dir / entry["file"])
        if abs(threat.pitch_mm - profile.pixel_pitch_mm) > 1e-6:
            continue
        position = choose_position(scan.low, scan.high, threat, ctx.rng)
        if position is not None:
            break
    else:
        return None
    composite = project(scan.low, scan.high, threat, position, profile, ctx.rng)
    scan_id = new_scan_id(conn, station, str(trigger["scan_id"]), set(taken_ids))
    scanned_at = _shifted_time(trigger.get("scanned_at"), ctx.rng)
    meta = {k: (scan_id if v == background["scan_id"] else v) for k, v in dict(scan.meta).items()}
    if "scanned_at" in meta:
        meta["scanned_at"] = scanned_at
    if "item_id" in meta:  # its own S10 identifier, in the sidecar and in the declaration the parcel carries
        old_item_id, meta["item_id"] = meta["item_id"], _new_item_id(meta["item_id"], ctx.rng)
        declaration = meta.get("declaration")
        if isinstance(declaration, dict) and declaration.get("item_id") == old_item_id:
            meta["declaration"] = {**declaration, "item_id": meta["item_id"]}
        if not _declare_in_advance_data(ctx.declarations, _check_source(background), old_item_id, meta["item_id"]):
            return None  # declared in advance data this inspector lacks: checked here it would read "absent"
    files = write_station_scan(Scan(scan_id, composite.low, composite.high, meta), ctx.out_dir)
    verdict = ctx.inspector.inspect(ctx.out_dir / files["low"]).to_dict()
    # the declaration check as the station ran it on the batch: a test image carries one exactly when the real
    # verdict does (a "Declaration" panel on real parcels only would tell it); an inspector that runs no check
    # cannot make one for a station that does, and then no test image is made this time
    if trigger.get("declaration_check") is None:
        verdict["declaration_check"] = None
    elif verdict.get("declaration_check") is None:
        return None
    verdict["station"], verdict["scanned_at"] = station, scanned_at
    # name the files the way this station's verdicts do (which parts, in which order): a different file
    # list would tell the test image apart
    suffixes = [Path(p).name.removeprefix(str(trigger["scan_id"])) for p in trigger.get("inputs") or []]
    by_suffix = {Path(p).name.removeprefix(scan_id): p for p in verdict.get("inputs") or []}
    if suffixes and all(s in by_suffix for s in suffixes):
        verdict["inputs"] = [by_suffix[s] for s in suffixes]
        verdict["inputs_sha256"] = inputs_digest(verdict["inputs"])
    if not trigger.get("heatmap") and verdict.get("heatmap"):  # as the real traffic: no heatmap if it has none
        Path(verdict["heatmap"]).unlink(missing_ok=True)
        verdict["heatmap"] = None
    provenance = {**composite.provenance, "background_scan_id": background["scan_id"],
                  "threat_file": entry["file"], "scan_id": scan_id}
    return Projection(int(background["id"]), station, threat, composite.mask, verdict, provenance)


def record(conn: Connection, projection: Projection, item_id: int | None) -> None:
    """The projection's row: queued (its item) or a model miss (no item, never shown)."""
    threat = projection.threat
    conn.execute(
        """INSERT INTO tip_projections (background_item_id, item_id, station, threat, description, target,
               scenario, mass_g, mask, score, verdict, outcome, provenance, created_at)
           VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
        (projection.background_item_id, item_id, projection.station, threat.name, threat.describe(), threat.target,
         threat.scenario, float(threat.mass_g), encode_mask(projection.mask), projection.verdict.get("score"),
         projection.verdict["verdict"], "queued" if item_id is not None else "model_miss",
         json.dumps(projection.provenance, sort_keys=True), utc_now()))


# --- after the decision -------------------------------------------------------------------------------------
def projection_of(conn: Connection, item_id: int) -> Any | None:
    return conn.execute("SELECT * FROM tip_projections WHERE item_id = ?", (item_id,)).fetchone()


def is_hit(decision: str, mark: tuple[int, int] | None, mask: np.ndarray, pitch_mm: float) -> bool:
    """A hit: the seizure decision *and* a mark on the threat (within ``HIT_TOLERANCE_MM`` of it)."""
    if decision != "seizure" or mark is None:
        return False
    row, col = mark
    if not (0 <= row < mask.shape[0] and 0 <= col < mask.shape[1]):
        return False
    radius = max(round(HIT_TOLERANCE_MM / max(pitch_mm, 1e-3)), 1)
    near = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                                        (2 * radius + 1, 2 * radius + 1)))
    return bool(near[row, col])


def _pitch(item: Any) -> float:
    try:
        value = float(json.loads(item["scan_meta"]).get("pixel_pitch_mm") or 1.0)
    except (TypeError, ValueError):
        return 1.0
    return value if math.isfinite(value) and value > 0 else 1.0


def mark_of(conn: Connection, decision_id: int) -> tuple[int, int] | None:
    row = conn.execute("SELECT row, col FROM marks WHERE decision_id = ?", (decision_id,)).fetchone()
    return (int(row["row"]), int(row["col"])) if row is not None else None


def reveal(conn: Connection, item: Any, decision: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the inspector learns after deciding: None for a real parcel (and before any decision)."""
    if decision is None:
        return None
    tip = projection_of(conn, int(item["id"]))
    if tip is None:
        return None
    mask = decode_mask(tip["mask"], (int(item["scan_rows"]), int(item["scan_cols"])))
    mark = mark_of(conn, int(decision["id"]))
    box = json.loads(tip["mask"])["box"]
    hit = is_hit(decision["decision"], mark, mask, _pitch(item))
    if hit:
        outcome = "hit: seizure, marked on the threat"
    elif decision["decision"] == "seizure":
        outcome = "missed: seizure decided, but " + ("no mark" if mark is None else "the mark is not on the threat")
    else:
        outcome = f"missed: decided {decision['decision'].replace('_', ' ')}"
    return {"test_image": True, "text": f"test image: {tip['description']}", "description": tip["description"],
            "box": box, "mark": list(mark) if mark else None, "hit": hit, "outcome": outcome}


# --- scoring ------------------------------------------------------------------------------------------------
def wilson(successes: int, trials: int, z: float = WILSON_Z) -> tuple[float | None, float | None, float | None]:
    """(rate, low, high) with the Wilson score interval; Nones without trials."""
    if trials <= 0:
        return None, None, None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return p, max(0.0, centre - half), min(1.0, centre + half)


def _week(stamp: str) -> str:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def inspector_stats(conn: Connection) -> list[dict[str, Any]]:
    """Per inspector: TIP hit rate and the false-alarm rate (seizure decisions on real, non-TIP items: an
    upper bound, since a real seizure counts too) with Wilson 95 % intervals, the median time per item
    (gap to the inspector's previous decision, breaks over 10 min left out), and the weekly hit trend."""
    rows = conn.execute(
        """SELECT d.id, d.item_id, d.decision, d.created_at, u.id AS user_id, u.name AS user,
                  t.mask, i.scan_rows, i.scan_cols, i.scan_meta,
                  CASE WHEN t.id IS NULL THEN 0 ELSE 1 END AS is_tip
           FROM current_decisions cd JOIN decisions d ON d.id = cd.decision_id JOIN users u ON u.id = cd.user_id
                JOIN items i ON i.id = cd.item_id LEFT JOIN tip_projections t ON t.item_id = i.id
           ORDER BY u.name, d.created_at""").fetchall()
    times: dict[int, list[str]] = {}
    for row in conn.execute("SELECT user_id, created_at FROM decisions ORDER BY user_id, created_at, id"):
        times.setdefault(int(row["user_id"]), []).append(row["created_at"])
    out: dict[int, dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(int(row["user_id"]), {"user": row["user"], "tip": 0, "hits": 0, "real": 0,
                                                      "alarms": 0, "weeks": {}})
        if row["is_tip"]:
            mask = decode_mask(row["mask"], (int(row["scan_rows"]), int(row["scan_cols"])))
            hit = is_hit(row["decision"], mark_of(conn, int(row["id"])), mask, _pitch(row))
            entry["tip"] += 1
            entry["hits"] += hit
            week = entry["weeks"].setdefault(_week(row["created_at"]), [0, 0])
            week[0] += hit
            week[1] += 1
        else:
            entry["real"] += 1
            entry["alarms"] += row["decision"] == "seizure"
    result = []
    for user_id, entry in out.items():
        stamps = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in times.get(user_id, [])]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
        gaps = [g for g in gaps if 0 < g <= MAX_ITEM_SECONDS]
        hit = wilson(entry["hits"], entry["tip"])
        alarm = wilson(entry["alarms"], entry["real"])
        result.append({
            "user": entry["user"], "tip_items": entry["tip"], "hits": entry["hits"],
            "hit_rate": hit[0], "hit_rate_ci95": [hit[1], hit[2]],
            "real_items": entry["real"], "alarms": entry["alarms"],
            "false_alarm_rate": alarm[0], "false_alarm_rate_ci95": [alarm[1], alarm[2]],
            "median_seconds_per_item": float(np.median(gaps)) if gaps else None,
            "trend": [{"week": week, "hits": h, "tip_items": n, "hit_rate": h / n}
                      for week, (h, n) in sorted(entry["weeks"].items())],
        })
    return result


def projection_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute("SELECT outcome, COUNT(*) AS n FROM tip_projections GROUP BY outcome").fetchall()
    counts = {"queued": 0, "model_miss": 0}
    counts.update({row["outcome"]: int(row["n"]) for row in rows})
    return counts
