"""Shared fixtures: the default profile and its forward model are built once per session."""

from __future__ import annotations

import pytest

from parcelscan.datasets.forward import ForwardModel, forward_model
from parcelscan.datasets.profile import ScannerProfile, default_profile


@pytest.fixture(scope="session")
def profile() -> ScannerProfile:
    return default_profile()


@pytest.fixture(scope="session")
def model(profile: ScannerProfile) -> ForwardModel:
    return forward_model(profile)
