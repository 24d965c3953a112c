"""Physical augmentation of one prepared dual-energy tile: the cached CPU recipe's counterpart of ``augment``.

``augment.XrayAugment`` works on the acquisition planes before resampling: 50–90 ms of CPU per scan, so the
shipped CPU recipes turn it off and cache prepared scans — and then every epoch shows the network the same
noise realisation, the same calibration and the same belt speed of each parcel, which it can memorise (the
recipe on 9,600 scans overfitted after ~7 epochs). This module applies the same physics to the one tile a
training item uses, after the cache, in ~3 ms:

* **Calibration residuals**, as ``XrayAugment`` and bounded as it is by what the twin labels assume the scanner
  resolves (``physics.signature.ResolutionModel``): an attenuation scale common to both channels ``T**γ``
  (±1 %: the same matter a little thicker or denser, R unchanged), a differential one on the low channel
  (±0.3 % of R), an air-normalisation residual ``T·g`` (±0.1 % per channel, clipped to the 16-bit ceiling
  T ≤ 1) and a dark-offset residual ``T + o·(1 − T)`` (±0.003 % of I0). The first version used the scan
  augmentation's former ranges (±2 % per channel, ±1 %, ±0.3 %); trained with them the 4 mm recipe lost 29
  points of Pd at Pfa 1 % on the stress mix (README, "Session 10").
* **Quantum noise of a lower dose**: a random dose N (log-uniform between ``min_quanta`` and the scan's
  nominal air quanta N0 per scan pixel) adds Gaussian noise of variance ``(T/N − T/N0) / b`` in transmission,
  where b is the number of scan pixels a model pixel averages (``PreparedScan.scale``): what the same parcel
  would read at dose N, in the Gaussian limit of Poisson statistics, after the preprocessing's area average.
* **Detector blur**: a Gaussian of σ ≤ ``max_blur_px`` model pixels in transmission — a detector with a softer
  line-spread function than the simulator drew (its blur is 0.5–1.0 scan pixels, a fraction of a model pixel).
* **Belt-speed stretch** along rows (×0.85–1.15 about the tile's centre): a belt running slower or faster
  samples the parcel more or less densely along the belt only. The mask follows (nearest neighbour); what
  leaves the tile leaves it, and the tile's label follows its mask.

``a_excess`` is then recomputed from the augmented a_low and a_high by the preprocessing's own
``channels_from_planes``, so the channels stay one physical measurement. Pixels outside the scan (the tile's
padding) stay air. Never: contrast, gamma or colour jitter of the normalised channels, or anything that moves
the ratio of the two channels beyond calibration tolerance — that ratio is the material signal.

Dual-energy tiles only: a pseudo-colour tile is an 8-bit rendering whose transmissions cannot be recovered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from parcelscan.datasets.augment import CalibrationResiduals, lower_dose
from parcelscan.datasets.preprocess import TRANSMISSION_FLOOR, PreprocessSpec, channels_from_planes
from parcelscan.errors import ParcelscanError


@dataclass(frozen=True)
class TileAugmentConfig:
    """Probabilities and ranges; the calibration and dose ranges are ``augment.AugmentConfig``'s."""

    gain_p: float = 0.8
    calibration: CalibrationResiduals = field(default_factory=CalibrationResiduals)
    noise_p: float = 0.7
    min_quanta: float = 3000.0
    blur_p: float = 0.3
    max_blur_px: float = 0.5  # model pixels
    stretch_p: float = 0.5
    belt_stretch: tuple[float, float] = (0.85, 1.15)


class TileAugment:
    """``augment(tile (C, h, w) normalised float32, mask (h, w) | None, rng, ...) -> (tile, mask)``."""

    def __init__(self, spec: PreprocessSpec, config: TileAugmentConfig | None = None):
        if spec.input_kind != "dual_energy" or not {"a_low", "a_high"} <= set(spec.channels):
            raise ParcelscanError("tile augmentation needs dual-energy tiles with a_low and a_high channels")
        self.spec = spec
        self.config = config or TileAugmentConfig()
        self.offset = np.asarray(spec.normalisation["offset"], dtype=np.float32)[:, None, None]
        self.scale = np.asarray(spec.normalisation["scale"], dtype=np.float32)[:, None, None]
        self.air = ((np.asarray(spec.pad_value, dtype=np.float32)[:, None, None] - self.offset) / self.scale)
        self.low = spec.channels.index("a_low")
        self.high = spec.channels.index("a_high")

    def __call__(self, tile: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, *,
                 scan_pixels_per_model_pixel: float = 1.0, nominal_quanta: float = 20000.0,
                 content_rows: int | None = None, content_cols: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Augment one tile. ``content_rows``/``content_cols``: how much of the tile is scan (the rest is
        padding, left as air); ``scan_pixels_per_model_pixel``: b of the noise variance; ``nominal_quanta``:
        the scan's air quanta per scan pixel (N0)."""
        c = self.config
        raw = np.asarray(tile, dtype=np.float32) * self.scale + self.offset
        rows, cols = raw.shape[-2:]
        inside = np.zeros((rows, cols), bool)
        inside[:rows if content_rows is None else max(content_rows, 0),
               :cols if content_cols is None else max(content_cols, 0)] = True
        transmission = np.exp(-raw[[self.low, self.high]]).astype(np.float32)  # (2, h, w)
        # 1. belt-speed stretch along rows, about the tile centre
        if rng.random() < c.stretch_p:
            factor = rng.uniform(*c.belt_stretch)
            centre = (rows - 1) / 2.0
            source_rows = centre + (np.arange(rows, dtype=np.float32) - centre) / factor
            transmission = np.stack([_resample_rows(t, source_rows, order=1, fill=1.0) for t in transmission])
            inside = _resample_rows(inside.astype(np.float32), source_rows, order=0, fill=0.0) > 0.5
            if mask is not None:
                mask = _resample_rows(np.asarray(mask, np.float32), source_rows, order=0, fill=0.0)
        # 2. detector blur (in transmission, where the detector integrates)
        if rng.random() < c.blur_p:
            sigma = rng.uniform(0.0, c.max_blur_px)
            transmission = np.stack([ndimage.gaussian_filter(t, sigma, mode="nearest") for t in transmission])
        # 3. calibration residuals per channel
        if rng.random() < c.gain_p:
            transmission = c.calibration.apply(transmission, rng, channel_axis=0)
        # 4. the noise of a lower dose, averaged over the scan pixels of one model pixel
        if rng.random() < c.noise_p and nominal_quanta > c.min_quanta:
            transmission = lower_dose(transmission, rng, nominal_quanta, c.min_quanta,
                                      max(float(scan_pixels_per_model_pixel), 1.0))
        transmission = np.clip(transmission, TRANSMISSION_FLOOR, 1.0)
        out = channels_from_planes(np.moveaxis(transmission, 0, -1), self.spec)  # the preprocessing's own channels
        out = (out - self.offset) / self.scale
        out = np.where(inside[None], out, self.air).astype(np.float32)
        return out, (None if mask is None else np.where(inside, mask, 0.0).astype(np.float32))


def _resample_rows(image: np.ndarray, source_rows: np.ndarray, order: int, fill: float) -> np.ndarray:
    """``image`` (h, w) sampled at fractional rows ``source_rows`` (linear or nearest); outside: ``fill``."""
    rows, cols = image.shape
    if order == 0:
        index = np.rint(source_rows).astype(int)
        valid = (index >= 0) & (index < rows)
        out = np.full((len(source_rows), cols), fill, dtype=np.float32)
        out[valid] = image[index[valid]]
        return out
    lower = np.floor(source_rows).astype(int)
    weight = (source_rows - lower).astype(np.float32)[:, None]
    valid = (source_rows >= 0) & (source_rows <= rows - 1)
    padded = np.concatenate([image, image[-1:]], axis=0)  # the last row interpolates with itself
    out = np.full((len(source_rows), cols), fill, dtype=np.float32)
    lo, w = lower[valid], weight[valid]
    out[valid] = padded[lo] * (1.0 - w) + padded[lo + 1] * w
    return out
