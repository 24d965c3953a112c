"""A scan's own scanner profile and its pseudo-colour image: the one rule every caller uses.

A dual-energy scan is coloured with the profile its sidecar names when parcelscan ships it, else the
default profile; a profile file the user names wins. Readers, render, evaluation, heatmaps and the review
app all call these two functions, so an operator image looks the same wherever it is made.
"""

from __future__ import annotations

import numpy as np

from parcelscan.datasets.physics.profile import DEFAULT_PROFILE_NAME, PROFILES_DIR, load_profile
from parcelscan.datasets.physics.pseudocolor import pseudocolor_from_pair
from parcelscan.datasets.scans.scanfile import Scan


def profile_for(scan: Scan, profile_path: str | None = None):
    """The profile named by the user, else the scan's own shipped profile, else the default."""
    if profile_path:
        return load_profile(profile_path)
    name = scan.meta.get("profile")
    if isinstance(name, str) and (PROFILES_DIR / f"{name}.toml").exists():
        return load_profile(name)
    return load_profile(DEFAULT_PROFILE_NAME)


def pseudocolor_of(scan: Scan, profile_path: str | None = None) -> np.ndarray:
    """The scan's 8-bit RGB operator image under :func:`profile_for` (dual-energy scans only)."""
    return pseudocolor_from_pair(scan.low, scan.high, profile_for(scan, profile_path))
