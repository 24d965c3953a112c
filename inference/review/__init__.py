"""The inspector review app: a queue of flagged scans, one-key decisions, an append-only audit trail.

``parcelscan review ingest`` reads verdict lines (see README "Verdict") into a SQLite database,
``parcelscan review serve`` serves the queue to logged-in inspectors, ``parcelscan review export``
turns their decisions into a manifest dataset for ``parcelscan data check`` and ``retrain``.

Modules: ``db`` (schema, migrations, transactions), ``auth`` (argon2 passwords, sessions, CSRF,
login rate limiting), ``ingest``, ``images`` (what an inspector looks at), ``app`` (the FastAPI
application: security guard and headers) with its routes by concern in ``routes_login``, ``routes_pages``,
``routes_api`` and ``routes_files`` (shared request plumbing in ``web``), ``export``, ``sample``
(simulated scans and verdict lines for tests and the demo).
"""

DECISIONS = {"seizure": "S", "false_alarm": "F", "unsure": "U"}
FLAGGED_VERDICTS = ("suspect", "manual_inspection")
