"""``parcelscan calibrate``: a station's threshold for a target Pfa from its own cleared traffic.

Reads the station's verdict JSONL (``--verdicts``; its clear lines are inspected-clear parcels) and/or its
review database (``--review``; flagged parcels decided ``false_alarm``), sets the threshold for
``--target-pfa`` (``inference.calibrate``), prints what it achieves with its exact 95 % interval, and writes a
station policy (``--out``: ``--policy`` or the shipped default, plus a ``[calibration]`` table) that
``inspect --policy`` reads; its flag rate is the centre line of ``inspect``'s drift alert.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tomllib
from pathlib import Path

from parcelscan.errors import ParcelscanError
from parcelscan.inference.calibrate import Traffic, calibrate, policy_with_calibration, read_review, read_verdicts
from parcelscan.inference.policy import load_policy, parse_policy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verdicts", nargs="+", default=[], metavar="FILE.jsonl",
                        help="verdict lines of this station (parcelscan inspect's stdout)")
    parser.add_argument("--review", metavar="DB", help="the review database (SQLite file or postgresql:// URL)")
    parser.add_argument("--target-pfa", type=float, default=0.01, metavar="P",
                        help="target probability of false alarm of the model's score (default 0.01)")
    parser.add_argument("--model", metavar="SHA256", help="use only parcels scored by this model (sha256 prefix)")
    parser.add_argument("--policy", metavar="FILE", help="the policy to calibrate (default: the shipped default)")
    parser.add_argument("--out", required=True, metavar="FILE.toml",
                        help="write the calibrated station policy here (for inspect --policy)")


def run(args: argparse.Namespace) -> int:
    if not args.verdicts and not args.review:
        raise ParcelscanError("nothing to calibrate from: give --verdicts FILE.jsonl and/or --review DB")
    base = load_policy(args.policy)
    traffic = Traffic()
    read_verdicts(args.verdicts, traffic, args.model)
    if args.review:
        read_review(args.review, traffic, args.model)
    cal = calibrate(traffic, args.target_pfa)
    text = policy_with_calibration(base, cal)
    out = Path(args.out)
    parse_policy(tomllib.loads(text), str(out), hashlib.sha256(text.encode()).hexdigest())  # what inspect will read
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as error:
        raise ParcelscanError(f"--out {out}: cannot write it: {error.strerror or error}") from error
    print(f"parcelscan calibrate: {cal.n_clear} cleared parcels ({', '.join(traffic.sources)}"
          f"{f'; {traffic.skipped} of other models or without a score left out' if traffic.skipped else ''})",
          file=sys.stderr)
    print(f"parcelscan calibrate: threshold {cal.threshold:.6g} for target Pfa {cal.target_pfa:g}: "
          f"{cal.false_alarms} of {cal.n_clear} cleared parcels at or over it, Pfa {cal.pfa:.4f} "
          f"(exact 95 % interval {cal.pfa_low:.4f}–{cal.pfa_high:.4f})", file=sys.stderr)
    if cal.pfa_high > 2 * cal.target_pfa:
        print(f"parcelscan calibrate: warning: the interval's upper end {cal.pfa_high:.4f} is over twice the target: "
              "more cleared traffic is needed before this threshold can be trusted", file=sys.stderr)
    if cal.flag_rate is not None:
        print(f"parcelscan calibrate: flag rate at this threshold {cal.flag_rate:.4f} over {cal.flag_rate_n} "
              "parcels (any reason): the drift monitor's centre line", file=sys.stderr)
    print(f"parcelscan calibrate: wrote {out}", file=sys.stderr)
    return 0
