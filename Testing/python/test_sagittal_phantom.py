"""The on-the-fly sagittal phantom the vertebra finder trains on: labels that fit the image."""

import numpy as np
import pytest
from scipy import ndimage

from osteobmd.synthetic.sagittal_phantom import BODY, CLASSES, SACRUM, make_sagittal_phantom

SEEDS = range(24)


@pytest.fixture(scope="module")
def phantoms():
    return [make_sagittal_phantom(seed, 2.0) for seed in SEEDS]


def test_same_seed_same_image_other_seed_other_image():
    a, b, c = make_sagittal_phantom(5), make_sagittal_phantom(5), make_sagittal_phantom(6)
    assert np.array_equal(a.image01, b.image01) and np.array_equal(a.labels, b.labels)
    assert a.image01.shape != c.image01.shape or not np.array_equal(a.image01, c.image01)


def test_classes_and_grid(phantoms):
    assert CLASSES == {"background": 0, "vertebral_body": 1, "sacrum": 2}
    for ph in phantoms:
        assert ph.image01.shape == ph.labels.shape == ph.hu.shape == ph.instances.shape
        assert ph.image01.dtype == np.float32 and 0.0 <= ph.image01.min() and ph.image01.max() <= 1.0
        assert set(np.unique(ph.labels)) <= {0, BODY, SACRUM}
        assert np.array_equal(ph.labels == BODY, ph.instances > 0)
        assert np.array_equal(ph.labels == SACRUM, ph.instances < 0)
        assert 0.5 <= ph.slice_mm <= 5.0


def test_every_body_is_its_own_component(phantoms):
    """No two bodies touch (the disc between them is background), and a body is not split."""
    seen = 0
    for ph in phantoms:
        comps, n = ndimage.label(ph.labels == BODY)
        for c in range(1, n + 1):
            ids = np.unique(ph.instances[comps == c])
            assert len(ids) == 1, f"one component holds bodies {ids}"
        for body in np.unique(ph.instances[ph.instances > 0]):
            pieces = np.unique(comps[ph.instances == body])
            big = [p for p in pieces if np.sum(comps == p) > 4]
            assert len(big) <= 1, f"body {body} is split into {len(big)} pieces"
        seen += n
    assert seen >= 3 * len(phantoms)  # most views hold several bodies


def test_sacrum_lies_below_the_bodies_and_bodies_are_bone(phantoms):
    with_sacrum = 0
    for ph in phantoms:
        rows = np.arange(ph.labels.shape[0])[:, None]
        if (ph.labels == SACRUM).sum() > 20 and (ph.labels == BODY).any():
            with_sacrum += 1
            lowest_body = min(np.mean(np.broadcast_to(rows, ph.labels.shape)[ph.instances == b])
                              for b in np.unique(ph.instances[ph.instances > 0]))
            sacrum_centre = np.mean(np.broadcast_to(rows, ph.labels.shape)[ph.labels == SACRUM])
            assert sacrum_centre < lowest_body  # rows grow superiorly
        if (ph.labels == BODY).sum() > 50:
            # bone is denser than its surroundings: bodies read above the image's soft-tissue median
            assert np.median(ph.hu[ph.labels == BODY]) > np.median(ph.hu[ph.labels == 0]) + 20
    assert with_sacrum >= 4


def test_views_vary(phantoms):
    shapes = {ph.image01.shape for ph in phantoms}
    counts = {ph.n_bodies for ph in phantoms}
    assert len(shapes) > 10 and max(counts) >= 7 and min(counts) <= 4
    # some views are tight spine crops (little air: bowel gas, lung), some hold air around the trunk
    air_share = [np.mean(ph.hu < -800) for ph in phantoms]
    assert min(air_share) < 0.08 and max(air_share) > 0.2


def test_sacrum_styles():
    """"segments" (the default) draws S1..S5 as fused bodies; "smooth" (the first run's) one bone."""
    seg, smooth = make_sagittal_phantom(12), make_sagittal_phantom(12, sacrum="smooth")
    assert seg.image01.shape == smooth.image01.shape  # the same view (drawn before the bones)
    assert (seg.labels == SACRUM).any() and (smooth.labels == SACRUM).any()
    assert not np.array_equal(seg.labels == SACRUM, smooth.labels == SACRUM)
    with pytest.raises(ValueError, match="sacrum must be one of"):
        make_sagittal_phantom(1, sacrum="flat")
