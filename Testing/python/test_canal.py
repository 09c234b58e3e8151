"""Spinal-canal detection (METHOD 1) on phantoms and on the real sample CT."""

import pytest

from osteobmd import io
from osteobmd.canal import detect_canal
from osteobmd.errors import InputError
from toy_ct import CANAL_CENTER_XY, make_toy_ct

from osteobmd.cli import SAMPLE_CT
from test_io import THORAX_DICOM


@pytest.mark.parametrize("spacing", [(0.8, 0.8, 1.0), (3.0, 3.0, 3.0)])
def test_canal_centre_found_in_millimetres_at_any_spacing(spacing):
    ct, _ = make_toy_ct(spacing)
    canal = detect_canal(ct)
    assert canal.spine_center_lps_mm[0] == pytest.approx(CANAL_CENTER_XY[0], abs=1.0)
    assert canal.spine_center_lps_mm[1] == pytest.approx(CANAL_CENTER_XY[1], abs=1.0)
    # The slab is ~7 mm of sagittal slices around the centre, whatever the spacing.
    xs = [ct.TransformIndexToPhysicalPoint((i, 0, 0))[0] for i in canal.slab_indices]
    assert min(xs) <= CANAL_CENTER_XY[0] <= max(xs)
    assert (max(xs) - min(xs)) <= 7.0 + spacing[0]


def test_no_canal_no_spine_in_view():
    ct, _ = make_toy_ct((2.0, 2.0, 2.0), with_canal=False, vertebrae=())
    with pytest.raises(InputError, match="No spinal canal"):
        detect_canal(ct)


def test_real_sample_canal_lies_behind_the_labelled_bodies():
    ct = io.read_ct(SAMPLE_CT)
    canal = detect_canal(ct)
    # TotalSegmentator's L1-L4 bodies of this case sit at x ~ 4-6 mm (LPS).
    assert canal.spine_center_lps_mm[0] == pytest.approx(5.0, abs=6.0)
    assert len(canal.slice_indices) >= 10


@pytest.mark.skipif(not THORAX_DICOM.exists(), reason="shared real DICOM series not present")
def test_real_thorax_series_finds_the_spine_not_the_arm():
    ct = io.read_ct(THORAX_DICOM)
    canal = detect_canal(ct)
    i, j, _ = ct.TransformPhysicalPointToIndex(tuple(canal.spine_center_lps_mm))
    # The spine of this 512 x 512 slice is near the middle column; the arms are at the edges.
    assert 200 < i < 310 and 280 < j < 380

