"""The customs declaration a scan may carry: the UPU S10 item id and the CN22/CN23 electronic advance data.

Contract (sidecar keys, and one JSON line / CSV row of ``inspect --declarations FILE``):

* ``item_id``: the parcel's UPU S10 identifier, e.g. ``RR123456785CN`` — two letters (service indicator), an
  8-digit serial, a check digit (weights 8 6 4 2 3 5 9 7; 11 − sum mod 11, 10 → 0, 11 → 5), a two-letter
  ISO 3166 country code of the posting operator. ``s10_valid`` checks all of it.
* ``declaration``: ``{"item_id", "category", "items": [{"description", "hs_code", "quantity", "net_weight_kg",
  "value"}], "currency", "gross_weight_kg", "origin"}``. ``category`` is one of ``CATEGORIES`` (the boxes of the
  CN23 form); ``hs_code`` six digits, written ``8487.90`` or ``848790``; ``origin`` a two-letter country code.

``parse_declaration`` reads whatever arrives (sidecars and advance-data files are written by other systems,
and a sender controls every word of it) and never raises: it returns the fields it could read and a list of
problems in words. Strings are cut at ``MAX_TEXT`` characters, lists at ``MAX_ITEMS``; weights outside
(0, ``MAX_GROSS_KG``] are problems (a postal parcel weighs at most 31.5 kg under the UPU Convention; 100 kg
leaves room for express freight). A problem never makes a scan clear: the station reports it and treats the
declaration as not matching what it sees (``inference.declaration``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

CATEGORIES = ("gift", "documents", "commercial_sample", "returned_goods", "sale_of_goods", "other")
MAX_TEXT = 120  # characters kept of any string (a description on a CN23 line is far shorter)
MAX_ITEMS = 50
MAX_GROSS_KG = 100.0
MAX_VALUE = 1e7
_S10 = re.compile(r"^[A-Z]{2}[0-9]{9}[A-Z]{2}$")
_S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)
_HS = re.compile(r"^([0-9]{4})\.?([0-9]{2})$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


def s10_check_digit(serial: str) -> int:
    """The S10 check digit of an 8-digit serial number."""
    if len(serial) != 8 or not serial.isdigit():
        raise ValueError(f"an S10 serial has 8 digits, got {serial!r}")
    remainder = 11 - sum(int(d) * w for d, w in zip(serial, _S10_WEIGHTS, strict=True)) % 11
    return {10: 0, 11: 5}.get(remainder, remainder)


def make_s10(service: str, serial: int, country: str) -> str:
    """An S10 identifier from its parts (``make_s10("RR", 12345678, "CN")`` → ``RR123456785CN``)."""
    digits = f"{serial:08d}"
    return f"{service}{digits}{s10_check_digit(digits)}{country}"


def s10_valid(text: Any) -> bool:
    """True for a well-formed S10 identifier with the right check digit."""
    if not isinstance(text, str) or not _S10.match(text):
        return False
    return int(text[10]) == s10_check_digit(text[2:10])


def hs_code(text: Any) -> str | None:
    """The six digits of an HS code written ``8487.90``, ``848790`` (or as the number 848790); else None."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int) and 0 <= text <= 999999:
        text = f"{text:06d}"
    if not isinstance(text, str):
        return None
    match = _HS.match(text.strip())
    return match.group(1) + match.group(2) if match else None


def hs_display(code: str) -> str:
    return f"{code[:4]}.{code[4:]}"


@dataclass
class DeclaredItem:
    description: str
    hs_code: str | None  # six digits, or None when missing or malformed
    quantity: int | None
    net_weight_kg: float | None
    value: float | None


@dataclass
class Declaration:
    """What could be read of a declaration; ``problems`` says what could not, in words."""

    item_id: str | None
    category: str | None
    items: list[DeclaredItem]
    gross_weight_kg: float | None
    origin: str | None
    currency: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def net_weight_kg(self) -> float | None:
        weights = [i.net_weight_kg for i in self.items if i.net_weight_kg is not None]
        return sum(weights) if weights else None

    def summary(self) -> str:
        """One line for reasons: the declared words, codes and weights."""
        parts = []
        for item in self.items[:4]:
            code = f" (HS {hs_display(item.hs_code)})" if item.hs_code else ""
            weight = f", {item.net_weight_kg:g} kg" if item.net_weight_kg is not None else ""
            parts.append(f"'{item.description}'{code}{weight}")
        more = f" and {len(self.items) - 4} more" if len(self.items) > 4 else ""
        gross = f"; gross {self.gross_weight_kg:g} kg" if self.gross_weight_kg is not None else ""
        return "declared " + (", ".join(parts) or "no items") + more + gross


def _text(value: Any, what: str, problems: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"{what} is not text ({type(value).__name__})")
        return None
    value = "".join(ch if ch.isprintable() else " " for ch in value).strip()
    if len(value) > MAX_TEXT:
        problems.append(f"{what} is {len(value)} characters long (cut at {MAX_TEXT})")
        value = value[:MAX_TEXT]
    return value


def _number(value: Any, what: str, problems: list[str], low: float, high: float, unit: str = "") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{what} is not a number ({type(value).__name__})")
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer beyond any float
        value = math.inf
    if not math.isfinite(value) or not low < value <= high:
        problems.append(f"{what} {value:g}{unit} is outside the plausible range ({low:g}, {high:g}]{unit}")
        return None
    return value


def parse_declaration(data: Any) -> Declaration:
    """A declaration from any JSON value; never raises. What cannot be read is a problem, in words."""
    problems: list[str] = []
    if not isinstance(data, dict):
        return Declaration(None, None, [], None, None, problems=[f"the declaration is not an object "
                                                                   f"({type(data).__name__})"])
    item_id = _text(data.get("item_id"), "item_id", problems)
    if item_id is not None and not s10_valid(item_id):
        problems.append(f"item_id {item_id[:20]!r} is not a valid S10 identifier")
    category = _text(data.get("category"), "category", problems)
    if category is not None and category not in CATEGORIES:
        problems.append(f"category {category[:30]!r} is not one of {', '.join(CATEGORIES)}")
        category = None
    origin = _text(data.get("origin"), "origin", problems)
    if origin is not None and not _COUNTRY.match(origin):
        problems.append(f"origin {origin[:20]!r} is not a two-letter country code")
        origin = None
    currency = _text(data.get("currency"), "currency", problems)
    gross = _number(data.get("gross_weight_kg"), "gross weight", problems, 0.0, MAX_GROSS_KG, " kg")
    raw_items = data.get("items")
    items: list[DeclaredItem] = []
    if not isinstance(raw_items, list):
        problems.append("items is not a list" if raw_items is not None else "no items declared")
        raw_items = []
    if len(raw_items) > MAX_ITEMS:
        problems.append(f"{len(raw_items)} items declared (only the first {MAX_ITEMS} read)")
    for n, raw in enumerate(raw_items[:MAX_ITEMS], start=1):
        if not isinstance(raw, dict):
            problems.append(f"item {n} is not an object")
            continue
        description = _text(raw.get("description"), f"item {n} description", problems) or ""
        if not description:
            problems.append(f"item {n} has no description")
        code = hs_code(raw.get("hs_code"))
        if code is None and raw.get("hs_code") is not None:
            problems.append(f"item {n} HS code {str(raw.get('hs_code'))[:20]!r} is not six digits")
        quantity = _number(raw.get("quantity"), f"item {n} quantity", problems, 0.0, 1e5)
        net = _number(raw.get("net_weight_kg"), f"item {n} net weight", problems, 0.0, MAX_GROSS_KG, " kg")
        value = _number(raw.get("value"), f"item {n} value", problems, -1e-9, MAX_VALUE)
        items.append(DeclaredItem(description, code, None if quantity is None else int(quantity), net, value))
    if gross is not None and items:
        net_total = sum(i.net_weight_kg or 0.0 for i in items)
        if net_total > gross * 1.05 + 0.05:
            problems.append(f"the items' net weights ({net_total:g} kg) exceed the gross weight ({gross:g} kg)")
    return Declaration(item_id, category, items, gross, origin, currency, problems)
