"""``parcelscan data merge OUT SRC [SRC ...]``: several data sets as one, without copying pixels.

Why: a training set is made in parts (the stress mix, the postal stream, the shielded scenario, new seizures from
review), and a rare operating point is measured on suspects of one set against the clear parcels of a larger one
(Pd at Pfa 0.1 % needs ≥ 10,000 clear scans). Every tool reads one directory with one ``manifest.jsonl``.

What it does: every scan of each SRC — the files its manifest line names (``files`` and ``mask``), at the same
relative names — appears in OUT, and its manifest line is appended to OUT's manifest (kept as it was: label,
split, provenance). OUT may already hold a data set: the sources are added to it. Files are **hard-linked** (no
pixel copied, no disk used; a copy where OUT is on another file system), or with ``--move`` moved (the sources are
then emptied: their manifest and ``stats.json`` go, and a source directory left empty is removed).

Refused before anything is written (exit 2, the first offenders named): a scan id found twice (within or across the
sets: a merged set must not count a scan twice); a file name two sets use for different contents; a file a manifest
names that is missing; OUT being one of the sources. Splits are kept as they were: ``parcelscan data split OUT
--reassign`` splits the whole again.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from parcelscan.datasets.manifest import MANIFEST_NAME, ManifestRecord, read_manifest, record_files, write_manifest
from parcelscan.errors import ParcelscanError

SHOWN = 5  # offenders named in an error


@dataclass
class MergeResult:
    """What ``merge_datasets`` did: scans per source, and how their files got into OUT."""

    out: Path
    scans: list[tuple[Path, int]] = field(default_factory=list)
    kept: int = 0  # scans OUT held before
    linked: int = 0
    copied: int = 0
    moved: int = 0

    def render(self) -> str:
        lines = [f"{source}: {n} scans" for source, n in self.scans]
        how = ", ".join(f"{n} {verb}" for n, verb in ((self.linked, "hard-linked"), (self.copied, "copied"),
                                                     (self.moved, "moved")) if n)
        total = self.kept + sum(n for _, n in self.scans)
        lines.append(f"wrote {self.out / MANIFEST_NAME}: {total} scans ({self.kept} there before); files: "
                     f"{how or 'none'}. Splits kept as they were (`parcelscan data split {self.out} --reassign` "
                     "to split the whole again)")
        return "\n".join(lines)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _plan(out: Path, sources: list[Path]) -> tuple[list[ManifestRecord], list[tuple[Path, list[ManifestRecord]]],
                                                  list[tuple[Path, Path]]]:
    """Read everything and check everything; return OUT's records, each source's, and the (src, dst) file pairs
    still to bring over. Raises ParcelscanError naming the offenders, having written nothing."""
    out_manifest = out / MANIFEST_NAME
    existing = read_manifest(out_manifest) if out_manifest.is_file() else []
    seen = {r.scan_id: str(out) for r in existing}
    duplicates: list[str] = []
    per_source: list[tuple[Path, list[ManifestRecord]]] = []
    pairs: list[tuple[Path, Path]] = []
    targets: dict[Path, Path] = {}  # destination → the file it comes from
    missing: list[str] = []
    clashes: list[str] = []
    for source in sources:
        if source.resolve() == out.resolve():
            raise ParcelscanError(f"{source}: the output directory cannot also be a source")
        records = read_manifest(source / MANIFEST_NAME)
        for record in records:
            if record.scan_id in seen:
                duplicates.append(f"{record.scan_id} ({seen[record.scan_id]} and {source})")
            seen[record.scan_id] = str(source)
            for name in record_files(record):
                src, dst = source / name, out / name
                if not src.is_file():
                    missing.append(str(src))
                    continue
                if dst in targets:
                    if not _same_file(targets[dst], src):
                        clashes.append(f"{name} ({targets[dst].parent} and {source})")
                    continue
                targets[dst] = src
                if not dst.exists():
                    pairs.append((src, dst))
                elif not _same_file(dst, src):
                    clashes.append(f"{name} ({out} and {source})")
        per_source.append((source, records))
    for problems, what in ((duplicates, "scan id(s) found twice"), (missing, "file(s) the manifests name are missing"),
                           (clashes, "file name(s) used for different contents")):
        if problems:
            shown = "; ".join(problems[:SHOWN]) + (f"; … {len(problems) - SHOWN} more" if len(problems) > SHOWN else "")
            raise ParcelscanError(f"nothing merged: {len(problems)} {what}: {shown}")
    return existing, per_source, pairs


def _bring(src: Path, dst: Path, move: bool) -> str:
    """Put ``src`` at ``dst``: moved, else hard-linked, else (another file system) copied. Returns which."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if move:
        shutil.move(src, dst)
        return "moved"
    try:
        os.link(src, dst)
        return "linked"
    except OSError:
        shutil.copy2(src, dst)
        return "copied"


def merge_datasets(out: Path | str, sources: list[Path | str], move: bool = False) -> MergeResult:
    """Merge the data sets ``sources`` into ``out`` (module docstring). Checks everything before writing."""
    out = Path(out)
    sources = [Path(s) for s in sources]
    if not sources:
        raise ParcelscanError("give at least one data set to merge")
    existing, per_source, pairs = _plan(out, sources)
    out.mkdir(parents=True, exist_ok=True)
    result = MergeResult(out, [(source, len(records)) for source, records in per_source], kept=len(existing))
    for src, dst in pairs:
        how = _bring(src, dst, move)
        setattr(result, how, getattr(result, how) + 1)
    merged = existing + [record for _, records in per_source for record in records]
    write_manifest(out / MANIFEST_NAME, merged)
    if move:
        for source, _ in per_source:
            for leftover in (MANIFEST_NAME, "stats.json"):
                (source / leftover).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # something else lives there: leave it
                source.rmdir()
    return result
