"""The station hot folder: inspect scans as the scanner drops them into a directory, until stopped.

A scanner writes a scan as several files (``<id>_low.png``, ``<id>_high.png``, ``<id>.json``), one
after the other, and may write each in pieces. A scan is taken only when it is *complete*:

1. discovery groups its files (``readers.discover``; hidden and ``*.tmp``/``*.part`` files are
   never scans, so writers that rename into place are seen only once renamed; an unknown file is one
   stderr line, once);
2. every file's (size, mtime) has stayed the same for ``settle_s`` seconds;
3. it decodes (``ScanRef.load``): a pair with a missing partner or a truncated PNG is not ready.

A scan that stays incomplete or undecodable for ``stale_s`` seconds is inspected anyway — it becomes
``manual_inspection`` with the reader's message — because a parcel whose scan never completes must
still reach a person (fail closed), but never before, so a slow writer is not reported as broken.
Polling (not inotify) keeps this portable to network shares, where stations often put hot folders.

**Delivery.** A journal (``<DIR>/.parcelscan-journal.jsonl`` by default, JSON lines, fsynced) records
every scan delivered, keyed by scan id and ``inputs_sha256`` (the content of its files), so a restart
does not re-emit what was delivered: exactly once across a clean stop (SIGINT/SIGTERM end the batch in
hand, then stop). A verdict is written to stdout *before* its "emitted" line, so after ``kill -9`` a
verdict may repeat but never goes missing (at least once): consumers deduplicate by ``scan_id`` +
``inputs_sha256``. Within one run a scan is inspected again only if its image files change.

**Moving files away** (optional ``done`` and ``quarantine`` folders: analysed scans go to ``done``,
scans that could not be analysed — a verdict with an error — to ``quarantine``, or to ``done`` when no
quarantine is given). Move first, then emit the final paths, so ``inputs`` always names files that exist:
the journal gets a "pending" line (the verdict and the planned moves) before anything moves, the files
move, the verdict is emitted, then "emitted". A restart completes any pending entry (moves what is left,
emits the stored verdict). Files keep their path relative to the hot folder; if a file of that name is
already there, the scan goes to ``<folder>/<first 12 hex of inputs_sha256>/``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parcelscan.datasets.scans.readers import ScanRef, discover
from parcelscan.errors import ParcelscanError
from parcelscan.inference.verdict import Verdict, inputs_digest, utc_now

DEFAULT_POLL_S = 0.25
DEFAULT_SETTLE_S = 0.5
DEFAULT_STALE_S = 30.0
JOURNAL_NAME = ".parcelscan-journal.jsonl"


def _signature(paths: tuple[Path, ...]) -> tuple | None:
    """(name, size, mtime_ns) of every file, or None if one vanished meanwhile."""
    out = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        out.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(out)


def _image_signature(ref: Any, signature: tuple) -> tuple:
    """The part of a signature that decides "same scan already inspected": image files, not sidecars."""
    return tuple(entry for entry in signature if not entry[0].endswith((".json", "_rgb.png")) or
                 ref.format == "rgb")


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- the journal -------------------------------------------------------------------------------------
class Journal:
    """What the hot folder delivered, on disk (see the module docstring). Keys are (scan_id, inputs_sha256).

    Opening compacts the file to one "emitted" line per delivered scan (written to a temp file, then
    renamed: a crash while compacting leaves the old journal). A torn last line (``kill -9`` mid-write)
    is ignored: its step is simply redone."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.emitted: set[tuple[str, str]] = set()
        self.pending: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        except (OSError, UnicodeDecodeError) as error:
            raise ParcelscanError(f"--journal {self.path}: cannot read it: {error}") from error
        for line in lines:
            try:
                entry = json.loads(line)
                key = (str(entry["scan_id"]), str(entry["inputs_sha256"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            if entry.get("state") == "emitted":
                self.emitted.add(key)
                self.pending.pop(key, None)
            elif entry.get("state") == "pending" and key not in self.emitted:
                self.pending[key] = entry
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as handle:
                for scan_id, digest in sorted(self.emitted):
                    handle.write(json.dumps({"state": "emitted", "scan_id": scan_id, "inputs_sha256": digest}) + "\n")
                for entry in self.pending.values():
                    handle.write(json.dumps(entry) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open for the journal's life)
        except OSError as error:
            raise ParcelscanError(f"--journal {self.path}: cannot write it: {error.strerror or error}") from error

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.emitted

    def _append(self, entry: dict[str, Any]) -> None:
        self._handle.write(json.dumps(entry) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def record_pending(self, key: tuple[str, str], verdict: dict[str, Any], moves: list[list[str]]) -> None:
        entry = {"state": "pending", "scan_id": key[0], "inputs_sha256": key[1], "verdict": verdict, "moves": moves,
                 "at": utc_now()}
        self._append(entry)
        self.pending[key] = entry

    def record_emitted(self, key: tuple[str, str]) -> None:
        self._append({"state": "emitted", "scan_id": key[0], "inputs_sha256": key[1], "at": utc_now()})
        self.emitted.add(key)
        self.pending.pop(key, None)

    def close(self) -> None:
        self._handle.close()


# --- the folder ----------------------------------------------------------------------------------------
@dataclass
class _Pending:
    signature: tuple
    first_seen: float
    stable_since: float


@dataclass
class Ready:
    """A scan ready to inspect: ``item`` (a decoded Scan, or the ScanRef of a stale broken scan), the
    ``ref`` with all its files, and ``inputs_sha256`` over ``ref.paths`` (the journal's key)."""

    item: Any
    ref: ScanRef
    inputs_sha256: str | None

    @property
    def key(self) -> tuple[str, str]:
        return self.ref.scan_id, self.inputs_sha256 or "unhashable:" + "|".join(map(str, self.ref.paths))


class HotFolder:
    """Tracks a directory between polls; ``poll`` returns what is ready to inspect."""

    def __init__(self, directory: str | Path, settle_s: float = DEFAULT_SETTLE_S, stale_s: float = DEFAULT_STALE_S,
                 journal: Journal | None = None, exclude: Iterable[str | Path] = (),
                 warn: Callable[[str], None] = _warn, admit: Callable[[ScanRef], None] | None = None):
        self.directory = Path(directory)
        self.admit = admit  # raises (a station gate, e.g. memory) when a scan must not even be decoded
        self.settle_s = settle_s
        self.stale_s = stale_s
        self.journal = journal
        self.exclude = [Path(p) for p in exclude]
        self.warn = warn
        self._pending: dict[tuple, _Pending] = {}
        self._done: dict[tuple, tuple] = {}
        self._warned: set[str] = set()

    def poll(self, now: float | None = None) -> list[Any]:
        """Scans ready now: a decoded ``Scan`` when complete, or the ``ScanRef`` of a stale broken one."""
        return [ready.item for ready in self.poll_ready(now)]

    def poll_ready(self, now: float | None = None) -> list[Ready]:
        """``poll`` with each scan's files and content hash; scans the journal holds are skipped."""
        now = time.monotonic() if now is None else now
        ready: list[Ready] = []
        seen: set[tuple] = set()
        found = discover([self.directory], exclude=self.exclude)
        for path, why in found.unknown:
            if str(path) not in self._warned:
                self._warned.add(str(path))
                self.warn(f"parcelscan inspect: {path}: {why}; ignored")
        for ref in found.refs:
            key = (ref.format, ref.scan_id, str(ref.paths[0].parent))
            seen.add(key)
            signature = _signature(ref.paths)
            if signature is None:
                if ref.ok:
                    continue  # a file vanished meanwhile (renamed away): look again next poll
                signature = tuple((str(p), -1, -1) for p in ref.paths)  # broken links etc.: judged when stale
            if self._done.get(key) == _image_signature(ref, signature):
                continue
            pending = self._pending.get(key)
            if pending is None or pending.signature != signature:
                first = pending.first_seen if pending else now
                self._pending[key] = _Pending(signature, first, now)
                continue
            if now - pending.stable_since < self.settle_s:
                continue
            candidate = Ready(None, ref, inputs_digest(ref.paths))
            if self.journal is not None and candidate.key in self.journal:
                self._done[key] = _image_signature(ref, signature)  # delivered before a restart
                del self._pending[key]
                continue
            if ref.ok:
                try:
                    if self.admit is not None:
                        self.admit(ref)
                except ParcelscanError:
                    candidate.item = ref  # refused before decoding: the inspector reports why, now
                else:
                    try:
                        candidate.item = ref.load()
                    except ParcelscanError:
                        candidate.item = None
            if candidate.item is None and now - pending.first_seen >= self.stale_s:
                candidate.item = ref  # inspecting it reports the reader's error: manual_inspection
            if candidate.item is None:
                continue
            ready.append(candidate)
            self._done[key] = _image_signature(ref, signature)
            del self._pending[key]
        for key in list(self._pending):
            if key not in seen:
                del self._pending[key]
        for key in list(self._done):
            if key not in seen:
                del self._done[key]
        return ready


# --- delivery ------------------------------------------------------------------------------------------
def _move(source: str, target: str) -> None:
    """Rename (atomic on one filesystem), else copy and delete (another filesystem)."""
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        shutil.move(source, target)


class Delivery:
    """Journal, move and emit each verdict in the order that makes delivery at-least-once and ``inputs``
    true (module docstring). ``emit`` writes one verdict (stdout); it may raise BrokenPipeError."""

    def __init__(self, directory: Path, emit: Callable[[Verdict], None], journal: Journal | None = None,
                 done_dir: Path | None = None, quarantine_dir: Path | None = None,
                 warn: Callable[[str], None] = _warn):
        self.directory = directory
        self.emit = emit
        self.journal = journal
        self.done_dir = done_dir
        self.quarantine_dir = quarantine_dir
        self.warn = warn

    def recover(self) -> int:
        """Finish what a killed run left pending: move the rest of its files, emit its verdict once more."""
        if self.journal is None:
            return 0
        count = 0
        for key, entry in list(self.journal.pending.items()):
            self._do_moves(entry.get("moves") or [])
            try:
                verdict = Verdict.from_dict(entry["verdict"])
            except (KeyError, TypeError, ValueError) as error:
                self.warn(f"parcelscan inspect: journal entry for {key[0]} is unusable ({error}); the scan's files "
                          f"are in {', '.join(m[1] for m in entry.get('moves') or []) or 'the hot folder'}")
                self.journal.record_emitted(key)
                continue
            self.emit(verdict)
            self.journal.record_emitted(key)
            count += 1
        return count

    def _plan(self, ready: Ready, verdict: Verdict) -> list[list[str]]:
        folder = self.quarantine_dir if verdict.error and self.quarantine_dir is not None else self.done_dir
        if folder is None:
            return []
        moves = []
        for path in ready.ref.paths:
            try:
                relative = Path(os.path.relpath(path, self.directory))
            except ValueError:
                relative = Path(path.name)
            if relative.parts and relative.parts[0] == "..":
                relative = Path(path.name)
            moves.append([str(path), relative])
        if any(os.path.lexists(folder / relative) for _, relative in moves):
            folder = folder / (ready.inputs_sha256 or "unhashable")[:12]
        return [[source, str(folder / relative)] for source, relative in moves]

    def _do_moves(self, moves: list[list[str]]) -> list[str]:
        """Carry out the moves; the paths where the files are afterwards (a failed move leaves it where it was)."""
        where = []
        for source, target in moves:
            if os.path.lexists(source):
                try:
                    _move(source, target)
                except OSError as error:
                    self.warn(f"parcelscan inspect: cannot move {source} to {target}: {error.strerror or error}; "
                              "left in place")
                    where.append(source)
                    continue
            where.append(target)
        return where

    def deliver(self, ready: Ready, verdict: Verdict) -> None:
        verdict.inputs = [str(p) for p in ready.ref.paths]
        verdict.inputs_sha256 = ready.inputs_sha256
        key = ready.key
        moves = self._plan(ready, verdict)
        if moves:
            planned = Verdict.from_dict(verdict.to_dict())
            planned.inputs = [target for _, target in moves]
            if self.journal is not None:
                self.journal.record_pending(key, planned.to_dict(), moves)
            verdict.inputs = self._do_moves(moves)
            if verdict.inputs != planned.inputs and self.journal is not None:
                self.journal.record_pending(key, verdict.to_dict(), [])  # what is true now, if we die next
        self.emit(verdict)
        if self.journal is not None:
            self.journal.record_emitted(key)


def check_folders(directory: str | Path, done_dir: str | Path | None = None,
                  quarantine_dir: str | Path | None = None, journal_path: str | Path | None = None,
                  use_journal: bool = True) -> None:
    """Refuse a watch that cannot work before anything starts (and before "watching …" is printed)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ParcelscanError(f"--watch {directory}: not a directory")
    journal = Path(journal_path) if journal_path else directory / JOURNAL_NAME
    if use_journal and not os.access(journal.parent if journal.parent.exists() else directory, os.W_OK):
        raise ParcelscanError(f"--journal {journal}: its folder is not writable (give --journal FILE elsewhere, "
                              "or --no-journal)")
    for option, folder in (("--done", done_dir), ("--quarantine", quarantine_dir)):
        if folder is None:
            continue
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ParcelscanError(f"{option} {folder}: cannot create it: {error.strerror or error}") from error
        if not os.access(folder, os.W_OK):
            raise ParcelscanError(f"{option} {folder}: not writable")


def watch(directory: str | Path, inspect: Callable[[list[Any]], Iterable[Verdict]], emit: Callable[[Verdict], None],
          stop: threading.Event, poll_s: float = DEFAULT_POLL_S, settle_s: float = DEFAULT_SETTLE_S,
          stale_s: float = DEFAULT_STALE_S, journal_path: str | Path | None = None, use_journal: bool = True,
          done_dir: str | Path | None = None, quarantine_dir: str | Path | None = None,
          warn: Callable[[str], None] = _warn, admit: Callable[[ScanRef], None] | None = None) -> None:
    """Poll ``directory``, inspect what is ready (``inspect(items)`` yields one verdict per item, in order)
    and deliver each verdict (journal, move, ``emit``) until ``stop`` is set; the batch in hand is finished.
    ``admit(ref)`` runs before a scan is decoded and raises to refuse it (the station's memory gate)."""
    directory = Path(directory)
    check_folders(directory, done_dir, quarantine_dir, journal_path, use_journal)
    journal = Journal(journal_path or directory / JOURNAL_NAME) if use_journal else None
    done = Path(done_dir) if done_dir is not None else None
    quarantine = Path(quarantine_dir) if quarantine_dir is not None else None
    delivery = Delivery(directory, emit, journal, done, quarantine, warn)
    folder = HotFolder(directory, settle_s=settle_s, stale_s=stale_s, journal=journal,
                       exclude=[p for p in (done, quarantine) if p is not None], warn=warn, admit=admit)
    try:
        delivery.recover()
        while not stop.is_set():
            try:
                ready = folder.poll_ready()
            except OSError as error:  # the share went away for a moment: say so, keep watching
                warn(f"parcelscan inspect: warning: cannot list {directory}: {error.strerror or error}")
                ready = []
            if ready:
                for item, verdict in zip(ready, inspect([r.item for r in ready]), strict=True):
                    delivery.deliver(item, verdict)
            stop.wait(poll_s)
    finally:
        if journal is not None:
            with contextlib.suppress(OSError):
                journal.close()
