"""The level-naming check against the anchors (T12 above L1, L5 and the sacrum below L4)."""

import numpy as np

from osteobmd.levels import check_levels

SPACING = (1.5, 1.5)
STEP = 24  # pixels between body centres (36 mm)




def as_z_up(values):
    """Bodies listed from superior to inferior, placed with z growing superior."""
    img = np.zeros((220, 60), np.uint8)
    for n, value in enumerate(values):
        zc = 200 - n * STEP
        if value:
            img[zc - 8:zc + 8, 20:45] = value
    return img


def test_full_chain_is_consistent():
    check = check_levels(as_z_up([7, 1, 2, 3, 4, 5, 6]), SPACING)
    assert check.anchor == "sacrum+T12" and check.consistent is True


def test_no_anchor_in_view_says_so():
    check = check_levels(as_z_up([1, 2, 3, 4]), SPACING)
    assert check.anchor == "none" and check.consistent is None
    assert "without an anatomical anchor" in check.messages[0]


def test_shift_by_one_is_caught():
    # What the network called L4 sits directly on the sacrum: the names are shifted.
    check = check_levels(as_z_up([1, 2, 3, 4, 6]), SPACING)
    assert check.anchor == "sacrum" and check.consistent is False
    assert "shifted" in check.messages[0]


def test_t12_not_directly_above_l1_is_caught():
    check = check_levels(as_z_up([7, 0, 1, 2, 3, 4]), SPACING)
    assert check.consistent is False and "T12" in check.messages[0]


def test_tiny_anchor_specks_are_ignored():
    img = as_z_up([1, 2, 3, 4])
    img[10:12, 20:22] = 6  # four pixels of "sacrum"
    assert check_levels(img, SPACING).anchor == "none"


def test_uneven_spacing_is_doubted_even_with_anchors():
    # T12 L1 | (two unlabelled bodies) | L2 L3 ... : the sacrum chain alone would look fine.
    check = check_levels(as_z_up([1, 2, 0, 0, 3, 4, 5, 6]), SPACING)
    assert check.consistent is False and "evenly spaced" in check.messages[0]
