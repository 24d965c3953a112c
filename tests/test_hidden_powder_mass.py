"""``examples/hidden_powder_mass.py`` — the share of a concealment's powder mass behind a stopped beam — reads
the scene rebuilt from the scan's seed: that rebuild must be the scan's own (its powder mass is the manifest's,
its stopped pixels those of the written image), and a set the simulator of today would not remake is refused
rather than measured wrong."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parcelscan.datasets.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("hidden_powder_mass", ROOT / "examples" / "hidden_powder_mass.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def suspects(tmp_path_factory):
    out = tmp_path_factory.mktemp("hidden")
    subprocess.run([sys.executable, "-m", "parcelscan", "simulate", "--out", str(out), "--count", "3", "--seed", "21",
                    "--suspect-fraction", "1", "--scenarios", "machine_part", "mail_pouch", "--workers", "1",
                    "--no-operator-image", "--no-progress"], check=True, capture_output=True)
    return out, [r for r in read_manifest(out / "manifest.jsonl") if r.mass_fraction == 1.0]


def test_the_rebuilt_scene_is_the_scans_own_and_its_hidden_share_is_a_share(suspects):
    example = _example()
    root, records = suspects
    shares = []
    for record in records:
        config = example.config_of(record)
        share = example.hidden_mass_share(root, record, config)  # raises if the rebuilt mass is not the manifest's
        assert 0.0 <= share <= 1.0
        mask = np.asarray(Image.open(root / record.mask)) > 0
        high = np.asarray(Image.open(root / record.files["high"]))
        stopped_in_mask = bool((high[mask] <= example.OPAQUE_GREY_LEVEL).any())
        assert (share > 0.0) == stopped_in_mask  # powder under stopped pixels exactly where the mask meets them
        shares.append(share)
    # seed 21 makes a casting whose powder lies almost all behind its walls and two mail pouches in the open
    assert max(shares) > 0.5 and min(shares) == 0.0


def test_a_set_made_by_another_generator_or_with_another_mass_is_refused(suspects):
    example = _example()
    root, records = suspects
    record = records[0]
    older = dataclasses.replace(record, provenance={**record.provenance, "generator_version": "scene-0"})
    with pytest.raises(ValueError, match="generator_version"):
        example.config_of(older)
    heavier = dataclasses.replace(record, mass_g=record.mass_g * 1.5)
    with pytest.raises(ValueError, match="rebuilt scene holds"):
        example.hidden_mass_share(root, heavier, example.config_of(record))


def test_the_mass_error_counts_a_verdict_without_grams_as_a_miss(suspects, tmp_path):
    example = _example()
    _, records = suspects
    first, second = records[0], records[-1]
    verdicts = tmp_path / "verdicts.jsonl"
    verdicts.write_text(f'{{"scan_id": "{first.scan_id}", "powder_mass_g": [{first.mass_g / 2}]}}\n'
                        f'{{"scan_id": "{second.scan_id}", "verdict": "clear"}}\n')
    errors = example.mass_errors(verdicts, [first, second] if first is not second else [first])
    assert errors[first.scan_id] == pytest.approx(0.5)
    if first is not second:
        assert errors[second.scan_id] == 1.0
