"""The physics tables a station ships instead of xraydb and spekpy: ``tables/<profile>.npz``.

Each shipped scanner profile (``profiles/*.toml``) has one file: ``format`` (``TABLE_FORMAT``), ``profile`` (its
name), ``physics_key`` (``physics_key_text``: what determines the channel spectra) and the tables the station path
reads (``tablegen.TABLE_BUILDERS``: the pseudo-colour calibration, …), computed from the physics by
``parcelscan physics --write-tables``. ``shipped_tables`` gives a profile's tables only when the file was made for
that very physics; otherwise the caller computes from the physics, which needs the ``[sim]`` extra
(``require_physics`` says so in one line instead of a traceback).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from parcelscan.datasets.physics.profile import ScannerProfile
from parcelscan.errors import ParcelscanError

TABLE_FORMAT = 1
TABLES_DIR = Path(__file__).resolve().parent / "tables"
PHYSICS_MODULES = ("xraydb", "spekpy")


def physics_key_text(profile: ScannerProfile) -> str:
    """The profile's physics key as text (``ScannerProfile.physics_key``): what a table was computed for."""
    return repr(profile.physics_key())


def table_path(profile_name: str, directory: Path = TABLES_DIR) -> Path:
    return Path(directory) / f"{profile_name}.npz"


@functools.lru_cache(maxsize=16)
def _load(path: Path, physics_key: str, name: str) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: np.array(data[key]) for key in data.files}
    except (OSError, ValueError):
        return None
    if int(arrays.pop("format", -1)) != TABLE_FORMAT:
        return None
    if str(arrays.pop("profile", "")) != name or str(arrays.pop("physics_key", "")) != physics_key:
        return None
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def shipped_tables(profile: ScannerProfile, directory: Path = TABLES_DIR) -> dict[str, np.ndarray] | None:
    """The shipped tables of ``profile`` (read-only arrays by name), or None when no file was made for its
    physics (another profile, a changed profile, a missing or unreadable file)."""
    path = table_path(profile.name, directory)
    if not path.is_file():
        return None
    return _load(path, physics_key_text(profile), profile.name)


def check_physics_installed() -> None:
    """Raise ModuleNotFoundError (named, so ``parcelscan`` answers with the ``[sim]`` install advice) when the
    physics libraries are missing: a verb that needs them refuses before it creates anything."""
    for module in PHYSICS_MODULES:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)


def physics_available() -> bool:
    """Whether the physics libraries (the ``[sim]`` extra) can be imported here."""
    try:
        check_physics_installed()
    except ModuleNotFoundError:
        return False
    return True


def require_physics(what: str) -> None:
    """Raise a one-line error when the physics libraries (the ``[sim]`` extra) are not installed."""
    if not physics_available():
        raise ParcelscanError(f"{what} is not among the shipped physics tables and computing it needs the physics "
                              f"libraries (xraydb, spekpy): pip install 'parcelscan[sim]'")
