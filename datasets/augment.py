"""Training augmentation that respects X-ray physics, applied to acquisition planes *before* the log.

Dual-energy planes are air-normalised transmissions T = I/I0 (see ``preprocess.scan_planes``), so each
augmentation is something a real scanner or parcel could do:

* **Belt-speed stretch** along rows (×0.85–1.15): rows are belt positions, so a belt running slower
  or faster than nominal samples the parcel more or less densely along the belt only. Applied first,
  in the scan's own orientation.
* **Flips** (both axes): a parcel placed mirrored, or travelling the other way round. A line scanner's
  projection is the same from either side.
* **90° rotations**: a parcel placed turned on the belt. A rotation swaps the belt and detector axes,
  whose resolution and noise differ slightly (detector blur σ ≈ 0.7 px across channels vs belt-motion
  integration along rows, fan-beam magnification only across channels); after resampling to the 2 mm
  model pitch that anisotropy is well below a pixel, while turned parcels are common — so allowed.
* **Small translation and scale** (±5 %, ×0.9–1.1): placement on the belt and parcel size. New area is
  filled with air (T = 1), the mask with 0. Only *geometry* changes; thicknesses do not.
* **Calibration residuals**, no larger than what the twin labels assume the scanner resolves
  (``physics.signature.ResolutionModel``: air and dark references are taken every scan, so gain drift cancels,
  and the two detector layers drift apart by 0.3 % of R): an attenuation scale common to both channels
  ``T**γ`` (γ within ±1 %: the same matter 1 % thicker or denser, R unchanged), a differential one on the low
  channel only (within ±0.3 %: the layers' R drift), an air-normalisation residual ``T·g``
  (g within ±0.1 % per channel, air then reads 0.999–1.0 after the 16-bit ceiling) and a dark-offset residual
  ``T + o·(1 − T)`` (o within ±0.003 % of I0 — half a quantum of 20,000, a dark reference averaged over ~64
  lines of 4-quanta electronic noise). Why so small, measured (README, "Session 10"): the former ranges (±2 %
  per channel, ±1 %, ±0.3 %) move R by ~3 % — ten times the drift the twin labels allow — and lift a stopped
  beam to a readable one with a random R; trained with them (on tiles) the 4 mm recipe lost 29 points of Pd at
  Pfa 1 % on the stress mix, and applied at test time a ±0.05 % dark offset alone sent 17 of 400 ordinary clear
  parcels to score 1.0.
* **Quantum noise**: a random dose ``N`` (log-uniform, 3000 … the scan's nominal quanta per pixel)
  adds Gaussian noise of variance ``T/N − T/N0`` — exactly what makes a scan taken with ``N`` instead of
  ``N0`` air quanta (Poisson statistics, in its Gaussian limit).
* Transmissions are clipped to [1/65535, 1], what the 16-bit station format can hold.

Never: colour/contrast/gamma jitter, per-channel histogram tricks or anything that would change the
*ratio* of the two energy channels beyond calibration tolerance — that ratio is the material signal.

Pseudo-colour (8-bit RGB operator images): the same geometry (filled with white = air), plus mild JPEG
re-compression and blur as public data sets and other scanners' exports have; no colour jitter (the
hue encodes material class).

Masks receive the identical geometric transforms (nearest neighbour) and nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from parcelscan.datasets.preprocess import TRANSMISSION_FLOOR

DEFAULT_NOMINAL_QUANTA = 20000.0


@dataclass(frozen=True)
class CalibrationResiduals:
    """What a station's calibration leaves, bounded by the twin labels' ``ResolutionModel`` (module docstring).
    Shared by the scan augmentation and ``tile_augment``."""

    air_gain_jitter: float = 0.001  # per channel
    attenuation_gain_jitter: float = 0.01  # common to both channels: R unchanged
    ratio_drift: float = 0.003  # differential (low channel): ResolutionModel.calibration_drift_rel
    offset_jitter: float = 0.00003  # per channel, of I0

    def apply(self, transmission: np.ndarray, rng: np.random.Generator, channel_axis: int) -> np.ndarray:
        """One draw of the residuals on transmissions T whose channels (low energy first) lie on ``channel_axis``:
        ``((T**γ) + o·(1 − T**γ))·g``, γ common to the channels but for the low channel's differential drift."""
        k = transmission.shape[channel_axis]
        shape = [1] * transmission.ndim
        shape[channel_axis] = k
        gamma = np.full(k, rng.uniform(1 - self.attenuation_gain_jitter, 1 + self.attenuation_gain_jitter),
                        np.float32)
        gamma[0] *= np.float32(1 + rng.uniform(-self.ratio_drift, self.ratio_drift))  # the layers drift apart
        offset = rng.uniform(-self.offset_jitter, self.offset_jitter, k).astype(np.float32).reshape(shape)
        gain = rng.uniform(1 - self.air_gain_jitter, 1 + self.air_gain_jitter, k).astype(np.float32).reshape(shape)
        transmission = np.power(np.maximum(transmission, TRANSMISSION_FLOOR), gamma.reshape(shape))
        return (transmission + offset * (1.0 - transmission)) * gain


def lower_dose(transmission: np.ndarray, rng: np.random.Generator, nominal_quanta: float, min_quanta: float,
               scan_pixels_averaged: float = 1.0) -> np.ndarray:
    """T as a dose N drawn log-uniform in [``min_quanta``, ``nominal_quanta``] air quanta per scan pixel would have
    read it: Gaussian noise of variance ``T (1/N − 1/N0)``, divided by the scan pixels one value averages. Shared by
    the scan and ``tile_augment``."""
    quanta = float(np.exp(rng.uniform(np.log(min_quanta), np.log(nominal_quanta))))
    variance = np.clip(transmission, 0.0, 1.0) * (1.0 / quanta - 1.0 / nominal_quanta) / scan_pixels_averaged
    return transmission + np.sqrt(variance) * rng.standard_normal(transmission.shape, dtype=np.float32)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges; defaults are the physical tolerances argued in the module docstring."""

    flip_p: float = 0.5  # per axis
    rot90_p: float = 0.5
    affine_p: float = 0.7
    scale: tuple[float, float] = (0.9, 1.1)
    translate_frac: float = 0.05
    stretch_p: float = 0.8
    belt_stretch: tuple[float, float] = (0.85, 1.15)
    gain_p: float = 0.8
    calibration: CalibrationResiduals = field(default_factory=CalibrationResiduals)
    noise_p: float = 0.7
    min_quanta: float = 3000.0
    jpeg_p: float = 0.3  # pseudo-colour only
    jpeg_quality: tuple[int, int] = (60, 95)
    blur_p: float = 0.2  # pseudo-colour only
    blur_sigma: tuple[float, float] = (0.3, 1.0)


class XrayAugment:
    """``augment(planes (H, W, K) float32, mask (H, W) uint8 | None, rng) -> (planes, mask)``."""

    def __init__(self, input_kind: str = "dual_energy", config: AugmentConfig | None = None):
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never phone home at import
        import albumentations as A
        import cv2

        self.kind = input_kind
        self.config = config or AugmentConfig()
        c = self.config
        self.air = 1.0 if input_kind == "dual_energy" else 255.0
        self.geometry = A.Compose([
            A.HorizontalFlip(p=c.flip_p),
            A.VerticalFlip(p=c.flip_p),
            A.RandomRotate90(p=c.rot90_p),
            A.Affine(scale=c.scale, translate_percent=(-c.translate_frac, c.translate_frac),
                     interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                     border_mode=cv2.BORDER_CONSTANT, fill=self.air, fill_mask=0, p=c.affine_p),
        ])
        self.degrade = None
        if input_kind == "pseudo_color":
            self.degrade = A.Compose([
                A.ImageCompression(quality_range=c.jpeg_quality, p=c.jpeg_p),
                A.GaussianBlur(sigma_limit=c.blur_sigma, blur_limit=0, p=c.blur_p),
            ])

    def __call__(self, planes: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator,
                 nominal_quanta: float = DEFAULT_NOMINAL_QUANTA) -> tuple[np.ndarray, np.ndarray | None]:
        import cv2

        c = self.config
        planes = np.asarray(planes, dtype=np.float32)
        rows, cols = planes.shape[:2]
        work_mask = np.zeros((rows, cols), np.uint8) if mask is None else (np.asarray(mask) > 0).astype(np.uint8)
        # 1. belt-speed stretch along rows, in the scan's own orientation
        if rng.random() < c.stretch_p:
            factor = rng.uniform(*c.belt_stretch)
            new_rows = max(8, round(rows * factor))
            planes = cv2.resize(planes, (cols, new_rows), interpolation=cv2.INTER_LINEAR)
            if planes.ndim == 2:
                planes = planes[..., None]
            work_mask = cv2.resize(work_mask, (cols, new_rows), interpolation=cv2.INTER_NEAREST)
        # 2. flips, 90° rotations, translation and scale (albumentations, seeded from our rng)
        if self.kind == "pseudo_color":
            planes = np.clip(np.rint(planes), 0, 255).astype(np.uint8)
        self.geometry.set_random_seed(int(rng.integers(2**31)))
        out = self.geometry(image=planes, mask=work_mask)
        planes, work_mask = out["image"], out["mask"]
        if self.kind == "pseudo_color":
            if self.degrade is not None:
                self.degrade.set_random_seed(int(rng.integers(2**31)))
                planes = self.degrade(image=np.ascontiguousarray(planes))["image"]
            return planes.astype(np.float32), (work_mask if mask is not None else None)
        # 3. calibration residual: per-channel gain and offset in transmission
        planes = np.array(planes, dtype=np.float32)
        if rng.random() < c.gain_p:
            planes = c.calibration.apply(planes, rng, channel_axis=-1)
        # 4. fewer quanta: add the variance a lower dose would have had
        if rng.random() < c.noise_p and nominal_quanta > c.min_quanta:
            planes = lower_dose(planes, rng, nominal_quanta, c.min_quanta)
        planes = np.clip(planes, TRANSMISSION_FLOOR, 1.0).astype(np.float32)
        return planes, (work_mask if mask is not None else None)
