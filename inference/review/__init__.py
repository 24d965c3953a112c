"""The inspector review app: a queue of flagged scans, one-key decisions, an append-only audit trail.

``parcelscan review ingest`` reads verdict lines (see README "Verdict") into a SQLite database,
``parcelscan review serve`` serves the queue to logged-in inspectors, ``parcelscan review export``
turns their decisions into a manifest dataset for ``parcelscan data check`` and ``retrain``.

Modules: ``db`` (schema, migrations, transactions), ``auth`` (argon2 passwords, sessions, CSRF,
login rate limiting), ``ingest``, ``images`` (what an inspector looks at), ``app`` (the FastAPI
application: security guard and headers) with its routes by concern in ``routes_login``, ``routes_pages``,
``routes_api`` and ``routes_files`` (shared request plumbing in ``web``), ``export``, ``sample``
(simulated scans and verdict lines for tests and the demo).

``DECISIONS`` is the one definition of what an inspector can decide: the review page renders its buttons,
keys and keyboard help from it and ``review.js`` binds the keys it finds on those buttons, so a key or a
label is changed here and nowhere else. A decision's *name* is also stored in the database (the
``decisions`` table checks it): renaming or adding one needs a schema migration in ``db``.
"""

from __future__ import annotations

from dataclasses import dataclass

from parcelscan.errors import ParcelscanError


@dataclass(frozen=True)
class Decision:
    name: str  # stored in the database; export maps seizure → suspect, false_alarm → clear
    key: str  # the one lower-case key that makes this decision on the review page
    label: str  # what the button, the status bar and the decision list show
    help: str  # the keyboard help's line


DECISIONS: dict[str, Decision] = {d.name: d for d in (
    Decision("seizure", "s", "Seizure", "seizure confirmed (material and scenario from the fields), next item"),
    Decision("false_alarm", "f", "False alarm", "false alarm, next item"),
    Decision("unsure", "u", "Unsure", "unsure / escalate, next item"),
)}
# Keys review.js binds to other actions (undo, heatmap, navigation, fields, views, queue, help).
PAGE_KEYS = frozenset("zhjkmcnq1234?")
FLAGGED_VERDICTS = ("suspect", "manual_inspection")


def check_decision_keys(decisions: dict[str, Decision] = DECISIONS) -> None:
    """One distinct letter per decision, none taken by another action of the page (else a key would
    silently do two things, or nothing)."""
    seen: dict[str, str] = {}
    for name, decision in decisions.items():
        key = decision.key
        if name != decision.name:
            raise ParcelscanError(f"DECISIONS[{name!r}] is named {decision.name!r}")
        if len(key) != 1 or not key.isalpha() or key != key.lower():
            raise ParcelscanError(f"decision {name!r}: key {key!r} is not one lower-case letter")
        if key in PAGE_KEYS:
            raise ParcelscanError(f"decision {name!r}: key {key!r} is already another action of the review page")
        if key in seen:
            raise ParcelscanError(f"decisions {seen[key]!r} and {name!r} share the key {key!r}")
        seen[key] = name
