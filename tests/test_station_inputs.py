"""What the station takes as a scan, however it is named (issue 11 item 4, issue 15 part 2): a directory, a shell
glob ``DIR/*`` and a stdin list give the same verdicts, once per scan; companions are silent; unknown files are
one stderr line with the exit code unchanged; a scan part that is not a regular file (FIFO, dangling or looping
link, directory) is that scan's manual inspection — never a crash that loses the run.

Runs the real CLI with the shipped default model on copies of the sample scans (no torch needed)."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from parcelscan.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "scans"


@pytest.fixture()
def station(tmp_path, monkeypatch):
    monkeypatch.setenv("PARCELSCAN_MODEL_DIR", str(tmp_path / "empty-store"))  # the shipped default model
    folder = tmp_path / "scans"
    shutil.copytree(EXAMPLES, folder)
    return folder


def _run(args, capsys, monkeypatch, stdin: str | None = None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["inspect", *map(str, args)])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines() if line.strip()], captured.err


def _by_id(lines: list[dict]) -> dict[str, str]:
    return {v["scan_id"]: v["verdict"] for v in lines}


def test_a_glob_and_a_stdin_list_inspect_each_scan_once_like_the_directory(station, capsys, monkeypatch):
    (station / "notes.txt").write_text("shift log\n")
    (station / "stats.json").write_text("{}")
    code_dir, by_dir, err_dir = _run([station], capsys, monkeypatch)
    assert len(by_dir) == 7 and code_dir in (0, 1)
    files = sorted(station.iterdir())
    assert len(files) == 36  # 7 scans (low, high, sidecar, rgb; 5 masks), manifest.jsonl, stats.json, notes.txt
    code_glob, by_glob, err_glob = _run(files, capsys, monkeypatch)
    monkeypatch.chdir(station)  # `ls DIR | parcelscan inspect -` run where the files are
    code_ls, by_ls, err_ls = _run(["-"], capsys, monkeypatch, stdin="".join(f"{p.name}\n" for p in files))
    for code, lines, err in ((code_dir, by_dir, err_dir), (code_glob, by_glob, err_glob), (code_ls, by_ls, err_ls)):
        assert len(lines) == 7 and _by_id(lines) == _by_id(by_dir)
        assert code == code_dir  # the unknown file leaves the exit code alone
        notes = [line for line in err.splitlines() if "notes.txt" in line]
        assert len(notes) == 1 and "not a scan file; ignored" in notes[0]
        assert "manifest" not in err and "stats.json" not in err and "_mask" not in err and "no scans" not in err
    assert all(v["verdict"] != "manual_inspection" for v in by_glob)


@pytest.mark.parametrize("make", ["loop", "fifo", "dangling", "directory"])
def test_an_unreadable_scan_part_is_manual_inspection_and_the_run_goes_on(station, capsys, monkeypatch, make):
    """Issue 15: a symbolic link loop named as an argument crashed the run (RuntimeError, exit 1, every verdict
    lost). Now that scan is manual_inspection with the reason, and the scans named before and after keep theirs."""
    bad = station / "sim31-000074_high.png"
    bad.unlink()
    if make == "loop":
        bad.symlink_to(bad.name)  # points at itself
    elif make == "fifo":
        os.mkfifo(bad)
    elif make == "dangling":
        bad.symlink_to(station / "gone.png")
    else:
        bad.mkdir()
    before, after = station / "sim31-000077_low.png", station / "sim31-000141_low.png"
    for args, stdin in (([before, bad, after], None), (["-"], f"{before}\n{bad}\n{after}\n"), ([station], None)):
        code, lines, err = _run(args, capsys, monkeypatch, stdin)
        verdicts = {v["scan_id"]: v for v in lines}
        assert verdicts["sim31-000074"]["verdict"] == "manual_inspection"
        assert "not a regular file" in verdicts["sim31-000074"]["error"]
        assert verdicts["sim31-000077"]["verdict"] in ("clear", "suspect")
        assert verdicts["sim31-000141"]["verdict"] in ("clear", "suspect")
        assert code == 2 and "Traceback" not in err and "RuntimeError" not in err


def test_a_named_link_loop_with_no_scan_name_is_one_line_not_a_crash(station, capsys, monkeypatch):
    loop = station / "loop"
    loop.symlink_to("loop")
    code, lines, err = _run([loop, station / "sim31-000077_low.png"], capsys, monkeypatch)
    assert [v["scan_id"] for v in lines] == ["sim31-000077"] and code in (0, 1)
    assert "loop: not a scan file (a symbolic link loop); ignored" in err


def test_the_station_path_never_imports_torch(tmp_path):
    """A whole `parcelscan inspect` run (reading, gates, shield check, model) in a fresh interpreter: no torch, no
    physics libraries (spekpy, xraydb), no matplotlib — imports at module top must keep the station light."""
    import subprocess

    code = ("import sys\nfrom parcelscan.cli import main\n"
            f"code = main(['inspect', {str(EXAMPLES)!r}, '--quiet'])\n"
            "heavy = sorted(m for m in ('torch', 'spekpy', 'xraydb', 'matplotlib', 'fastapi') if m in sys.modules)\n"
            "print('HEAVY', heavy, code, file=sys.stderr)\n")
    env = {**os.environ, "PARCELSCAN_MODEL_DIR": str(tmp_path / "empty-store")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "HEAVY [] 1" in result.stderr, result.stderr[-2000:]


def test_a_stdin_list_of_names_that_are_not_there_is_one_manual_inspection_per_scan(station, capsys, monkeypatch,
                                                                                    tmp_path):
    """`ls DIR | parcelscan inspect -` run elsewhere: the names do not resolve. Each named scan is reported once
    (not once per file), as manual inspection — nothing is dropped, nothing multiplied."""
    names = "".join(f"{p.name}\n" for p in sorted(station.iterdir()))
    monkeypatch.chdir(tmp_path)
    code, lines, err = _run(["-"], capsys, monkeypatch, stdin=names)
    assert code == 2 and len(lines) == 7 and all(v["verdict"] == "manual_inspection" for v in lines)
    assert len({v["scan_id"] for v in lines}) == 7 and "Traceback" not in err
