"""``parcelscan review``: the inspector review app (serve), its queue (ingest), accounts (add-user), export,
and the database schema (migrate).

``--db`` is a SQLite file (one station; the default) or a ``postgresql://user@host:port/dbname`` URL (a
central server for many stations). The password never goes on the command line: a URL with one is
refused, and libpq reads it from ``PGPASSWORD``, ``~/.pgpass`` or the file ``PGPASSFILE`` names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from parcelscan.errors import ParcelscanError

DEFAULT_DB = "review.sqlite"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
DB_HELP = (f"review database: a SQLite file (default {DEFAULT_DB}) or postgresql://user@host:port/dbname "
           "(the password from PGPASSWORD or a .pgpass file, never in the URL)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="review_command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the review web app", description="run the review web app")
    serve.add_argument("--db", default=DEFAULT_DB, help=DB_HELP)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this machine only; anything else needs TLS in front)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--secure-cookies", action="store_true",
                       help="mark cookies Secure (set this behind an HTTPS reverse proxy)")
    serve.add_argument("--session-hours", type=float, default=12.0, help="login lifetime in hours (default 12)")
    serve.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS",
                       help="address or network of the HTTPS reverse proxy (repeatable); X-Forwarded-For is "
                            "believed from it only, so failed logins are counted per real client")

    ingest = sub.add_parser("ingest", help="add flagged scans from inspect results (JSONL) to the queue",
                            description="add flagged scans (suspect, manual_inspection) to the review queue; "
                                        "lines already ingested are ignored")
    ingest.add_argument("results", nargs="+", help="results JSONL file(s) written by `parcelscan inspect`")
    ingest.add_argument("--db", default=DEFAULT_DB, help=DB_HELP + "; a SQLite file is created if missing")
    ingest.add_argument("--tip-library", metavar="DIR",
                        help="threat image projection: add test images at each queue's TIP rate, from this "
                             "library (datasets.simulator.projection.make_library)")
    ingest.add_argument("--tip-scans", metavar="DIR", help="where the test images' scan files go "
                                                          "(default: tip-scans beside the results file)")
    ingest.add_argument("--model", metavar="MODEL.onnx",
                        help="with --tip-library: the model the station's `inspect` runs (default: the shipped "
                             "default); test images are made only for verdicts of this model at its threshold")
    ingest.add_argument("--policy", metavar="FILE",
                        help="with --tip-library: the station policy `inspect` runs (its threshold and "
                             "declaration check; default: the shipped policy)")
    ingest.add_argument("--declarations", metavar="FILE",
                        help="with --tip-library: the advance data the station's `inspect --declarations` reads "
                             "(a test image carries its background's declaration and is checked against it)")

    add_user = sub.add_parser("add-user", help="create an inspector account",
                              description="create an inspector account (password hashed with argon2id)")
    add_user.add_argument("name", help="user name")
    add_user.add_argument("--db", default=DEFAULT_DB, help=DB_HELP + "; a SQLite file is created if missing")
    add_user.add_argument("--password-stdin", action="store_true",
                          help="read the password from the first line of stdin")
    add_user.add_argument("--update", action="store_true", help="set a new password for an existing user")
    add_user.add_argument("--supervisor", action="store_true",
                          help="also a supervisor (sets TIP rates, sees inspectors' scores)")

    export = sub.add_parser("export", help="export decided items as a dataset (manifest.jsonl + scan files)",
                            description="export decided items: seizure → suspect, false alarm → clear; unsure, "
                                        "conflicting and undecided items are left out")
    export.add_argument("--db", default=DEFAULT_DB, help=DB_HELP)
    export.add_argument("--out", required=True, help="output directory (new or empty)")

    migrate = sub.add_parser("migrate", help="bring the database schema up to date (PostgreSQL: as its owner)",
                             description="upgrade the review database's schema to this parcelscan's revision "
                                         "and re-arm the append-only audit triggers. SQLite files are also "
                                         "upgraded when opened; on PostgreSQL run this as the database's owner "
                                         "after each parcelscan upgrade, with --app-role naming the role the "
                                         "review commands connect as")
    migrate.add_argument("--db", default=DEFAULT_DB, help=DB_HELP)
    migrate.add_argument("--app-role", metavar="ROLE",
                         help="PostgreSQL: grant this role what the review commands need and no more (no UPDATE, "
                              "DELETE or TRUNCATE on the audit trail or the decisions)")


def _actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _read_password(args: argparse.Namespace) -> str:
    import getpass

    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            raise ParcelscanError("no password on stdin")
        return password
    if not sys.stdin.isatty():
        raise ParcelscanError("no terminal to prompt for a password: use --password-stdin")
    first = getpass.getpass(f"password for {args.name}: ")
    second = getpass.getpass("repeat the password: ")
    if first != second:
        raise ParcelscanError("the passwords differ")
    return first


def run(args: argparse.Namespace) -> int:
    from parcelscan.inference.review.db import DATABASE_ERRORS, DatabaseUnavailable, parse_target

    parse_target(args.db)  # a URL with a password is refused before anything else happens
    try:
        return _run(args)
    except (*DATABASE_ERRORS, DatabaseUnavailable) as error:
        raise ParcelscanError(f"review database {args.db}: {' '.join(str(error).split())}") from error


def _run(args: argparse.Namespace) -> int:
    command = args.review_command
    if command == "serve":
        return _serve(args)
    from parcelscan.inference.review.db import migrate, opened

    if command == "migrate":
        print(migrate(args.db, app_role=args.app_role, actor=_actor()).summary())
        return 0

    if command == "add-user":
        from parcelscan.inference.review.auth import add_user, check_password, check_user_name

        check_user_name(args.name)
        password = check_password(_read_password(args))
        with opened(args.db, create=True) as conn:
            user_id = add_user(conn, args.name, password, update=args.update, actor=_actor())
            if args.supervisor:
                from parcelscan.inference.review.tip import grant_supervisor

                grant_supervisor(conn, user_id)
        print(f"{'updated' if args.update else 'added'} user {args.name} in {args.db}")
        return 0
    if command == "ingest":
        from parcelscan.inference.review.ingest import ingest

        tip = None
        if (args.model or args.policy or args.declarations) and not args.tip_library:
            raise ParcelscanError("review ingest: --model, --policy and --declarations say how the test images are "
                                  "judged; give them with --tip-library")
        if args.tip_library:
            from parcelscan.inference.review.tip import station_context

            out = Path(args.tip_scans or Path(args.results[0]).resolve().parent / "tip-scans")
            tip = station_context(Path(args.tip_library), out, args.model, args.policy, args.declarations)
        with opened(args.db, create=True) as conn:
            for results in args.results:
                report = ingest(conn, Path(results), actor=_actor(), tip=tip)
                for message in report.messages:  # lines not queued, each named
                    print(f"parcelscan review: {message}", file=sys.stderr)
                print(f"{results}: {report.summary()}")
            open_items = conn.execute(
                "SELECT COUNT(*) FROM items WHERE id NOT IN (SELECT item_id FROM current_decisions)").fetchone()[0]
        print(f"queue: {open_items} undecided item(s) in {args.db}")
        return 0
    if command == "export":
        from parcelscan.inference.review.export import export

        with opened(args.db) as conn:
            report = export(conn, Path(args.out), actor=_actor())
        print(report.summary())
        return 0
    raise AssertionError(command)


def _serve(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise ParcelscanError(f"invalid port {args.port}")
    if args.session_hours <= 0:
        raise ParcelscanError("--session-hours must be > 0")
    import uvicorn

    from parcelscan.inference.review.app import create_app

    app = create_app(args.db, secure_cookies=args.secure_cookies, session_hours=args.session_hours,
                     trusted_proxies=args.trusted_proxy)
    if args.host not in LOOPBACK:
        print(f"parcelscan review: warning: listening on {args.host}, reachable from other machines; "
              "put an HTTPS reverse proxy in front and use --secure-cookies", file=sys.stderr)
    print(f"parcelscan review: serving {args.db} on http://{args.host}:{args.port}/ (Ctrl+C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                proxy_headers=False, server_header=False)
    return 0
