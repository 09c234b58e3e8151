"""naming.name_levels: counting from the sacrum and from the ribs, on constructed spines and
on the two shared real CTs (whole and cropped)."""

import os
from pathlib import Path

import numpy as np
import pytest

from osteobmd.bodies import find_bodies
from osteobmd.naming import TRANSITIONAL_FLAG, name_levels
from osteobmd.ribs import CANNOT_TELL, NO_RIB, RIB, BodyRibs, RibEvidence, SideEvidence
from test_bodies import spine_map

N, R, C = NO_RIB, RIB, CANNOT_TELL


def ribs_of(verdicts):
    return RibEvidence([BodyRibs(v, SideEvidence(v, None, ""), SideEvidence(v, None, ""), "") for v in verdicts])


def spine(n_lumbar=5, n_thoracic=2, **kw):
    heights = [27] * n_lumbar + [24] * n_thoracic
    discs = [10] * n_lumbar + [7] * n_thoracic
    cm, _ = spine_map(heights=heights, discs=discs, height_mm=60 + sum(heights) + sum(discs) + 40, **kw)
    return cm


def test_both_anchors_agree():
    f = find_bodies(spine(), (1.0, 1.0))
    r = name_levels(f, ribs_of([C, N, N, N, N, R, R]))
    assert r.names == ["L5", "L4", "L3", "L2", "L1", "T12", "T11"]
    assert r.valid and r.anchor == "sacrum+ribs" and not r.flags
    assert sorted(np.unique(r.lumbar_labels).tolist()) == [0, 1, 2, 3, 4]
    for name, value in (("L1", 1), ("L4", 4)):
        assert np.all(r.lumbar_labels[f.bodies[r.body_named(name)].mask] == value)
    assert r.lumbar_labels[f.bodies[0].mask].max() == 0  # L5 is not in the L1-L4 map
    d = r.to_dict()
    assert d["anchor"] == "sacrum+ribs" and d["valid"] and d["named_levels"][0] == "L5"


def test_sacrum_only_when_no_rib_is_seen():
    f = find_bodies(spine(n_thoracic=0), (1.0, 1.0))
    r = name_levels(f, ribs_of([C, N, N, N, N]))
    assert r.names == ["L5", "L4", "L3", "L2", "L1"] and r.anchor == "sacrum" and r.valid
    assert "ribs could not be used" in r.message


def test_ribs_only_without_a_sacrum():
    f = find_bodies(spine(sacrum=False), (1.0, 1.0))
    r = name_levels(f, ribs_of([N, N, N, N, N, R, R]))
    assert r.names == ["L5", "L4", "L3", "L2", "L1", "T12", "T11"] and r.anchor == "ribs" and r.valid
    assert "no sacrum" in r.message


@pytest.mark.parametrize("n_lumbar,pairs", [(4, 13), (6, 11)])
def test_transitional_anatomy_is_named_from_the_sacrum_and_flagged(n_lumbar, pairs):
    f = find_bodies(spine(n_lumbar=n_lumbar), (1.0, 1.0))
    r = name_levels(f, ribs_of([N] * n_lumbar + [R, R]))
    assert r.valid and r.anchor == "sacrum" and r.flags == [TRANSITIONAL_FLAG] and r.transitional
    assert r.names[:5] == ["L5", "L4", "L3", "L2", "L1"][:5]
    assert r.rib_names[n_lumbar] == "T12" and r.sacrum_names[n_lumbar] != "T12"
    assert f"{pairs} rib pairs" in r.message and "off by one" in r.message


def test_too_little_sacrum_cannot_anchor_but_the_ribs_still_can():
    cm = spine()
    cm[:45] = 0  # 15 mm of sacrum below the L5-S1 disc: L5 might be S1
    f = find_bodies(cm, (1.0, 1.0))
    alone = name_levels(f, ribs_of([C] * 7))
    assert alone.names == [None] * 7 and not alone.valid and alone.anchor is None
    assert "L5 or S1" in alone.message
    with_ribs = name_levels(f, ribs_of([C, N, N, N, N, R, R]))
    assert with_ribs.anchor == "ribs" and with_ribs.valid
    assert with_ribs.names == ["L5", "L4", "L3", "L2", "L1", "T12", "T11"]
    assert "L5 or S1" in with_ribs.message


def test_no_anchor_gives_no_names_and_says_why():
    f = find_bodies(spine(sacrum=False, n_thoracic=0), (1.0, 1.0))
    r = name_levels(f, ribs_of([N] * 5))
    assert not r.valid and r.anchor is None and r.names == [None] * 5
    assert "no sacrum is in view" in r.message and "no rib was seen" in r.message
    assert r.lumbar_labels.max() == 0


def test_a_missed_body_stops_the_count_from_each_anchor():
    # L3 missed: from the sacrum only L5, L4; from the ribs L2, L1, T12, T11.
    f = find_bodies(spine(drop=(2,)), (1.0, 1.0))
    r = name_levels(f, ribs_of([C, N, N, N, R, R]))
    assert r.names == ["L5", "L4", "L2", "L1", "T12", "T11"]
    assert r.sources[:2] == ["sacrum", "sacrum"] and r.sources[2] == "ribs"
    assert r.anchor == "sacrum|ribs" and "could not be checked" in r.message
    # Without the ribs, nothing above the gap may be named.
    r = name_levels(f, ribs_of([C, N, N, N, C, C]))
    assert r.names == ["L5", "L4", None, None, None, None]


def test_missed_l5_means_the_sacrum_cannot_anchor():
    f = find_bodies(spine(drop=(0,)), (1.0, 1.0))
    r = name_levels(f, ribs_of([N, N, N, N, R, R]))
    assert r.anchor == "ribs" and r.names == ["L4", "L3", "L2", "L1", "T12", "T11"]
    r = name_levels(f, ribs_of([N, N, N, N, C, C]))
    assert not r.valid and "missing between the sacrum" in r.message


def test_rib_anchor_needs_a_judged_rib_free_body_below_and_consistent_evidence():
    f = find_bodies(spine(sacrum=False), (1.0, 1.0))
    # The body below the lowest rib-bearing one cannot be judged: no anchor.
    assert not name_levels(f, ribs_of([N, N, N, N, C, R, R])).valid
    # A rib-free body above a rib-bearing one: inconsistent, no anchor.
    r = name_levels(f, ribs_of([N, N, R, N, N, R, R]))
    assert not r.valid and "inconsistent" in r.message
    # The lowest body in view already bears ribs (scan cut off at T12).
    g = find_bodies(spine(sacrum=False)[150:], (1.0, 1.0))
    assert not name_levels(g, ribs_of([R] * len(g.bodies))).valid


@pytest.mark.parametrize("low", [[R, R], [R], [C, R]])
def test_ribs_beside_the_lowest_bodies_below_a_lumbar_stretch_are_the_pelvis(low):
    # No sacrum in view; the lowest one or two bodies show long bones (the iliac crests) below
    # four rib-free bodies: the ribs still anchor, at the real T12.
    n_low = len(low)
    f = find_bodies(spine(n_lumbar=4 + n_low, n_thoracic=2, sacrum=False), (1.0, 1.0))
    r = name_levels(f, ribs_of(low + [N, N, N, N, R, R]))
    assert r.valid and r.anchor == "ribs"
    assert r.names[n_low:] == ["L4", "L3", "L2", "L1", "T12", "T11"]


def test_the_pelvis_rule_never_hides_a_thoracic_rib_or_a_short_lumbar_stretch():
    # Only two rib-free bodies above the low "ribs": not the lumbar spine, so nothing is set aside.
    f = find_bodies(spine(n_lumbar=4, n_thoracic=2, sacrum=False), (1.0, 1.0))
    r = name_levels(f, ribs_of([R, R, N, N, R, R]))
    assert not r.valid and "already bears ribs" in r.message
    # Missed ribs above T12 stay inconsistent evidence (the rule looks at the lowest bodies only).
    g = find_bodies(spine(n_lumbar=5, n_thoracic=5, sacrum=False), (1.0, 1.0))
    r = name_levels(g, ribs_of([C, N, N, N, N, R, N, N, N, R]))
    assert not r.valid and "inconsistent" in r.message


# ---------------------------------------------------------------- real CT
CROPS = [(None, 0), ("top", 30), ("top", 60), ("bottom", 30), ("bottom", 60)]


def _real(case_name):
    from real_spine_refs import pancreas_spine, totalsegmentator_spine

    return {"pancreas": pancreas_spine, "totalsegmentator": totalsegmentator_spine}[case_name]()


def _crop(case, where, mm):
    n_slices = case.ct.GetSize()[2]
    cut = int(round(mm / case.ct.GetSpacing()[2]))
    if where is None:
        return case
    return case.crop_rows(0, n_slices - cut) if where == "top" else case.crop_rows(cut, n_slices)


def _name_real(case):
    from osteobmd.ribs import detect_ribs

    finding = find_bodies(case.class_map, case.spacing_zy)
    ribs = detect_ribs(case.ct, finding, case.canal)
    return finding, ribs, name_levels(finding, ribs)


@pytest.mark.parametrize("case_name", ["pancreas", "totalsegmentator"])
def test_real_ct_whole_view_is_named_right_from_both_anchors(case_name, tmp_path):
    case = _real(case_name)
    finding, ribs, naming = _name_real(case)
    truth = case.true_names(finding)
    assert naming.anchor == "sacrum+ribs" and naming.valid and not naming.flags
    for got, want in zip(naming.names, truth):
        if want is not None:
            assert got == want
    assert [n for n in naming.names if n in ("L1", "L2", "L3", "L4")] == ["L4", "L3", "L2", "L1"]
    out = Path(os.environ.get("OSTEOBMD_FIGURES", tmp_path))
    from naming_figure import save_naming_figure

    png = save_naming_figure(case, finding, ribs, naming, out / f"naming_{case.name}.png")
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("case_name", ["pancreas", "totalsegmentator"])
@pytest.mark.parametrize("where,mm", CROPS[1:])
def test_real_ct_crops_never_carry_a_wrong_name(case_name, where, mm):
    case = _crop(_real(case_name), where, mm)
    finding, ribs, naming = _name_real(case)
    truth = case.true_names(finding)
    wrong = [(g, w) for g, w in zip(naming.names, truth) if g is not None and w is not None and g != w]
    assert not wrong, (naming.message, naming.names, truth)
    sacrum_in_view = finding.sacrum is not None
    t12_with_l1_below = "T12" in truth and "L1" in truth
    if sacrum_in_view or t12_with_l1_below:
        # An anchor is in view: every reference body is named, and named right.
        assert naming.valid, naming.message
        assert all(g == w for g, w in zip(naming.names, truth) if w is not None)
    if not naming.valid:
        assert naming.anchor is None and all(n is None for n in naming.names)


def _without(case, level):
    """The case as if the network had missed one reference body."""
    from dataclasses import replace

    class_map = case.class_map.copy()
    class_map[case.truth[level]] = 0
    return replace(case, class_map=class_map)


def test_real_ct_missed_body_is_never_counted_across():
    case = _without(_real("pancreas"), "L3")
    finding, ribs, naming = _name_real(case)
    truth = case.true_names(finding)
    assert naming.anchor == "sacrum|ribs"
    assert [(n, t) for n, t in zip(naming.names, truth) if t] == [
        ("L5", "L5"), ("L4", "L4"), ("L2", "L2"), ("L1", "L1"), ("T12", "T12")]


def test_real_ct_missed_t12_without_sacrum_names_nothing():
    case = _without(_crop(_real("pancreas"), "bottom", 60), "T12")
    finding, ribs, naming = _name_real(case)
    truth = case.true_names(finding)
    # The missed T12's ribs are not lent to L1 (which would make it "T12").
    assert ribs.bodies[truth.index("L1")].verdict != RIB
    assert not naming.valid and naming.anchor is None, naming.message
