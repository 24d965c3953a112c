"""The forward model: areal densities of materials along each ray → a noisy 16-bit dual-energy scan.

Per pixel and channel, polychromatic Beer–Lambert summed over the channel's energy response:

    I/I0 = Σ_E w(E) · exp(−Σ_m (μ/ρ)_m(E) · ρt_m)  /  Σ_E w(E)

then quantum noise (Poisson in the detected quanta, ``air_quanta_per_pixel · I/I0``; Swank noise of the
energy-integrating pixel is ignored), electronic noise (Gaussian, in quanta), detector blur (Gaussian),
and 16-bit quantisation of the air-normalised transmission (65535 = unattenuated, 0 = opaque).

The fast path sums over *super-bins*: the 0.5 keV spekpy grid merged into ~2 keV bins whose edges
never straddle an absorption edge of any element in the material library, so μ is smooth inside each
and a response-weighted mean μ per bin reproduces the direct sum to well under 0.5 % (tests check).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from parcelscan.datasets.physics.materials import LIBRARY, Material
from parcelscan.datasets.physics.profile import ScannerProfile
from parcelscan.datasets.physics.spectrum import ChannelResponses, channel_responses

SUPER_BIN_KEV = 2.0
CHUNK_PIXELS = 1024  # (S, n) float32 blocks that stay in cache


def _absorption_edges_kev(materials: Sequence[Material]) -> np.ndarray:
    """K and L edges (keV) of every element in the given materials."""
    import xraydb

    edges = set()
    for material in materials:
        for formula, _ in material.composition:
            for element in xraydb.chemparse(formula):
                edges.update(_element_edges_kev(element))
    return np.array(sorted(edges))


@functools.cache
def _element_edges_kev(element: str) -> tuple[float, ...]:
    """An element's K, L1, L2, L3 edges (keV); cached, since xraydb answers each from its database."""
    import xraydb

    edges = []
    for edge in ("K", "L1", "L2", "L3"):
        try:
            edges.append(xraydb.xray_edge(element, edge).energy / 1000.0)
        except Exception:
            continue
    return tuple(edges)


def _super_bin_index(energy_kev: np.ndarray, edges_kev: np.ndarray, width_kev: float) -> np.ndarray:
    """Assign each fine bin to a super-bin; a new super-bin starts at every absorption edge."""
    index = np.zeros(len(energy_kev), dtype=int)
    current, start = 0, energy_kev[0]
    for i in range(1, len(energy_kev)):
        crosses_edge = np.any((edges_kev > energy_kev[i - 1]) & (edges_kev <= energy_kev[i]))
        if crosses_edge or energy_kev[i] - start >= width_kev:
            current += 1
            start = energy_kev[i]
        index[i] = current
    return index


def _materials_per_block(areal: np.ndarray, n_pixels: int) -> np.ndarray:
    """(M, blocks) bool: which materials have any areal density in each block of CHUNK_PIXELS pixels.

    For maps of shape (M, rows, cols) this goes through rows (one pass, no copy); blocks cover rows."""
    n_blocks = -(-n_pixels // CHUNK_PIXELS)
    if areal.ndim != 3:
        padded = np.zeros((areal.shape[0], n_blocks * CHUNK_PIXELS), dtype=bool)
        padded[:, :n_pixels] = areal.reshape(areal.shape[0], -1) != 0
        return padded.reshape(areal.shape[0], n_blocks, CHUNK_PIXELS).any(axis=2)
    width = areal.shape[2]
    rows_present = np.zeros((areal.shape[0], areal.shape[1] + 1), dtype=np.int32)
    np.cumsum(areal.any(axis=2), axis=1, out=rows_present[:, 1:])
    first_row = np.arange(n_blocks) * CHUNK_PIXELS // width
    last_row = (np.minimum((np.arange(n_blocks) + 1) * CHUNK_PIXELS, n_pixels) - 1) // width
    return rows_present[:, last_row + 1] > rows_present[:, first_row]


@dataclass
class _SuperBins:
    index: np.ndarray  # fine bin -> super-bin
    weight: np.ndarray  # (S, 2) summed low/high responses per super-bin, normalised per channel
    fine_share: np.ndarray  # (E,) each fine bin's share of its super-bin's combined response


class ForwardModel:
    """Turns per-material areal densities into channel log-attenuations and noisy 16-bit scans."""

    def __init__(self, profile: ScannerProfile, super_bin_kev: float = SUPER_BIN_KEV):
        self.profile = profile
        self.responses: ChannelResponses = channel_responses(profile)
        r = self.responses
        edges = _absorption_edges_kev(list(LIBRARY.values()))
        index = _super_bin_index(r.energy_kev, edges, super_bin_kev)
        n_super = index.max() + 1
        low = r.low_weight / r.low_weight.sum()
        high = r.high_weight / r.high_weight.sum()
        weight = np.zeros((n_super, 2))
        np.add.at(weight[:, 0], index, low)
        np.add.at(weight[:, 1], index, high)
        combined = low + high
        combined_per_bin = np.zeros(n_super)
        np.add.at(combined_per_bin, index, combined)
        self._bins = _SuperBins(index, weight, combined / combined_per_bin[index])
        self._mu_super: dict[tuple, np.ndarray] = {}

    @property
    def n_super_bins(self) -> int:
        return self._bins.weight.shape[0]

    # --- attenuation tables -------------------------------------------------------------------
    def mass_attenuation_fine(self, materials: Sequence[Material]) -> np.ndarray:
        """(M, E) μ/ρ in cm²/g on the fine spectrum grid."""
        return np.stack([m.mass_attenuation_cm2_g(self.responses.energy_kev) for m in materials])

    def mass_attenuation_super(self, materials: Sequence[Material]) -> np.ndarray:
        """(M, S) response-weighted mean μ/ρ per super-bin (cached per composition: scenes reuse materials)."""
        out = np.zeros((len(materials), self.n_super_bins))
        for m, material in enumerate(materials):
            key = material.composition
            row = self._mu_super.get(key)
            if row is None:
                fine = self.mass_attenuation_fine([material])[0] * self._bins.fine_share
                row = np.zeros(self.n_super_bins)
                np.add.at(row, self._bins.index, fine)
                if len(self._mu_super) < 4096:
                    self._mu_super[key] = row
            out[m] = row
        return out

    # --- noiseless physics --------------------------------------------------------------------
    def log_attenuation(self, materials: Sequence[Material], areal_g_cm2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fast path. ``areal_g_cm2`` is (M, ...) — one areal-density map per material.

        Returns (A_low, A_high) = −ln(I/I0) per channel, each shaped like one map. Pixels with no
        material are exactly 0. Works on contiguous pixel blocks (a scan's empty margins are skipped
        block by block) with only the materials present in each block, in blocks sized to stay in cache.

        The sums are numpy's own single-threaded einsum loops, never BLAS ``@``: a multithreaded BLAS splits
        a product among its threads and rounds the edge columns with other kernels, so the same scan
        differed by a grey level between an in-process run and single-threaded workers (issue 11). Here a
        pixel's value depends only on its inputs, whatever thread count any maths library runs with.
        """
        areal = np.ascontiguousarray(areal_g_cm2, dtype=np.float32)
        if areal.shape[0] != len(materials):
            raise ValueError(f"{len(materials)} materials but {areal.shape[0]} areal-density maps")
        shape = areal.shape[1:]
        flat = areal.reshape(len(materials), -1)  # (M, N)
        mu_t = np.ascontiguousarray(self.mass_attenuation_super(materials).T, dtype=np.float32)  # (S, M)
        weight = np.ascontiguousarray(self._bins.weight, dtype=np.float32)  # (S, 2)
        n_pixels = flat.shape[1]
        log_att = np.ones((2, n_pixels), dtype=np.float32)  # transmission first; empty pixels stay 1 -> A = 0
        occupied = flat.any(axis=0)
        present = _materials_per_block(areal, n_pixels)  # a parcel region holds a few of a scene's materials
        n_blocks = present.shape[1]
        for block in range(n_blocks):
            here = np.flatnonzero(present[:, block])
            if len(here) == 0:
                continue
            start, stop = block * CHUNK_PIXELS, min((block + 1) * CHUNK_PIXELS, n_pixels)
            # numpy's own einsum loops (optimize=False never hands the product to BLAS): (S, m) x (m, n)
            optical_depth = np.einsum("sm,mn->sn", mu_t[:, here], flat[here, start:stop], optimize=False)
            np.negative(optical_depth, out=optical_depth)
            np.exp(optical_depth, out=optical_depth)
            np.einsum("sn,sc->cn", optical_depth, weight, out=log_att[:, start:stop], optimize=False)
        np.maximum(log_att, np.float32(1e-30), out=log_att)
        np.log(log_att, out=log_att)
        np.negative(log_att, out=log_att)
        log_att[:, ~occupied] = 0.0
        return log_att[0].reshape(shape), log_att[1].reshape(shape)

    def log_attenuation_direct(self, materials: Sequence[Material],
                               areal_g_cm2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference: the direct float64 sum over the full 0.5 keV spectrum grid (slow)."""
        areal = np.asarray(areal_g_cm2, dtype=np.float64)
        shape = areal.shape[1:]
        flat = areal.reshape(len(materials), -1).T
        mu = self.mass_attenuation_fine(materials)
        r = self.responses
        transmission = np.exp(-(flat @ mu))
        low = transmission @ (r.low_weight / r.low_weight.sum())
        high = transmission @ (r.high_weight / r.high_weight.sum())
        return -np.log(low).reshape(shape), -np.log(high).reshape(shape)

    def material_attenuation(self, material: Material, areal_g_cm2: float) -> tuple[float, float]:
        """(A_low, A_high) of a single slab, exact (direct sum)."""
        a_low, a_high = self.log_attenuation_direct([material], np.array([[areal_g_cm2]]))
        return float(a_low[0]), float(a_high[0])

    # --- the detector -------------------------------------------------------------------------
    def detect(self, a_low: np.ndarray, a_high: np.ndarray, rng: np.random.Generator,
               air_quanta_per_pixel: float | None = None,
               blur_sigma_px: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Noise, blur and quantisation: log-attenuations → 16-bit air-normalised transmission images.

        ``air_quanta_per_pixel`` and ``blur_sigma_px`` override the profile's (a simulator varies dose
        and focus per scan without building a model per value)."""
        quanta = air_quanta_per_pixel or self.profile.air_quanta_per_pixel
        blur = self.profile.blur_sigma_px if blur_sigma_px is None else blur_sigma_px
        return (self._detect_channel(a_low, rng, quanta, blur), self._detect_channel(a_high, rng, quanta, blur))

    def _detect_channel(self, log_att: np.ndarray, rng: np.random.Generator, air_quanta: float,
                        blur_sigma_px: float) -> np.ndarray:
        import cv2

        # Work in units of the air signal: t = counts / N0 has mean e^-A and variance e^-A / N0.
        expected = np.exp(-np.asarray(log_att, dtype=np.float32))
        noise = rng.standard_normal(expected.shape, dtype=np.float32)
        # Poisson where few quanta arrive; its Gaussian limit elsewhere (identical to < 0.1 % in σ there).
        # Electronic noise is an independent Gaussian: the variances add.
        electronic = np.float32((self.profile.electronic_noise_quanta / air_quanta) ** 2)
        sigma = expected * np.float32(1.0 / air_quanta)
        if electronic > 0:
            sigma += electronic
        np.sqrt(sigma, out=sigma)
        sigma *= noise
        transmission = expected
        transmission += sigma
        few = np.flatnonzero(log_att.ravel() > np.float32(np.log(air_quanta / 200.0)))
        if len(few):
            mean = np.exp(-np.asarray(log_att, dtype=np.float64).ravel()[few]) * air_quanta
            counts = rng.poisson(mean)
            if self.profile.electronic_noise_quanta > 0:
                counts = counts + self.profile.electronic_noise_quanta * rng.standard_normal(counts.shape)
            transmission.ravel()[few] = (counts / air_quanta).astype(np.float32)
        if blur_sigma_px > 0:
            transmission = cv2.GaussianBlur(transmission, (0, 0), blur_sigma_px, borderType=cv2.BORDER_REPLICATE)
        np.multiply(transmission, np.float32(65535.0), out=transmission)
        np.clip(transmission, 0, 65535, out=transmission)
        transmission += np.float32(0.5)  # round half up, then truncate
        return transmission.astype(np.uint16)

    def scan(self, materials: Sequence[Material], areal_g_cm2: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Areal densities → (low, high) 16-bit images."""
        a_low, a_high = self.log_attenuation(materials, areal_g_cm2)
        return self.detect(a_low, a_high, rng)


_MODELS: dict[tuple, ForwardModel] = {}


def forward_model(profile: ScannerProfile) -> ForwardModel:
    """A shared ForwardModel per profile physics (building one costs the spectrum and the edge table)."""
    key = (profile.physics_key(), profile.air_quanta_per_pixel, profile.electronic_noise_quanta,
           profile.blur_sigma_px)
    if key not in _MODELS:
        _MODELS[key] = ForwardModel(profile)
    return _MODELS[key]
