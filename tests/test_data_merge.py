"""`parcelscan data merge`: several data sets as one directory — every scan and manifest line once, files hard-linked
(or moved), and nothing written when ids repeat, files are missing or a name holds two different files."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_datatools import make_dataset  # the small station-format sets the dataset tools are tested on

from parcelscan.cli import main
from parcelscan.datasets.check import check_dataset
from parcelscan.datasets.manifest import read_manifest
from parcelscan.datasets.merge import merge_datasets, record_files


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory, model) -> tuple[Path, Path]:
    """Two small sets whose scan ids and file names differ (as simulated sets of two seeds do)."""
    root = tmp_path_factory.mktemp("merge")
    first, second = root / "first", root / "second"
    first.mkdir()
    second.mkdir()
    make_dataset(first, model, n_parcels=6, seed=1)
    make_dataset(second, model, n_parcels=4, seed=2)
    for record in read_manifest(second / "manifest.jsonl"):  # other ids and names, as another seed gives
        for name in record_files(record):
            (second / name).rename(second / f"b-{name}")
    text = (second / "manifest.jsonl").read_text().replace('"p0', '"b-p0')
    (second / "manifest.jsonl").write_text(text)
    return first, second


def _copy(sets: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    return tuple(shutil.copytree(s, tmp_path / s.name) for s in sets)  # type: ignore[return-value]


def test_merge_links_every_scan_once_and_the_result_is_a_valid_set(two_sets, tmp_path, capsys):
    first, second = two_sets
    out = tmp_path / "merged"
    assert main(["data", "merge", str(out), str(first), str(second)]) == 0
    printed = capsys.readouterr().out
    merged = read_manifest(out / "manifest.jsonl")
    expected = read_manifest(first / "manifest.jsonl") + read_manifest(second / "manifest.jsonl")
    assert [r.to_json() for r in merged] == [r.to_json() for r in expected]
    for record in read_manifest(second / "manifest.jsonl"):
        for name in record_files(record):
            assert (out / name).samefile(second / name)  # hard links: no pixel copied
    assert check_dataset(out).ok
    assert f"{len(expected)} scans (0 there before)" in printed and "hard-linked" in printed


def test_merge_adds_to_an_existing_set_and_refuses_a_scan_twice(two_sets, tmp_path):
    first, second = _copy(two_sets, tmp_path)
    before = (first / "manifest.jsonl").read_text()
    result = merge_datasets(first, [second])
    assert result.kept == len(before.splitlines())
    assert len(read_manifest(first / "manifest.jsonl")) == result.kept + len(read_manifest(second / "manifest.jsonl"))
    with pytest.raises(Exception, match="found twice"):
        merge_datasets(first, [second])  # the second set's ids are in it now


def test_nothing_is_written_when_ids_repeat_files_are_missing_or_names_clash(two_sets, tmp_path, capsys):
    first, second = _copy(two_sets, tmp_path)
    out = tmp_path / "out"
    assert main(["data", "merge", str(out), str(first), str(first)]) == 2
    assert "found twice" in capsys.readouterr().err and not out.exists()
    victim = record_files(read_manifest(second / "manifest.jsonl")[0])[0]
    (second / victim).unlink()
    assert main(["data", "merge", str(out), str(first), str(second)]) == 2
    assert "missing" in capsys.readouterr().err and not out.exists()
    clash = tmp_path / "clash"
    shutil.copytree(two_sets[1], clash)
    manifest = (clash / "manifest.jsonl").read_text()
    (clash / "manifest.jsonl").write_text(manifest.replace('"scan_id":"b-', '"scan_id":"c-'))  # new ids, same names
    name = record_files(read_manifest(clash / "manifest.jsonl")[0])[0]
    (clash / name).write_bytes((clash / name).read_bytes() + b"\0")  # the same name, another file
    assert main(["data", "merge", str(out), str(two_sets[1]), str(clash)]) == 2
    assert "different contents" in capsys.readouterr().err and not out.exists()
    assert main(["data", "merge", str(first), str(first)]) == 2
    assert "cannot also be a source" in capsys.readouterr().err


def test_move_empties_the_sources(two_sets, tmp_path):
    first, second = _copy(two_sets, tmp_path)
    n = len(read_manifest(first / "manifest.jsonl")) + len(read_manifest(second / "manifest.jsonl"))
    result = merge_datasets(tmp_path / "train", [first, second], move=True)
    assert result.moved > 0 and result.linked == result.copied == 0
    assert len(read_manifest(tmp_path / "train" / "manifest.jsonl")) == n
    assert not first.exists() and not second.exists()
    assert check_dataset(tmp_path / "train").ok
