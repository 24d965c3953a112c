"""The postal table's dense metal objects are the benign kinds that stop the beam, and no ordinary parcel holds one.

``streams.DENSE_METAL_KINDS`` decides which goods the table's 8 % governs. A kind left off the list is drawn as
ordinary goods on top of that share, so the stream's real rate of what the shield alarm sees is not the
table's (postal-2 drew castings, brass fittings, fire steels and solder spools that way: 9.3 % of clear
parcels). The physics decides the list: each kind alone in a cardboard box, through the forward model and the
default shield rule (``inference.opaque``).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.profile import default_profile
from parcelscan.datasets.simulator.contents import BENIGN_KINDS, make_item, place
from parcelscan.datasets.simulator.parcel import (
    Parcel,
    SimConfig,
    _streams,
    build_parcel,
    container_of_kind,
    place_on_belt,
    plan_scan,
)
from parcelscan.datasets.simulator.scene import rasterise
from parcelscan.datasets.simulator.streams import DENSE_METAL_KINDS
from parcelscan.inference.opaque import check_opaque

# dense metal kinds that stop the beam on their own (the rest of the list, hand tools and machinery parts, are
# metal goods mostly thinner than that)
STOPS_THE_BEAM = ("motor", "al_casting", "brass_fittings", "fishing_weights", "carbide_bits", "fire_steel",
                  "solder_spool")


def _alarms(kind: str, draws: int) -> int:
    """Shield alarms of ``draws`` instances of ``kind``, each alone in a box, nominal scanner, default rule."""
    profile = default_profile()
    model = forward_model(profile)
    alarms = 0
    for draw in range(draws):
        rng = np.random.default_rng([6601, draw, sorted(BENIGN_KINDS).index(kind)])
        container = container_of_kind(rng, "box")
        parts = list(container.parts) + place(rng, make_item(rng, kind, container.fit), container.interior,
                                              item_id=0)
        belt = place_on_belt(rng, Parcel(container, parts, None, 1, [kind]), profile)
        raster = rasterise(belt.parts, belt.grid)
        a_low, a_high = model.log_attenuation(raster.materials, raster.areal_g_cm2)
        low, high = model.detect(a_low, a_high, rng, air_quanta_per_pixel=profile.air_quanta_per_pixel,
                                 blur_sigma_px=profile.blur_sigma_px)
        scan = SimpleNamespace(low=low, high=high, kind="dual_energy", row_pitch_mm=profile.pixel_pitch_mm,
                               pixel_pitch_mm=profile.pixel_pitch_mm)
        alarms += check_opaque(scan).alarm
    return alarms


def test_the_dense_list_is_a_subset_of_the_benign_kinds():
    assert set(STOPS_THE_BEAM) <= set(DENSE_METAL_KINDS) <= set(BENIGN_KINDS)


@pytest.mark.slow
@pytest.mark.parametrize("kind", [k for k in BENIGN_KINDS if k not in DENSE_METAL_KINDS])
def test_an_ordinary_kind_alone_never_raises_the_shield_alarm(kind):
    assert _alarms(kind, draws=3) == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", STOPS_THE_BEAM)
def test_a_kind_that_stops_the_beam_is_on_the_dense_list(kind):
    assert _alarms(kind, draws=6) >= 1


def test_ordinary_postal_parcels_hold_no_dense_metal_and_dense_ones_exactly_one():
    """Plans and parcels only (no pixels): the table's share governs every dense metal object."""
    config = SimConfig(default_profile(), seed=6602, suspect_fraction=0.0, mix="postal")
    seen_dense = 0
    for index in range(400):
        plan_rng, parcel_rng = _streams(config, index)[:2]
        plan = plan_scan(plan_rng, config)
        if plan.lookalike is not None:
            continue
        kinds = build_parcel(parcel_rng, plan, config).kinds
        dense = [k for k in kinds if k in DENSE_METAL_KINDS]
        assert len(dense) == (1 if plan.dense_metal else 0), (index, kinds)
        seen_dense += plan.dense_metal
    assert seen_dense > 10
