"""The scanner profile: what a dual-energy line scanner is made of, loadable from TOML or YAML.

A line scanner has a tungsten tube with filtration, a fan beam (modelled here as a parallel
projection: each detector channel sees a straight ray through the parcel, no magnification), and a
dual-layer detector: a thin front scintillator (low-energy channel), a metal filter, and a thick rear
scintillator (high-energy channel). Pixels integrate deposited energy.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parcelscan.errors import ParcelscanError

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE_NAME = "postal-dual-140"


@dataclass(frozen=True)
class Layer:
    """A slab of material in the beam: a filter or a scintillator."""

    material: str
    thickness_mm: float


@dataclass(frozen=True)
class ScannerProfile:
    """Everything about a scanner that changes what its images look like."""

    name: str = DEFAULT_PROFILE_NAME
    tube_kv: float = 140.0
    anode_angle_deg: float = 12.0
    filtration: tuple[Layer, ...] = (Layer("Al", 2.5),)
    low_layer: Layer = Layer("CsI", 0.3)
    interlayer_filter: Layer = Layer("Cu", 0.5)
    high_layer: Layer = Layer("CsI", 3.0)
    pixel_pitch_mm: float = 1.0
    channels: int = 640
    air_quanta_per_pixel: float = 20000.0
    electronic_noise_quanta: float = 4.0
    blur_sigma_px: float = 0.7
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        problems = []
        if not 20.0 <= self.tube_kv <= 450.0:
            problems.append(f"tube_kv must be within 20-450 kV, got {self.tube_kv}")
        if not 1.0 <= self.anode_angle_deg <= 45.0:
            problems.append(f"anode_angle_deg must be within 1-45, got {self.anode_angle_deg}")
        for layer in (*self.filtration, self.low_layer, self.interlayer_filter, self.high_layer):
            if layer.thickness_mm < 0:
                problems.append(f"{layer.material} thickness_mm must be >= 0, got {layer.thickness_mm}")
        if self.low_layer.thickness_mm <= 0 or self.high_layer.thickness_mm <= 0:
            problems.append("both scintillator layers need a positive thickness")
        if self.pixel_pitch_mm <= 0:
            problems.append(f"pixel_pitch_mm must be > 0, got {self.pixel_pitch_mm}")
        if not 8 <= self.channels <= 8192:
            problems.append(f"channels must be within 8-8192, got {self.channels}")
        if self.air_quanta_per_pixel <= 0:
            problems.append(f"air_quanta_per_pixel must be > 0, got {self.air_quanta_per_pixel}")
        if self.electronic_noise_quanta < 0 or self.blur_sigma_px < 0:
            problems.append("electronic_noise_quanta and blur_sigma_px must be >= 0")
        if problems:
            raise ParcelscanError(f"invalid scanner profile {self.name!r}: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("extra")
        data["filtration"] = [dataclasses.asdict(layer) for layer in self.filtration]
        return data

    def physics_key(self) -> tuple:
        """What determines the channel spectra (not noise, blur or geometry): a cache key."""
        return (self.tube_kv, self.anode_angle_deg, self.filtration, self.low_layer,
                self.interlayer_filter, self.high_layer)

    def with_changes(self, **changes: Any) -> ScannerProfile:
        return dataclasses.replace(self, **changes)


def _layer(value: Any, key: str, source: str) -> Layer:
    if not isinstance(value, dict) or set(value) != {"material", "thickness_mm"}:
        raise ParcelscanError(f"{source}: {key} must be a table with 'material' and 'thickness_mm'")
    try:
        return Layer(str(value["material"]), float(value["thickness_mm"]))
    except (TypeError, ValueError) as error:
        raise ParcelscanError(f"{source}: {key}.thickness_mm must be a number") from error


def profile_from_dict(data: dict[str, Any], source: str = "profile") -> ScannerProfile:
    """Build a profile from a parsed TOML/YAML mapping; unknown keys are an error (typos matter)."""
    if not isinstance(data, dict):
        raise ParcelscanError(f"{source}: a scanner profile must be a mapping of keys to values")
    known = {f.name for f in dataclasses.fields(ScannerProfile)} - {"extra"}
    unknown = set(data) - known
    if unknown:
        raise ParcelscanError(f"{source}: unknown profile key(s): {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "filtration":
            if not isinstance(value, list):
                raise ParcelscanError(f"{source}: filtration must be a list of layers")
            kwargs[key] = tuple(_layer(v, key, source) for v in value)
        elif key in ("low_layer", "interlayer_filter", "high_layer"):
            kwargs[key] = _layer(value, key, source)
        elif key == "name":
            kwargs[key] = str(value)
        elif key == "channels":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ParcelscanError(f"{source}: channels must be an integer")
            kwargs[key] = value
        else:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ParcelscanError(f"{source}: {key} must be a number, got {value!r}")
            kwargs[key] = float(value)
    return ScannerProfile(**kwargs)


def load_profile(path_or_name: str | Path | None = None) -> ScannerProfile:
    """Load a profile from a .toml/.yaml file, or a shipped profile by name (default: postal-dual-140)."""
    if path_or_name is None:
        path_or_name = DEFAULT_PROFILE_NAME
    path = Path(path_or_name)
    if not path.exists() and (PROFILES_DIR / f"{path_or_name}.toml").exists():
        path = PROFILES_DIR / f"{path_or_name}.toml"
    if not path.is_file():
        raise ParcelscanError(f"scanner profile not found: {path_or_name}")
    stat = path.stat()
    return _parse_profile(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _parse_profile(path_text: str, mtime_ns: int, size: int) -> ScannerProfile:
    """``load_profile``'s parse, once per file version (path, mtime, size): the station weighs every declared
    parcel under ``default_profile()``, and parsing the TOML each time cost ~0.7 ms of a scan (a frozen profile is
    shared safely; an edited file is parsed again)."""
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ParcelscanError(f"malformed profile file {path}: {error}") from error
    except Exception as error:  # yaml.YAMLError and friends
        raise ParcelscanError(f"malformed profile file {path}: {error}") from error
    return profile_from_dict(data, source=str(path))


def default_profile() -> ScannerProfile:
    return load_profile(DEFAULT_PROFILE_NAME)
