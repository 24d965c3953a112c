"""``parcelscan inspect``: the station command. One JSON line per scan on stdout, a summary on stderr.

Inputs: files and directories (station pairs, TIFFs, pseudo-colour PNG/JPEG, DICOS are discovered),
``-`` reads paths from stdin one per line, ``--watch DIR`` inspects scans as they appear in a hot
folder until SIGINT/SIGTERM. Without ``--model`` the promoted registry model or the shipped default
``model/default/parcelscan-dual.onnx`` is used.

The station policy (``--policy FILE``, default the shipped ``inference/policies/default.toml``; see
``inference.policy``) sets the shield alarm's threat model, which reason classes alarm, the threshold (or the
station's own calibration), the memory caps (per scan, and per batch: what the readers hold ahead of the
model), the trusted model keys (a model not signed by one is refused before any verdict, exit 2) and the drift
monitor; it is printed on stderr at start and its sha256 is in every verdict. With a calibrated policy, a drift
alert (stderr, and the summary's ``drift`` field) says when the flag rate leaves its control limits
(``inference.calibrate.DriftMonitor``).

Parallelism (``parallelism``): ``--workers N`` with N >= 2 on named files and folders forks N worker processes, each
inline with its own model session, the scans dealt in runs of ``--batch``, verdicts merged back in input order (a
worker that dies costs no verdict; the per-batch memory cap is shared); where the scans cannot be dealt out ahead
(``-``, ``--watch``, ``--tdr``, ``--heatmaps``), and for N = 1, N reader threads in this process. ``--processes P``
overrides the choice.

Exit codes (like clamscan): 0 every scan clear; 1 at least one suspect; 2 at least one scan could not
be analysed (``manual_inspection``) or the command itself failed (bad model, sha256 mismatch, bad
option). 2 wins over 1: a run in which something was not analysed is not complete, and the pipeline
must notice; each scan's own verdict is on its line, so no suspect is hidden by the combined code.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parcelscan.datasets.scans.readers import discover, scan_key
from parcelscan.errors import ParcelscanError
from parcelscan.inference import gates
from parcelscan.inference import watch as hot
from parcelscan.inference.calibrate import DriftMonitor
from parcelscan.inference.declaration import attach_declaration_check
from parcelscan.inference.inspector import Inspector, MissingInput
from parcelscan.inference.policy import load_policy
from parcelscan.inference.verdict import combine_exit_codes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="scan files or directories; '-' reads paths from stdin, one per line")
    parser.add_argument("--watch", metavar="DIR", help="inspect scans as they appear in DIR until interrupted")
    parser.add_argument("--model", metavar="MODEL.onnx", help="ONNX model (default: the promoted or shipped model)")
    parser.add_argument("--rgb", action="store_true",
                        help="without --model: use the pseudo-colour (RGB) default, for stations that export only "
                             "the operator image")
    parser.add_argument("--policy", metavar="FILE",
                        help="station policy (TOML; default: the shipped inference/policies/default.toml)")
    parser.add_argument("--threshold", type=float, metavar="T",
                        help="suspect if score >= T (default: the policy's calibration, else the model's operating "
                             "threshold)")
    parser.add_argument("--heatmaps", metavar="DIR", help="write the heatmap overlay of every suspect scan here")
    parser.add_argument("--tdr", metavar="DIR", help="write a DICOS Threat Detection Report per scan here")
    parser.add_argument("--declarations", metavar="FILE",
                        help="customs advance data (JSON lines or CSV keyed by S10 item_id) to check each scan "
                             "against; without it the sidecar's declaration is checked (inference.declaration)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="onnxruntime provider: cuda when asked or (auto) available, else cpu")
    parser.add_argument("--threads", type=int, metavar="N", help="onnxruntime intra-op threads (default: all cores)")
    parser.add_argument("--batch", type=int, default=8, metavar="N", help="scans per model call (default 8)")
    parser.add_argument("--station", metavar="NAME", help="station name in every verdict (default $PARCELSCAN_STATION)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="parallel workers (default 1; 0 = all inline in this process). N >= 2 on named files and "
                             "folders: N forked worker processes, each with its own model session, verdicts in input "
                             "order (the weighing of bodies is Python code that holds the GIL, so threads reach ~1.5 "
                             "of 2 cores, processes ~1.9); with '-', --watch, --tdr or --heatmaps, or N = 1: N threads "
                             "reading and preprocessing ahead of the model in this process")
    parser.add_argument("--processes", type=int, default=None, metavar="P",
                        help="override --workers' choice: P forked processes (named files and folders only), each "
                             "with --workers reader threads; --processes 1 keeps one process with --workers threads")
    parser.add_argument("--watch-settle", type=float, default=None, metavar="S",
                        help="--watch: files must be unchanged for S seconds before a scan is read (default 0.5)")
    parser.add_argument("--watch-stale", type=float, default=None, metavar="S",
                        help="--watch: a scan still incomplete after S seconds is reported as manual_inspection "
                             "(default 30)")
    parser.add_argument("--journal", metavar="FILE",
                        help="--watch: the delivery journal (default DIR/.parcelscan-journal.jsonl): scans delivered "
                             "before a restart are not emitted again")
    parser.add_argument("--no-journal", action="store_true",
                        help="--watch: keep no journal (every scan in the folder is emitted again after a restart)")
    parser.add_argument("--done", metavar="DIR", help="--watch: move the files of every analysed scan here, then "
                                                      "emit the verdict with their new paths")
    parser.add_argument("--quarantine", metavar="DIR",
                        help="--watch: move the files of scans that could not be analysed here (default: --done)")
    parser.add_argument("--max-scan-mb", type=float, default=None, metavar="MB",
                        help="memory cap per scan, checked from the file headers before decoding; a scan over it is "
                             f"manual_inspection (default: the policy's, {gates.MAX_SCAN_BYTES / 2**20:.0f} in the "
                             "shipped one)")
    parser.add_argument("--max-batch-mb", type=float, default=None, metavar="MB",
                        help="memory cap of the scans held at once (read ahead by --workers and in the model's "
                             "batch), by the same header estimate; at least --max-scan-mb (default: the policy's, "
                             "4096 in the shipped one)")
    parser.add_argument("--quiet", action="store_true", help="no per-scan lines on stderr, only the summary")


def _iter_items(paths: list[str], stdin=None, warn=None):
    """Scan refs for every named path, lazily (stdin is read as it comes); nothing named is dropped.

    One rule whatever the files are named by (a directory, a shell glob ``DIR/*``, a stdin list): each
    scan is inspected once however many of its files are named; companions are silent; an unknown file
    is one line on stderr (``warn``) and leaves the exit code alone (``readers.discover``)."""
    warn = warn or (lambda line: print(line, file=sys.stderr))
    seen: set[tuple[str, str]] = set()

    def refs(raw: str):
        try:
            found = discover([raw])
        except OSError as error:
            return [MissingInput(raw, f"cannot list: {error.strerror or error}")]
        for path, why in found.unknown:
            warn(f"parcelscan inspect: {path}: {why}; ignored")
        if not found.refs and not found.unknown and Path(raw).is_dir():
            warn(f"parcelscan inspect: warning: no scans under {raw}")
        fresh = []
        for ref in found.refs:
            key = scan_key(ref)
            if key not in seen:
                seen.add(key)
                fresh.append(ref)
        return fresh

    for raw in paths:
        if raw == "-":
            for line in stdin or sys.stdin:
                line = line.strip()
                if line:
                    yield from refs(line)
        else:
            yield from refs(raw)


class _Tally:
    def __init__(self, quiet: bool, drift: DriftMonitor | None = None):
        self.counts = {"clear": 0, "suspect": 0, "manual_inspection": 0}
        self.codes: list[int] = []
        self.quiet = quiet
        self.latencies: list[float] = []
        self.drift = drift

    def emit(self, verdict) -> None:
        print(verdict.to_json(), flush=True)
        self.counts[verdict.verdict] += 1
        self.codes.append(verdict.exit_code)
        self.latencies.append(verdict.latency_ms)
        if not self.quiet and verdict.verdict != "clear":
            detail = verdict.error or "; ".join(verdict.reasons)
            print(f"  {verdict.verdict.upper():<17} {verdict.scan_id}: {detail}", file=sys.stderr)
        if self.drift is not None:
            alert = self.drift.add(verdict.flagged)
            if alert:
                print(f"parcelscan inspect: {alert}", file=sys.stderr, flush=True)

    def drift_summary(self) -> str:
        if self.drift is None:
            return "drift: not monitored (the policy has no calibrated flag rate)"
        return self.drift.summary()


def run(args: argparse.Namespace) -> int:
    if not args.paths and not args.watch:
        raise ParcelscanError("nothing to inspect: give scan files or directories, '-' to read paths from stdin, "
                              "or --watch DIR")
    if args.batch < 1:
        raise ParcelscanError(f"--batch must be >= 1, got {args.batch}")
    if args.rgb and args.model:
        raise ParcelscanError("--rgb picks the default pseudo-colour model; with --model, the model decides")
    moving = args.done or args.quarantine or args.journal or args.no_journal
    if moving and not args.watch:
        raise ParcelscanError("--done, --quarantine, --journal and --no-journal work with --watch DIR")
    for flag, value in (("--max-scan-mb", args.max_scan_mb), ("--max-batch-mb", args.max_batch_mb)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ParcelscanError(f"{flag} must be a positive number of MiB, got {value:g}")
    if args.journal and args.no_journal:
        raise ParcelscanError("--journal and --no-journal contradict each other")
    if args.watch:  # before the model loads and before "watching …": a watch that cannot work says so first
        hot.check_folders(args.watch, args.done, args.quarantine, args.journal, not args.no_journal)
    processes, threads = parallelism(args)
    policy = load_policy(args.policy)
    shares = None
    items: list | None = None
    if processes > 1:  # before this process opens a model session: the children open their own
        items = list(_iter_items(args.paths))
        # no more processes than runs of --batch to deal: one parcel per command is not worth a second model load
        processes = min(processes, max(1, math.ceil(len(items) / args.batch)))
        if processes > 1:
            shares = _start_shares(args, policy, items, processes, threads)
    inspector = _build_inspector(args, policy)
    m = inspector.metadata
    print(f"parcelscan inspect: model {m.name} {m.version} ({inspector.model_info['sha256'][:12]}), "
          f"{m.input_kind}, threshold {inspector.threshold:.4g} ({inspector.threshold_source}), provider "
          f"{inspector.provider}", file=sys.stderr)
    for line in policy.describe():
        print(f"parcelscan inspect: {line}", file=sys.stderr)
    signature = inspector.session.signature
    if signature is not None:
        print(f"parcelscan inspect:   model signed by trusted key {signature.key_id[:16]}… ({signature.name} "
              f"{signature.version}, signed {signature.signed_at})", file=sys.stderr)
    if shares is not None:
        readers = f"{threads} reader thread(s)" if threads > 0 else "inline"
        print(f"parcelscan inspect:   {processes} worker processes ({readers}, onnxruntime threads "
              f"{shares[0].ort_threads} each); verdicts in input order", file=sys.stderr)
    for flag, value, per in (("--max-scan-mb", args.max_scan_mb, "scan"), ("--max-batch-mb", args.max_batch_mb,
                                                                          "batch")):
        if value is not None:
            print(f"parcelscan inspect:   memory cap {value:g} MiB per {per} ({flag}, over the policy's)",
                  file=sys.stderr)
    drift = None
    calibration = policy.calibration
    if calibration is not None and calibration.flag_rate is not None and args.threshold is None:
        drift = DriftMonitor(calibration.flag_rate, policy.drift)
    tally = _Tally(args.quiet, drift)
    started = time.perf_counter()
    try:
        if shares is not None:
            for verdict in _merge_shares(shares, inspector, args.batch):
                tally.emit(verdict)
        elif args.paths:
            source = items if items is not None else _iter_items(args.paths)
            for verdict in inspector.inspect_many(source, batch=args.batch, workers=threads):
                tally.emit(verdict)
        if args.watch:
            stop = threading.Event()

            def on_signal(signum, _frame) -> None:
                stop.set()

            previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
            watch_started = time.perf_counter()
            print(f"parcelscan inspect: watching {args.watch} (SIGINT/SIGTERM to stop)", file=sys.stderr)
            try:
                hot.watch(args.watch, lambda items: inspector.inspect_many(items, batch=args.batch, workers=0),
                          tally.emit, stop,
                          settle_s=hot.DEFAULT_SETTLE_S if args.watch_settle is None else args.watch_settle,
                          stale_s=hot.DEFAULT_STALE_S if args.watch_stale is None else args.watch_stale,
                          journal_path=args.journal, use_journal=not args.no_journal, done_dir=args.done,
                          quarantine_dir=args.quarantine,
                          admit=lambda ref: gates.check_memory(ref, inspector.spec, inspector.max_scan_bytes))
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            started = watch_started if not args.paths else started
    except BrokenPipeError:
        # the reader of our verdicts went away: nothing more can be reported, so the run is incomplete
        sys.stderr.write("parcelscan inspect: stdout closed; stopping\n")
        return 2
    elapsed = time.perf_counter() - started
    total = sum(tally.counts.values())
    if total == 0 and not args.watch:
        raise ParcelscanError(f"no scans found in {' '.join(args.paths)}: nothing was inspected")
    rate = ""
    if total and elapsed > 0:
        # under --watch the run lasts as long as the folder is watched: scans/s is how fast scans arrived,
        # not how fast they can be inspected
        rate = (f", {total / elapsed:.2f} scans/s arrival rate over {elapsed:.0f} s watched" if args.watch
                else f", {total / elapsed:.1f} scans/s")
    print(f"parcelscan inspect: {total} scan(s): {tally.counts['clear']} clear, {tally.counts['suspect']} suspect, "
          f"{tally.counts['manual_inspection']} manual_inspection{rate} [{inspector.provider}]; "
          f"{tally.drift_summary()}", file=sys.stderr)
    return combine_exit_codes(tally.codes)


def forkable(args: argparse.Namespace) -> bool:
    """Can this run's scans be dealt to forked processes: only named files and folders, all known before the run
    starts and reported only on stdout. Not '-' (read as it comes), --watch (scans arrive and are moved one by one),
    --tdr or --heatmaps (files written beside each verdict, by the process that made it); nor where this platform
    cannot fork."""
    return (not (args.watch or args.tdr or args.heatmaps or "-" in args.paths)
            and "fork" in multiprocessing.get_all_start_methods())


def parallelism(args: argparse.Namespace) -> tuple[int, int]:
    """(worker processes, reader threads in each) for these arguments. ``--workers N`` takes the fastest correct
    one: N >= 2 where the run is ``forkable``, N processes each inline (measured on 2 Xeon cores, 400 scans: threads
    ratio 1.83 to Pillow's decode, processes 1.19 — the weighing holds the GIL in many small numpy calls); else N
    threads in this process. ``--processes P`` overrides it: P processes, each with ``--workers`` threads (P = 1:
    one process, the threads)."""
    if args.processes is not None:
        if args.processes < 1:
            raise ParcelscanError(f"--processes must be >= 1, got {args.processes}")
        if args.processes > 1 and not forkable(args):
            raise ParcelscanError("--processes works with named files and folders only (not '-', --watch, --tdr or "
                                  "--heatmaps)")
        return args.processes, args.workers
    if args.workers >= 2 and forkable(args):
        return args.workers, 0
    return 1, args.workers


def _build_inspector(args: argparse.Namespace, policy) -> Inspector:
    """The station's Inspector for these arguments, with its hooks (the DICOS TDR writer, the declaration check)."""
    inspector = Inspector(args.model, threshold=args.threshold, device=args.device, threads=args.threads,
                          heatmap_dir=args.heatmaps, station=args.station,
                          input_kind="pseudo_color" if args.rgb else "dual_energy",
                          max_scan_bytes=None if args.max_scan_mb is None else int(args.max_scan_mb * 2**20),
                          max_batch_bytes=None if args.max_batch_mb is None else int(args.max_batch_mb * 2**20),
                          policy=policy)
    if args.tdr:
        from parcelscan.inference.tdr import attach_tdr_writer

        attach_tdr_writer(inspector, args.tdr)
    if policy.alarms_on("declaration"):  # a policy that leaves the class out runs no declaration check
        attach_declaration_check(inspector, args.declarations)  # adds declaration_check; never changes a verdict
    elif args.declarations:
        raise ParcelscanError(f"--declarations: the policy {policy.path} leaves the declaration class out of "
                              "alarm.reasons, so no declaration is checked")
    return inspector


# --- worker processes (--workers N >= 2 on named files and folders, or --processes N) -------------------------------
# The items are dealt to N forked children in runs of --batch (run k to child k mod N), so every model call holds the
# tiles of the same scans as in one process; each child builds its own Inspector (its own onnxruntime session: one
# made before the fork would not survive it), sends its verdicts in its input order, and the parent takes them back
# in the input order. A child that dies or fails costs no verdict: the parent inspects the rest of its share itself.
# The per-batch memory cap is shared: each child holds at most 1/N of it (never below the per-scan cap).


@dataclass
class _Share:
    items: list
    connection: Any
    process: Any
    ort_threads: int = 1
    alive: bool = True


def _ort_threads_per_process(args: argparse.Namespace, n: int) -> int:
    """onnxruntime intra-op threads for each of ``n`` worker processes: --threads when given, else this machine's
    cores shared out (at least 1). Why: each child's session would otherwise start a pool as large as the machine,
    and n of them crowd the cores during every model call (one thread or two: the same scores, dev150)."""
    if args.threads is not None:
        return args.threads
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call on this platform
        cores = os.cpu_count() or 1
    return max(1, cores // n)


def _start_shares(args: argparse.Namespace, policy, items: list, n: int, threads: int) -> list[_Share]:
    """Fork ``n`` children, each inspecting its share of ``items`` with ``threads`` reader threads."""
    context = multiprocessing.get_context("fork")
    ort_threads = _ort_threads_per_process(args, n)
    sys.stdout.flush()  # a child flushes its copy of these buffers when it ends: nothing may be pending in them
    sys.stderr.flush()
    shares = []
    for k in range(n):
        mine = [item for i, item in enumerate(items) if (i // args.batch) % n == k]
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(argparse.Namespace(**{**vars(args), "threads": ort_threads}),
                                                       policy, mine, sender, n, threads), daemon=True,
                                  name=f"parcelscan-inspect-{k}")
        process.start()
        sender.close()
        shares.append(_Share(mine, receiver, process, ort_threads))
    return shares


def _child(args: argparse.Namespace, policy, items: list, connection, n: int, threads: int) -> None:
    """One process's share: its own Inspector, its verdicts sent one by one in input order."""
    try:
        inspector = _build_inspector(args, policy)
        inspector.max_batch_bytes = max(inspector.max_scan_bytes, inspector.max_batch_bytes // n)
        for verdict in inspector.inspect_many(items, batch=args.batch, workers=threads):
            connection.send(verdict)
    except BaseException as error:  # the parent inspects what is left; say why once
        print(f"parcelscan inspect: a worker process stopped ({type(error).__name__}: {error}); the main process "
              "takes over its scans", file=sys.stderr, flush=True)
    finally:
        connection.close()


def _merge_shares(shares: list[_Share], inspector: Inspector, batch: int):
    """The children's verdicts in input order; a share whose child stopped is finished here, item by item."""
    n = len(shares)
    cursors = [0] * n
    total = sum(len(share.items) for share in shares)
    try:
        for i in range(total):
            k = (i // batch) % n  # the share this item was dealt to (_start_shares)
            share = shares[k]
            item = share.items[cursors[k]]
            cursors[k] += 1
            if share.alive:
                try:
                    yield share.connection.recv()
                    continue
                except (EOFError, OSError):
                    share.alive = False
                    share.process.join(timeout=5)
                    if share.process.exitcode not in (0, None):  # killed, or died outside Python: say so once
                        left = len(share.items) - cursors[k] + 1
                        print(f"parcelscan inspect: worker process {k} ended with exit code {share.process.exitcode}; "
                              f"the main process inspects the {left} scan(s) of its share left", file=sys.stderr,
                              flush=True)
            yield inspector.inspect(item)
    finally:
        for share in shares:
            share.connection.close()
            share.process.join(timeout=5)
            if share.process.is_alive():
                share.process.kill()
