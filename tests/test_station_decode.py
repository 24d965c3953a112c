"""One-pass PNG decoding on the station path (issue 15 part 4): the integrity check inflates the image data once and
the pixels are built from those bytes (filters None, Sub and Up in numpy; anything else through Pillow), so every
file is inflated once — and the pixels are exactly Pillow's."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from parcelscan.datasets.scans.scanfile import _unfilter, decode_png, sums_along_rows_mod256, verify_png
from parcelscan.errors import ScanReadError


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png(image: np.ndarray, filters: list[int]) -> bytes:
    """A PNG written by hand with the given filter type per row (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth)."""
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    depth = 16 if image.dtype == np.uint16 else 8
    raw = image.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1).view(np.uint8).astype(np.int32)
    bpp = channels * depth // 8
    rows = []
    for r in range(height):
        line, up = raw[r], raw[r - 1] if r else np.zeros_like(raw[r])
        left = np.concatenate([np.zeros(bpp, np.int32), line[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        kind = filters[r % len(filters)]
        if kind == 0:
            out = line
        elif kind == 1:
            out = line - left
        elif kind == 2:
            out = line - up
        elif kind == 3:
            out = line - (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
            out = line - np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        rows.append(bytes([kind]) + (out % 256).astype(np.uint8).tobytes())
    header = struct.pack(">IIBBBBB", width, height, depth, {1: 0, 3: 2}[channels], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + _chunk(b"IEND", b""))


@pytest.mark.parametrize("filters", [[0], [1], [2], [0, 1, 2], [2, 2, 1, 0, 1], [3], [4], [1, 4, 2]])
@pytest.mark.parametrize("kind", ["grey16", "rgb8", "grey8"])
def test_one_pass_pixels_are_pillows(filters, kind, tmp_path):
    rng = np.random.default_rng(len(filters) * 7 + len(kind))
    image = {"grey16": lambda: rng.integers(0, 65536, (23, 31)).astype(np.uint16),
             "rgb8": lambda: rng.integers(0, 256, (19, 17, 3)).astype(np.uint8),
             "grey8": lambda: rng.integers(0, 256, (11, 40)).astype(np.uint8)}[kind]()
    data = _png(image, filters)
    with Image.open(io.BytesIO(data)) as pil:
        np.testing.assert_array_equal(np.asarray(pil), image)  # the hand-written file is a valid PNG
    raw = verify_png(data, "x", keep=True)
    fast = _unfilter(raw, data)
    assert (fast is None) == any(f > 2 for f in filters)  # Average and Paeth go through Pillow
    path = tmp_path / "x.png"
    path.write_bytes(data)
    decoded = decode_png(path, image.shape[1], image.shape[0])
    assert decoded.dtype == image.dtype
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize("width", [1, 2, 3, 7, 64, 65, 640, 1001])
@pytest.mark.parametrize("bpp", [1, 2, 3])
def test_the_sub_filter_sums_are_cumsums_mod_256(width, bpp):
    pixels = np.random.default_rng(width * 10 + bpp).integers(0, 256, (5, width, bpp)).astype(np.uint8)
    expected = np.cumsum(pixels, axis=1, dtype=np.uint8)
    before = pixels.copy()
    np.testing.assert_array_equal(sums_along_rows_mod256(pixels), expected)
    np.testing.assert_array_equal(pixels, before)  # a new array: the inflated bytes are left as they were


def test_the_kept_stream_is_still_capped_and_checked(tmp_path):
    image = np.arange(40 * 30, dtype=np.uint16).reshape(30, 40)
    data = bytearray(_png(image, [1]))
    data[-20] ^= 0x01  # a flipped bit in the image data: its CRC no longer matches
    with pytest.raises(ScanReadError, match="bad CRC"):
        verify_png(bytes(data), "x", keep=True)
    long = _png(np.zeros((60, 40), np.uint16), [0])  # a stream longer than the header announces
    fake = long[:16] + struct.pack(">II", 40, 30) + long[24:]
    body = fake[12:29]
    fake = fake[:29] + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF) + fake[33:]
    with pytest.raises(ScanReadError, match="inflate past"):
        verify_png(fake, "x", keep=True)
