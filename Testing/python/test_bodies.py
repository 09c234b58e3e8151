"""bodies.find_bodies on constructed sagittal class maps: what a real network output does."""

import numpy as np
import pytest

from osteobmd.bodies import find_bodies

# A lumbar spine from the sacrum up (mm): body heights and the disc below each body.
HEIGHTS = [27, 28, 28, 27, 26, 24]  # L5 ... T12
DISCS = [10, 10, 9, 9, 8, 7]


def spine_map(spacing=(1.0, 1.0), heights=HEIGHTS, discs=DISCS, drop=(), sacrum=True, depth_mm=40.0,
              height_mm=320.0, tilt_sacrum=False):
    """(class map, true body centres in mm from row 0). Bodies are rectangles on a column,
    stacked from a sacrum whose top is at 60 mm."""
    sz, sy = spacing
    nz, ny = int(round(height_mm / sz)), int(round(120 / sy))
    cm = np.zeros((nz, ny), np.uint8)
    y0, y1 = int(round(30 / sy)), int(round((30 + depth_mm) / sy))
    if sacrum:
        top = int(round(60 / sz))
        cm[: top + 1, y0:y1] = 2
        if tilt_sacrum:
            # S1's top rises towards the back by up to 20 mm (sacral slope).
            for c in range(y0, y1):
                rise = int(round(20 * (c - y0) / (y1 - y0) / sz))
                cm[top + 1: top + 1 + rise, c] = 2
    z = 60.0 + (20.0 if tilt_sacrum else 0.0)
    centres = []
    for i, (h, d) in enumerate(zip(heights, discs)):
        z += d
        r0, r1 = int(round(z / sz)), int(round((z + h) / sz))
        if i not in drop:
            cm[r0:r1, y0:y1] = 1
            centres.append((r0 + r1 - 1) / 2 * sz)
        z += h
    return cm, centres


@pytest.mark.parametrize("spacing", [(0.7, 0.7), (3.0, 1.0), (5.0, 0.8)])
def test_normal_spine_gives_ordered_bodies_without_breaks(spacing):
    cm, centres = spine_map(spacing)
    f = find_bodies(cm, spacing)
    assert len(f.bodies) == 6
    assert f.sacrum is not None and not f.sacrum_break and not f.sacrum_unsure and f.breaks == []
    got = [b.z_center_mm for b in f.bodies]
    assert got == sorted(got)
    np.testing.assert_allclose(got, centres, atol=spacing[0])
    assert not any(b.cut for b in f.bodies)
    assert 30 < f.typical_step_mm < 42


def test_missed_body_breaks_the_chain_there():
    cm, _ = spine_map(drop=(2,))  # L3 missed
    f = find_bodies(cm, (1.0, 1.0))
    assert len(f.bodies) == 5
    assert f.breaks == [1]  # between the second body (L4) and the third (L2)
    assert not f.connected(0, 2) and f.connected(2, 4) and f.connected(0, 1)


def test_missed_lowest_body_breaks_the_link_to_the_sacrum():
    cm, _ = spine_map(drop=(0,))
    f = find_bodies(cm, (1.0, 1.0))
    assert len(f.bodies) == 5 and f.sacrum_break and f.breaks == []


def test_tilted_sacrum_keeps_l5_and_its_link():
    cm, centres = spine_map(tilt_sacrum=True)
    f = find_bodies(cm, (1.0, 1.0))
    assert len(f.bodies) == 6 and not f.sacrum_break


def test_a_lowest_body_on_the_sacrum_with_no_disc_between_is_s1():
    # The finder called S1 a body: it sits directly on the rest of the sacrum.
    cm, centres = spine_map(discs=[0] + DISCS[1:], heights=[30] + HEIGHTS[1:])
    f = find_bodies(cm, (1.0, 1.0))
    assert len(f.bodies) == 5 and not f.sacrum_unsure
    np.testing.assert_allclose([b.z_center_mm for b in f.bodies], centres[1:], atol=1.0)
    assert f.sacrum.top_mm == pytest.approx(90, abs=1.5)  # S1's top is now the sacrum's
    assert any("S1" in n for n in f.notes)


@pytest.mark.parametrize("sacrum_mm, unsure", [(15, True), (25, True), (40, False)])
def test_a_sacrum_piece_smaller_than_the_body_above_leaves_that_body_unsure(sacrum_mm, unsure):
    # Only the top `sacrum_mm` of the sacrum is in view (below a disc): is it S1, or S2
    # under an S1 the finder called a body? Bodies are 40 mm deep, L5 27 mm tall.
    cm, _ = spine_map()
    cm[: 60 - sacrum_mm] = 0
    f = find_bodies(cm, (1.0, 1.0))
    assert f.sacrum is not None and len(f.bodies) == 6
    assert f.sacrum_unsure is unsure
    assert any("may be S1" in n for n in f.notes) is unsure


@pytest.mark.parametrize("bridge", ["thin", "oblique"])
def test_bodies_bridged_across_a_disc_are_split(bridge):
    cm, centres = spine_map()
    # Bridge the disc between the second and third bodies (rows 107..115).
    lo, hi = int(centres[1] + 14), int(centres[2] - 13)
    if bridge == "thin":
        cm[lo - 1:hi + 2, 50:53] = 1
    else:
        for r in range(lo - 1, hi + 2):
            c = 35 + 3 * (r - lo)
            cm[r, c:c + 4] = 1
    f = find_bodies(cm, (1.0, 1.0))
    assert len(f.bodies) == 6, f.notes
    np.testing.assert_allclose([b.z_center_mm for b in f.bodies], centres, atol=3.0)
    assert f.breaks == []


def test_two_bodies_merged_without_any_disc_are_split_in_two():
    cm, centres = spine_map()
    lo, hi = int(centres[1] + 14), int(centres[2] - 13)
    cm[lo - 1:hi + 2, 30:70] = 1
    cm[lo + 2: hi - 1, 30:40] = 0  # a slight waist at the disc
    f = find_bodies(cm, (1.0, 1.0))
    assert len(f.bodies) == 6 and f.breaks == []


def test_bodies_fused_beyond_repair_stop_the_count():
    cm, centres = spine_map()
    lo, hi = int(centres[1] + 14), int(centres[2] - 13)
    cm[lo - 1:hi + 2, 30:70] = 1  # the disc filled completely: no waist to cut at
    f = find_bodies(cm, (1.0, 1.0))
    assert len(f.bodies) == 5
    assert f.breaks == [0, 1]  # neither the body below nor the one above may be counted through it
    assert not f.connected(0, 2)


def test_a_single_tilted_body_is_not_cut():
    # A 28 mm tall, 40 mm deep body tilted by 30 degrees (L5 on a steep sacrum) reaches 44 mm along z.
    zz, yy = np.mgrid[0:120, 0:100].astype(float)
    theta = np.radians(30)
    u = (zz - 60) * np.cos(theta) - (yy - 50) * np.sin(theta)
    v = (zz - 60) * np.sin(theta) + (yy - 50) * np.cos(theta)
    cm = ((np.abs(u) <= 14) & (np.abs(v) <= 20)).astype(np.uint8)
    assert np.ptp(np.nonzero(cm)[0]) + 1 >= 43
    f = find_bodies(cm, (1.0, 1.0))
    assert len(f.bodies) == 1 and not f.notes


def test_fragments_of_one_body_are_joined_and_specks_dropped():
    cm, centres = spine_map()
    c = int(centres[3])
    cm[c - 1:c + 1, :] = np.where(cm[c - 1:c + 1, :] == 1, 0, cm[c - 1:c + 1, :])  # a crack through L2
    cm[200:203, 100:103] = 1  # a speck behind the spine
    cm[int(centres[4]) - 5:int(centres[4]) + 5, 71:75] = 1  # a piece beside L1 (overlapping it in z)
    f = find_bodies(cm, (1.0, 1.0))
    assert len(f.bodies) == 6
    np.testing.assert_allclose([b.z_center_mm for b in f.bodies], centres, atol=2.0)
    assert f.breaks == []


def test_body_cut_by_the_image_edge_is_kept_and_marked():
    cm, centres = spine_map()
    top = int(centres[-1])  # cut through the middle of the highest body
    f = find_bodies(cm[:top], (1.0, 1.0))
    assert len(f.bodies) == 6 and f.bodies[-1].cut and not f.bodies[0].cut
    g = find_bodies(cm[int(centres[0]):], (1.0, 1.0))  # the bottom cut through L5, no sacrum
    assert g.sacrum is None and g.bodies[0].cut and len(g.bodies) == 6


def test_no_sacrum_and_empty_maps():
    cm, _ = spine_map(sacrum=False)
    f = find_bodies(cm, (1.0, 1.0))
    assert f.sacrum is None and len(f.bodies) == 6 and not f.sacrum_break
    empty = find_bodies(np.zeros((100, 80), np.uint8), (1.0, 1.0))
    assert empty.bodies == [] and empty.sacrum is None
    with pytest.raises(ValueError):
        find_bodies(np.zeros((4, 4, 4)), (1.0, 1.0))


def test_a_sacrum_label_high_up_the_spine_is_not_the_sacrum():
    cm, _ = spine_map(sacrum=False)
    cm[280:300, 30:70] = 2  # a thoracic body mistaken for sacrum, above the bodies
    f = find_bodies(cm, (1.0, 1.0))
    assert f.sacrum is None and len(f.bodies) == 6


def test_steps_are_judged_locally_along_a_thoracolumbar_spine():
    # Five lumbar bodies (step 37 mm) under seven thoracic ones (step 25 mm).
    heights, discs = [27] * 5 + [20] * 7, [10] * 5 + [5] * 7
    cm, centres = spine_map(heights=heights, discs=discs, height_mm=500)
    f = find_bodies(cm, (1.0, 1.0))
    assert len(f.bodies) == 12 and f.breaks == [] and not f.sacrum_break
    cm, _ = spine_map(heights=heights, discs=discs, height_mm=500, drop=(8,))  # a thoracic body missed
    assert find_bodies(cm, (1.0, 1.0)).breaks == [7]
