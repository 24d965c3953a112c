"""How much of each concealment's powder lies behind a stopped beam: the mass a scan cannot weigh.

Where the high-energy transmission is at the opaque level (about 22 grey levels of 65,535, A_high ≥
``pseudocolor.OPAQUE_A_HIGH``) the beam is stopped: what lies there beyond the opaque level adds nothing to either
reading. The station counts such pixels at that level and writes the body's grams as a lower bound ("≥"). How far
below the truth that bound lies depends on how much of the powder's *mass* is there — which no scan shows, but the
simulator knows: this rebuilds each pure-powder suspect's scene from its seed (``parcel.build_scene``, the same
streams that made the scan; its per-pixel areal density of the concealed powder) and prints, per scenario, the
share of the true powder mass lying under stopped pixels of the written scan.

Given the station's verdicts, it also splits the declaration issue's mass error (|Σ ``powder_mass_g`` − true| /
true, a suspect without an estimate counting as 100 %, as ``parcelscan evaluate`` computes it) by that hidden
share: where little is hidden the error is the estimator's; where most is hidden no measurement can be within
30 % of the truth — only a guess of what lies behind the metal could.

    python examples/hidden_powder_mass.py DATA_DIR [--verdicts VERDICTS.jsonl]

Every scan's scene is rebuilt only when the set's generator version and profile are today's (the scene would
differ otherwise), and each rebuilt scene's powder mass is checked against the manifest's (within 1 %).
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np
from PIL import Image

from parcelscan.datasets.manifest import ManifestRecord, read_manifest
from parcelscan.datasets.physics.profile import load_profile
from parcelscan.datasets.simulator.parcel import SimConfig, build_scene
from parcelscan.inference.opaque import OPAQUE_GREY_LEVELS
from parcelscan.training.evaluate import mass_error, read_verdicts

OPAQUE_GREY_LEVEL = OPAQUE_GREY_LEVELS  # the station's stopped-beam level (A_high >= 8: 22 of 65535)
HIDDEN_BANDS = (0.0, 0.05, 0.3, 0.7)  # lower edges of the hidden-mass-share bands
MASS_TOLERANCE = 0.30  # the declaration issue's bar: median error ≤ 30 %


def config_of(record: ManifestRecord) -> SimConfig:
    """The run settings a simulated scan was made with, from its provenance; ValueError where today's simulator
    would not make the same scene (another generator version or profile)."""
    p = record.provenance
    config = SimConfig(profile=load_profile(p["profile"]), seed=int(p["seed"]),
                       suspect_fraction=float(p["suspect_fraction"]), scenarios=tuple(p["scenarios"]),
                       mix=p.get("mix", "stress"), operator_image=bool(p.get("operator_image", True)))
    today = config.identity()
    for key in ("generator_version", "profile_sha256", "postal_law"):
        if key in today and today[key] != p.get(key):
            raise ValueError(f"{record.scan_id}: made with {key} {p.get(key)!r}, today's is {today[key]!r}")
    return config


def hidden_mass_share(root: Path, record: ManifestRecord, config: SimConfig) -> float:
    """Share of the suspect's true powder mass under pixels whose high-channel grey level is at or below the opaque
    level in the written scan."""
    scene = build_scene(config, int(record.provenance["index"]))
    powder_g_cm2 = scene.raster.target_g_cm2.astype(np.float64)
    total_g_cm2 = float(powder_g_cm2.sum())
    total_g = total_g_cm2 * (scene.belt.grid.pitch_mm / 10.0) ** 2
    if record.mass_g and abs(total_g - record.mass_g) > 0.01 * record.mass_g:
        raise ValueError(f"{record.scan_id}: the rebuilt scene holds {total_g:.1f} g of powder, the manifest "
                         f"{record.mass_g} g")
    high = np.asarray(Image.open(root / record.files["high"]))
    if high.shape != powder_g_cm2.shape:
        raise ValueError(f"{record.scan_id}: the rebuilt scene is {powder_g_cm2.shape}, the scan {high.shape}")
    stopped = high <= OPAQUE_GREY_LEVEL
    return float(powder_g_cm2[stopped].sum() / max(total_g_cm2, 1e-12))


def band_of(share: float) -> str:
    lower = max(edge for edge in HIDDEN_BANDS if share >= edge)
    index = HIDDEN_BANDS.index(lower)
    upper = HIDDEN_BANDS[index + 1] if index + 1 < len(HIDDEN_BANDS) else 1.0
    return f"{lower:.2f}-{upper:.2f}"


def mass_errors(path: Path, records: list[ManifestRecord]) -> dict[str, float]:
    """The evaluate report's mass error per pure-powder suspect (``evaluate.mass_error``: 1.0 where the verdict has
    no estimate)."""
    verdicts, _, _, _ = read_verdicts(path)
    return {r.scan_id: mass_error(verdicts[r.scan_id], r.mass_g) for r in records if r.scan_id in verdicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--verdicts", type=Path, help="inspect output: the mass error by hidden share")
    args = parser.parse_args()
    records = [r for r in read_manifest(args.data / "manifest.jsonl")
               if r.label == "suspect" and r.mass_fraction == 1.0 and r.mass_g]
    configs: dict[tuple, SimConfig] = {}
    hidden: dict[str, float] = {}
    for record in records:
        p = record.provenance
        key = (p.get("profile"), p.get("seed"), p.get("suspect_fraction"), tuple(p.get("scenarios", ())), p.get("mix"))
        if key not in configs:
            configs[key] = config_of(record)
        hidden[record.scan_id] = hidden_mass_share(args.data, record, configs[key])
    by_scenario = collections.defaultdict(list)
    for record in records:
        by_scenario[record.scenario].append(hidden[record.scan_id])
    by_scenario["all"] = list(hidden.values())
    print(f"{len(records)} pure-powder suspects; share of the true powder mass behind a stopped beam "
          f"(high ≤ {OPAQUE_GREY_LEVEL:.0f}/65535):")
    print(f"{'scenario':18s} {'n':>5s} {'median':>7s} {'> 0.3':>7s} {'> 0.5':>7s} {'> 0.7':>7s}")
    for scenario, values in sorted(by_scenario.items(), key=lambda item: (item[0] == "all", item[0])):
        v = np.asarray(values)
        print(f"{scenario:18s} {len(v):5d} {np.median(v):7.2f} " + " ".join(
            f"{100 * np.mean(v > edge):6.1f}%" for edge in (0.3, 0.5, 0.7)))
    if not args.verdicts:
        return
    errors = mass_errors(args.verdicts, records)
    print(f"\nmass error of the verdicts' powder_mass_g by hidden share (within {MASS_TOLERANCE:.0%}: the share of "
          "suspects whose error is at most that; no estimate = 100 %):")
    print(f"{'hidden share':14s} {'n':>5s} {'median error':>13s} {'within':>8s} {'no estimate':>12s}")
    bands = collections.defaultdict(list)
    for scan_id, error in errors.items():
        bands[band_of(hidden[scan_id])].append(error)
    bands["all"] = list(errors.values())
    for band, values in sorted(bands.items(), key=lambda item: (item[0] == "all", item[0])):
        v = np.asarray(values)
        print(f"{band:14s} {len(v):5d} {100 * np.median(v):12.1f}% {100 * np.mean(v <= MASS_TOLERANCE):7.1f}% "
              f"{int(np.sum(v == 1.0)):12d}")


if __name__ == "__main__":
    main()
