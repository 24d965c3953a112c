"""DICOS DX For Processing: what we write is what pydicom reads back, attribute by attribute and pixel by
pixel; foreign objects pair by Scan Instance UID; every object we cannot trust is refused with a typed error."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from parcelscan.datasets.scans.dicos import (
    DICOS_DX_FOR_PRESENTATION,
    DICOS_DX_FOR_PROCESSING,
    read_dicos,
    read_dicos_header,
    write_dicos,
)
from parcelscan.datasets.scans.readers import load_scan
from parcelscan.datasets.scans.scanfile import (
    BitDepthError,
    IncompleteScanError,
    Scan,
    ScanTooLargeError,
    UnsupportedScanError,
)
from parcelscan.errors import ScanReadError

META = {"profile": "postal-dual-140", "pixel_pitch_mm": 0.8, "parcel_id": "P-77", "source": "station",
        "labels": {"label": "clear", "note": "ü"}}


def _scan(seed: int = 0, shape: tuple[int, int] = (36, 44)) -> Scan:
    rng = np.random.default_rng(seed)
    return Scan("s-001", rng.integers(0, 65536, shape, dtype=np.uint16), rng.integers(0, 65536, shape, dtype=np.uint16),
                dict(META))


@pytest.fixture()
def written(tmp_path):
    scan = _scan()
    return scan, write_dicos(scan, tmp_path)


def test_round_trip_is_exact(written):
    scan, (low_path, high_path) = written
    assert (low_path.name, high_path.name) == ("s-001_low.dcs", "s-001_high.dcs")
    for path in (low_path, high_path):
        back = read_dicos(path)
        assert back.scan_id == "s-001" and back.meta == META and back.kind == "dual_energy"
        np.testing.assert_array_equal(back.low, scan.low)
        np.testing.assert_array_equal(back.high, scan.high)
        assert back.source_files == [str(low_path), str(high_path)]


def test_pydicom_reads_back_identically(written):
    scan, (low_path, high_path) = written
    for path, image in ((low_path, scan.low), (high_path, scan.high)):
        ds = pydicom.dcmread(path)
        np.testing.assert_array_equal(ds.pixel_array, image)
        assert ds.pixel_array.dtype == np.uint16
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        assert buffer.getvalue() == path.read_bytes()  # nothing lost or altered by a read/write cycle


def test_attributes_of_the_module_table(written):
    scan, (low_path, high_path) = written
    low, high = pydicom.dcmread(low_path), pydicom.dcmread(high_path)
    for ds, energy, number in ((low, "LOW", 1), (high, "HIGH", 2)):
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == DICOS_DX_FOR_PROCESSING
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.Modality == "DX" and ds.PresentationIntentType == "FOR PROCESSING"
        assert (ds.Rows, ds.Columns) == scan.shape and ds.SamplesPerPixel == 1
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 0)
        assert ds.PhotometricInterpretation == "MONOCHROME2" and "NumberOfFrames" not in ds
        assert ds.PixelIntensityRelationship == "LIN" and ds.PixelIntensityRelationshipSign == 1
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
        assert [float(v) for v in ds.ImagerPixelSpacing] == [0.8, 0.8]
        assert float(ds.KVP) == 140.0 and ds.DetectorConfiguration == "SANDWICH"
        assert ds.PatientID == "P-77" and ds.OOIType == "CARGO" and ds.StudyDescription == "s-001"
        assert ds[0x61000030].value == number and ds[0x61000031].value == energy and ds[0x61000032].value == 2
        assert ds.SeriesNumber == number
    assert low.StudyInstanceUID == high.StudyInstanceUID and low.SeriesInstanceUID != high.SeriesInstanceUID
    assert low.FrameOfReferenceUID == high.FrameOfReferenceUID and low.SOPInstanceUID != high.SOPInstanceUID


def test_uids_are_deterministic_per_scan_content(tmp_path, written):
    scan, (low_path, _) = written
    again = write_dicos(scan, tmp_path / "again")
    assert pydicom.dcmread(again[0]).SOPInstanceUID == pydicom.dcmread(low_path).SOPInstanceUID
    changed = _scan(1)
    other = write_dicos(changed, tmp_path / "other")
    assert pydicom.dcmread(other[0]).StudyInstanceUID != pydicom.dcmread(low_path).StudyInstanceUID


def _modify(path, out, **changes):
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(out, enforce_file_format=True)
    return out


def test_foreign_object_without_our_json_uses_standard_attributes(written, tmp_path):
    _, (low_path, high_path) = written
    for path, name in ((low_path, "a.dcm"), (high_path, "b.dcm")):
        ds = pydicom.dcmread(path)
        del ds[ds.private_block(0x0011, "PARCELSCAN 1").get_tag(0x00)]
        ds.ImagerPixelSpacing = [0.5, 0.8]
        ds.save_as(tmp_path / name, enforce_file_format=True)
    back = load_scan(tmp_path / "b.dcm")
    assert back.scan_id == "P-77"  # the OOI ID names a foreign scan
    assert back.meta == {"pixel_pitch_mm": 0.8, "row_pitch_mm": 0.5, "tube_kv": 140.0, "ooi_id": "P-77",
                         "scan_instance_uid": pydicom.dcmread(low_path).StudyInstanceUID}


def test_implicit_vr_file_keeps_the_energy_labels(written, tmp_path):
    """DICOS-only tags are unknown to pydicom: in an implicit-VR file they come back as raw bytes."""
    scan, (low_path, high_path) = written
    for path in (low_path, high_path):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(tmp_path / f"implicit_{path.stem}.dcm", enforce_file_format=True)
    header = read_dicos_header(tmp_path / "implicit_s-001_high.dcm")
    with pytest.warns(UserWarning, match="VR lookup failed"):
        assert pydicom.dcmread(header.path)[0x61000031].VR == "UN"
    assert header.energy == "high"
    back = load_scan(tmp_path / "implicit_s-001_high.dcm")
    np.testing.assert_array_equal(back.low, scan.low)
    assert back.meta == META


@pytest.mark.parametrize("changes, error, message", [
    ({"SOPClassUID": DICOS_DX_FOR_PRESENTATION}, UnsupportedScanError, "For Presentation"),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}, UnsupportedScanError, "is not DICOS Digital X-Ray"),
    ({"Modality": "CT"}, UnsupportedScanError, "modality 'CT'"),
    ({"PresentationIntentType": "FOR PRESENTATION"}, UnsupportedScanError, "presentation intent"),
    ({"BitsStored": 12, "HighBit": 11}, BitDepthError, "12-bit pixels"),
    ({"PixelRepresentation": 1}, BitDepthError, "signed pixels"),
    ({"NumberOfFrames": 2}, UnsupportedScanError, "multi-frame"),
    ({"PhotometricInterpretation": "MONOCHROME1"}, UnsupportedScanError, "MONOCHROME1"),
    ({"PixelIntensityRelationship": "LOG"}, UnsupportedScanError, "linear transmission"),
    ({"RescaleSlope": 2}, UnsupportedScanError, "rescale slope"),
    ({"Rows": 60000, "Columns": 60000}, ScanTooLargeError, "60000x60000 exceeds the limit"),
    ({"Rows": 20}, ScanReadError, "pixel data of 3168 bytes do not match"),
])
def test_untrustworthy_objects_are_refused(written, tmp_path, changes, error, message):
    _, (low_path, high_path) = written
    bad = _modify(low_path, tmp_path / "s-001_low.dcs", **changes)
    (tmp_path / "s-001_high.dcs").write_bytes(high_path.read_bytes())
    with pytest.raises(error, match=rf"s-001_low\.dcs.*{message}"):
        load_scan(bad)
    with pytest.raises(error, match=rf"s-001_low\.dcs.*{message}"):
        load_scan(tmp_path / "s-001_high.dcs")  # the bad half spoils the scan from either side


def test_object_without_sop_class(written, tmp_path):
    ds = pydicom.dcmread(written[1][0])
    del ds.SOPClassUID, ds.file_meta.MediaStorageSOPClassUID
    ds.save_as(tmp_path / "nosop.dcm", enforce_file_format=False)
    with pytest.raises(ScanReadError, match=r"nosop\.dcm: not a DICOS object \(no SOP Class UID\)"):
        load_scan(tmp_path / "nosop.dcm")


def test_missing_partner_and_unlabelled_energy(written, tmp_path):
    _, (low_path, _) = written
    alone = tmp_path / "alone" / "s-001_low.dcs"
    alone.parent.mkdir()
    alone.write_bytes(low_path.read_bytes())
    with pytest.raises(IncompleteScanError, match=r"s-001_low\.dcs: the high-energy DX object .* is missing"):
        load_scan(alone)
    ds = pydicom.dcmread(low_path)
    del ds[0x61000030], ds[0x61000031]
    ds.save_as(tmp_path / "single.dcm", enforce_file_format=True)
    with pytest.raises(UnsupportedScanError, match=r"single\.dcm: .*single-energy image: a dual-energy pair"):
        load_scan(tmp_path / "single.dcm")


def test_two_objects_of_the_same_energy_do_not_pair(written, tmp_path):
    _, (low_path, _) = written
    (tmp_path / "s-001_low.dcs").write_bytes(low_path.read_bytes())
    (tmp_path / "s-001_high.dcs").write_bytes(low_path.read_bytes())
    with pytest.raises(ScanReadError, match="both are low-energy objects"):
        load_scan(tmp_path / "s-001_low.dcs")


def test_truncated_and_garbage_files(written, tmp_path):
    _, (low_path, high_path) = written
    data = low_path.read_bytes()
    (tmp_path / "s-001_low.dcs").write_bytes(data[: len(data) - 500])
    (tmp_path / "s-001_high.dcs").write_bytes(high_path.read_bytes())
    with pytest.raises(ScanReadError, match=r"s-001_low\.dcs"):
        load_scan(tmp_path / "s-001_high.dcs")
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(1).integers(0, 256, 999, dtype=np.uint8).tobytes())
    with pytest.raises(ScanReadError, match=r"noise\.dcm: not a DICOM/DICOS file"):
        load_scan(tmp_path / "noise.dcm")
    (tmp_path / "prefixed.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"x" * 64)
    with pytest.raises(ScanReadError, match=r"prefixed\.dcm"):
        load_scan(tmp_path / "prefixed.dcm")


def test_pseudo_colour_scan_cannot_be_written(tmp_path):
    rgb = np.zeros((36, 44, 3), np.uint8)
    with pytest.raises(ValueError, match="no energies"):
        write_dicos(Scan("x", None, None, kind="pseudo_color", rgb=rgb), tmp_path)
