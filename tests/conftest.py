"""Shared fixtures: the default profile and its forward model are built once per session."""

from __future__ import annotations

import pytest

from parcelscan.datasets.physics.forward import ForwardModel, forward_model
from parcelscan.datasets.physics.profile import ScannerProfile, default_profile


@pytest.fixture(scope="session")
def profile() -> ScannerProfile:
    return default_profile()


@pytest.fixture(scope="session")
def model(profile: ScannerProfile) -> ForwardModel:
    return forward_model(profile)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from two threads, and on a shared CPU spinning OpenMP threads slow them
    tenfold; the training code itself keeps PyTorch's default. Test modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture()
def unsplit_copy(tmp_path):
    """``unsplit_copy(dataset_dir) -> copy``: the dataset copied under tmp_path with every split removed
    from its manifest, to check that commands needing splits refuse it."""
    import shutil

    from parcelscan.datasets.manifest import read_manifest, write_manifest

    def make(source):
        copy = tmp_path / "unsplit"
        shutil.copytree(source, copy)
        records = read_manifest(copy)
        for record in records:
            record.split = None
        write_manifest(copy / "manifest.jsonl", records)
        return copy

    return make
