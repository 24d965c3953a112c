"""The sample scans shipped with the repository: examples/scans/ (station files, masks, manifest.jsonl).

    python examples/make_samples.py [--seed 31] [--out examples/scans]

One positive of every concealment scenario and two clear parcels (one carrying a scenario's benign
look-alike), from the default profile, exactly as ``parcelscan simulate`` writes them (same ids, files,
sidecars and manifest lines; only the PNG compression is raised, to keep the repository small). Scans are
chosen by their plans (label, scenario) among the compact parcels, never by how they look.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

# compact parcels keep the shipped files small (the full set has every size); the sack and bottle
# scenarios travel in medium and large boxes only
MAX_ROWS = {"water_bottle": 460, "tile_ingredients": 390}
MAX_ROWS_OTHERS = 300


def choose(config, lookalikes: int = 1, plain: int = 1) -> list[int]:
    from parcelscan.datasets.simulator.concealments import SCENARIOS
    from parcelscan.datasets.simulator.parcel import build_scene, plan_for

    wanted = {("suspect", s): 1 for s in SCENARIOS}
    wanted[("lookalike", None)] = lookalikes
    wanted[("clear", None)] = plain
    picked, seen_lookalikes, index = [], set(), 0
    while any(wanted.values()):
        plan = plan_for(config, index)
        key = ("suspect", plan.scenario) if plan.label == "suspect" else (
            ("lookalike", None) if plan.lookalike else ("clear", None))
        fresh = plan.lookalike not in seen_lookalikes
        if wanted.get(key, 0) > 0 and (key[0] != "lookalike" or fresh):
            limit = MAX_ROWS.get(plan.scenario, MAX_ROWS.get(plan.lookalike, MAX_ROWS_OTHERS))
            if build_scene(config, index).belt.grid.rows <= limit:
                wanted[key] -= 1
                picked.append(index)
                seen_lookalikes.add(plan.lookalike)
        index += 1
    return sorted(picked)


def main(argv: list[str] | None = None) -> int:
    import cv2

    from parcelscan.datasets.manifest import MANIFEST_NAME, write_manifest
    from parcelscan.datasets.physics.profile import default_profile
    from parcelscan.datasets.simulator.generate import make_record, write_simulated
    from parcelscan.datasets.simulator.parcel import SimConfig, simulate_scan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "scans"))
    args = parser.parse_args(argv)
    config = SimConfig(default_profile(), seed=args.seed)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    records = []
    for index in choose(config):
        scan = simulate_scan(config, index)
        files = write_simulated(scan, out, config.profile, png_params=[cv2.IMWRITE_PNG_COMPRESSION, 9])
        records.append(make_record(scan, files))
    write_manifest(out / MANIFEST_NAME, records)
    size = sum(p.stat().st_size for p in out.iterdir())
    for record in records:
        what = f"{record.scenario} {record.material} {record.mass_g} g" if record.label == "suspect" else (
            f"clear, {record.lookalike} look-alike ({record.provenance['fill']})" if record.lookalike else "clear")
        print(f"{record.scan_id}: {what}")
    print(f"{len(records)} scans in {out} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
