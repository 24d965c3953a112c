"""The station hot folder: inspect scans as the scanner drops them into a directory, until stopped.

A scanner writes a scan as several files (``<id>_low.png``, ``<id>_high.png``, ``<id>.json``), one
after the other, and may write each in pieces. A scan is taken only when it is *complete*:

1. discovery groups its files (``readers.discover_scans``; hidden and ``*.tmp``/``*.part`` files are
   never scans, so writers that rename into place are seen only once renamed);
2. every file's (size, mtime) has stayed the same for ``settle_s`` seconds;
3. it decodes (``ScanRef.load``): a pair with a missing partner or a truncated PNG is not ready.

A scan that stays incomplete or undecodable for ``stale_s`` seconds is inspected anyway — it becomes
``manual_inspection`` with the reader's message — because a parcel whose scan never completes must
still reach a person (fail closed), but never before, so a slow writer is not reported as broken.
A scan is inspected once; it is inspected again only if its image files change (same id rewritten).
Polling (not inotify) keeps this portable to network shares, where stations often put hot folders.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_POLL_S = 0.25
DEFAULT_SETTLE_S = 0.5
DEFAULT_STALE_S = 30.0


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


@dataclass
class _Pending:
    signature: tuple
    first_seen: float
    stable_since: float


class HotFolder:
    """Tracks a directory between polls; ``poll`` returns what is ready to inspect."""

    def __init__(self, directory: str | Path, settle_s: float = DEFAULT_SETTLE_S, stale_s: float = DEFAULT_STALE_S):
        self.directory = Path(directory)
        self.settle_s = settle_s
        self.stale_s = stale_s
        self._pending: dict[tuple, _Pending] = {}
        self._done: dict[tuple, tuple] = {}

    def poll(self, now: float | None = None) -> list[Any]:
        """Scans ready now: a decoded ``Scan`` when complete, or the ``ScanRef`` of a stale broken one."""
        from parcelscan.datasets.scans.readers import discover_scans
        from parcelscan.errors import ParcelscanError

        now = time.monotonic() if now is None else now
        ready: list[Any] = []
        seen: set[tuple] = set()
        for ref in discover_scans([self.directory]):
            key = (ref.format, ref.scan_id, str(ref.paths[0].parent))
            seen.add(key)
            signature = _signature(ref.paths)
            if signature is None:
                continue
            if self._done.get(key) == _image_signature(ref, signature):
                continue
            pending = self._pending.get(key)
            if pending is None or pending.signature != signature:
                first = pending.first_seen if pending else now
                self._pending[key] = _Pending(signature, first, now)
                continue
            if now - pending.stable_since < self.settle_s:
                continue
            item: Any = None
            if ref.ok:
                try:
                    item = ref.load()
                except ParcelscanError:
                    item = None
            if item is None and now - pending.first_seen >= self.stale_s:
                item = ref  # inspecting it reports the reader's error: manual_inspection
            if item is None:
                continue
            ready.append(item)
            self._done[key] = _image_signature(ref, signature)
            del self._pending[key]
        for key in list(self._pending):
            if key not in seen:
                del self._pending[key]
        for key in list(self._done):
            if key not in seen:
                del self._done[key]
        return ready


def watch(directory: str | Path, handle: Callable[[list[Any]], None], stop: threading.Event,
          poll_s: float = DEFAULT_POLL_S, settle_s: float = DEFAULT_SETTLE_S, stale_s: float = DEFAULT_STALE_S) -> None:
    """Poll ``directory`` and call ``handle(ready_items)`` until ``stop`` is set."""
    from parcelscan.errors import ParcelscanError

    directory = Path(directory)
    if not directory.is_dir():
        raise ParcelscanError(f"--watch {directory}: not a directory")
    folder = HotFolder(directory, settle_s=settle_s, stale_s=stale_s)
    while not stop.is_set():
        try:
            ready = folder.poll()
        except OSError as error:  # the share went away for a moment: say so, keep watching
            import sys

            print(f"parcelscan inspect: warning: cannot list {directory}: {error.strerror or error}", file=sys.stderr)
            ready = []
        if ready:
            handle(ready)
        stop.wait(poll_s)
