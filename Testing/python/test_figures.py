"""overview.png and patches.png cannot mislead: checked on the artists of figures drawn from a
real pipeline run on the sample CT (every level invalid there) and from that result with
some levels made valid (a partly valid case)."""

import copy
import re

import matplotlib.colors as mcolors
import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from osteobmd import io as ctio
from osteobmd.config import CLASSES, classify_bmd
from osteobmd.figures import (
    DISCLAIMER, INVALID_COLOR, NOT_VALID, STRIKE_GID, overview_figure, patches_figure,
)
from osteobmd.bodies import find_bodies
from osteobmd.naming import name_levels
from osteobmd.patches import Patch
from osteobmd.results import naming_notes, naming_verdict
from conftest import SAMPLE_CT
from test_naming import C, N, R, ribs_of, spine

# A count's unit is the thing counted ("6 rib-free bodies", "11 rib pairs").
UNIT = r"\s?(?:mg/cm³|mg/cm3|HU|mm²|mm2|mm|%)|\s(?:rib|bod|pair|level|vertebra|slice|case)"
NUMBER = r"(?<![\w.])[-−+]?\d+(?:\.\d+)?"


@pytest.fixture(scope="module")
def sample_case(pipeline_output):
    """(result, ct, labels, patches) of the real run on the sample CT."""
    out_dir, result = pipeline_output
    npz = np.load(out_dir / "patches.npz")
    patches = {str(n): Patch(hu=h, x01=x, info=result.vertebra(str(n)).patch, coverage=1.0)
               for n, h, x in zip(npz["names"], npz["hu"], npz["x01"])}
    return result, ctio.read_ct(SAMPLE_CT), sitk.ReadImage(str(out_dir / "labels.nrrd")), patches


def all_invalid(result):
    """The real result with every level refused, as when no anchor in view names the levels."""
    r = copy.deepcopy(result)
    for v in r.vertebrae:
        v.valid, v.reasons = False, ["levels could not be named by counting from the sacrum or the ribs"]
    r.mean_bmd_mg_cm3, r.classification, r.valid = None, None, False
    return r


def partly_valid(result):
    """The real result with L1 and L3 passing their checks: mean over L1+L3, L2 and L4 still invalid."""
    r = copy.deepcopy(result)
    for v in r.vertebrae:
        if v.name in ("L1", "L3"):
            v.valid, v.reasons = True, []
    r.mean_bmd_mg_cm3 = float(np.mean([r.vertebra(n).bmd_mg_cm3 for n in ("L1", "L3")]))
    r.classification = classify_bmd(r.mean_bmd_mg_cm3)
    r.valid = True
    return r


@pytest.fixture(scope="module")
def figures(sample_case):
    real, ct, labels, patches = sample_case
    result = all_invalid(real)
    mixed = partly_valid(result)
    return {
        "invalid": (result, [overview_figure(result, ct, labels, patches), patches_figure(result, patches)]),
        "partly valid": (mixed, [overview_figure(mixed, ct, labels, patches), patches_figure(mixed, patches)]),
    }


def drawn_texts(fig):
    fig.canvas.draw()
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def is_struck(fig, text, renderer) -> bool:
    box = text.get_window_extent(renderer)
    for line in fig.findobj(Line2D):
        if line.get_gid() != STRIKE_GID:
            continue
        (x0, y), (x1, _) = line.get_transform().transform(np.column_stack(line.get_data()))
        if box.y0 < y < box.y1 and x0 <= box.x0 + 1 and x1 >= box.x1 - 1:
            return True
    return False


def test_the_figure_cases_are_what_they_claim(figures):
    invalid, mixed = figures["invalid"][0], figures["partly valid"][0]
    assert not invalid.valid and all(not v.valid for v in invalid.vertebrae)
    assert all(v.bmd_mg_cm3 is not None for v in invalid.vertebrae)  # numbers exist, and are not to be trusted
    assert [v.valid for v in mixed.vertebrae] == [True, False, True, False] and mixed.valid


@pytest.mark.parametrize("case", ["invalid", "partly valid"])
def test_an_invalid_levels_number_is_greyed_struck_and_marked_wherever_drawn(figures, case):
    result, figs = figures[case]
    for fig in figs:
        renderer = fig.canvas.get_renderer()
        texts = drawn_texts(fig)
        for v in result.vertebrae:
            number = f"{v.bmd_mg_cm3:.1f} mg/cm³"
            showing = [t for t in texts if number in t.get_text()]
            assert showing, f"{v.name}'s BMD is not drawn"
            for t in showing:
                if v.valid:
                    assert not mcolors.same_color(t.get_color(), INVALID_COLOR) and not is_struck(fig, t, renderer)
                else:
                    assert mcolors.same_color(t.get_color(), INVALID_COLOR), (v.name, t.get_text())
                    assert is_struck(fig, t, renderer), (v.name, t.get_text())
            if not v.valid:  # "not valid" and the reason in full, beside it
                reasons = [t.get_text().replace("\n", " ") for t in texts if t.get_gid() == f"reason {v.name}"]
                assert reasons and reasons[0].startswith(f"{NOT_VALID}: ")
                assert all(r in reasons[0] for r in v.reasons)


def test_the_class_is_drawn_only_for_a_valid_mean(figures):
    for case, (result, figs) in figures.items():
        overview = figs[0]
        shown = [t.get_text() for t in drawn_texts(overview) if t.get_gid() == "class"]
        if result.valid:
            assert shown == [result.classification.upper()]
        else:
            assert shown == ["NO VALID MEASUREMENT"]
            assert not any(c.upper() in t.get_text() for t in drawn_texts(overview) for c in CLASSES)
            reasons = {t.get_text().replace("\n", " ") for t in drawn_texts(overview) if t.get_gid() == "reason"}
            assert {f"• {r}" for v in result.vertebrae if v.name in result.mean_vertebrae for r in v.reasons} == reasons


def test_every_drawn_number_has_its_unit(figures, sample_case):
    for result, figs in figures.values():
        for fig in figs:
            ticks = {id(t) for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()}
            for ax in fig.axes:  # tick numbers take their unit from the axis label
                if ax.get_xticks().size and ax.xaxis.get_visible() and any(t.get_text() for t in ax.get_xticklabels()):
                    assert "(mm)" in ax.get_xlabel() and "(mm)" in ax.get_ylabel()
            for t in drawn_texts(fig):
                if id(t) in ticks:
                    continue
                s = t.get_text().replace("\n", " ").replace(f"case {result.case}", "case")
                bare = [m.group() for m in re.finditer(NUMBER + r"(?:[-–]\d+(?:\.\d+)?)?", s)
                        if not re.match(UNIT, s[m.end():])]
                assert not bare, f"number(s) {bare} without a unit in {s!r}"


def test_no_text_is_cut_overlapping_or_over_a_cell_border(figures):
    for result, figs in figures.values():
        for fig in figs:
            renderer = fig.canvas.get_renderer()
            texts = drawn_texts(fig)
            boxes = [t.get_window_extent(renderer) for t in texts]
            page = fig.bbox
            for t, b in zip(texts, boxes):
                assert page.x0 <= b.x0 and b.x1 <= page.x1 and page.y0 <= b.y0 and b.y1 <= page.y1, t.get_text()
            for a in range(len(texts)):
                for b in range(a + 1, len(texts)):
                    shrunk = boxes[b].padded(-0.5)
                    assert not boxes[a].overlaps(shrunk), (texts[a].get_text(), texts[b].get_text())
            cells = [p.get_window_extent(renderer) for p in fig.patches if isinstance(p, Rectangle)]
            for t, b in zip(texts, boxes):
                for cell in cells:
                    inside = cell.x0 <= b.x0 and b.x1 <= cell.x1 and cell.y0 <= b.y0 and b.y1 <= cell.y1
                    assert inside or not cell.overlaps(b.padded(-0.5)), t.get_text()


def test_every_picture_carries_the_disclaimer(figures):
    for _, figs in figures.values():
        for fig in figs:
            assert [t.get_text() for t in drawn_texts(fig)].count(DISCLAIMER) == 1


def test_the_level_naming_verdict_follows_the_naming_stage_and_is_drawn(sample_case):
    # Each verdict from the naming stage's own record (name_levels on constructed spines),
    # stored as the pipeline stores it (level_anchor, level_naming).
    result, ct, labels, patches = sample_case
    r = copy.deepcopy(result)
    f = find_bodies(spine(n_lumbar=5, n_thoracic=2), (1.0, 1.0))
    cases = {
        "agree": name_levels(f, ribs_of([C, N, N, N, N, R, R])),
        "sacrum only": name_levels(f, ribs_of([C] * 7)),
        "transitional": name_levels(f, ribs_of([C, N, N, N, R, R, R])),
        "none": name_levels(find_bodies(spine(sacrum=False), (1.0, 1.0)), ribs_of([C] * 7)),
    }
    seen = {}
    for key, naming in cases.items():
        r.level_anchor, r.level_naming = naming.anchor or "none", naming.to_dict()
        seen[key] = naming_verdict(r)
        verdict, lines = seen[key]
        assert naming.message in lines
        r.messages = naming_notes(r.level_naming) + ["another note"]  # as the pipeline files its notes
        drawn = [t.get_text().replace("\n", " ") for t in drawn_texts(overview_figure(r, ct, labels, patches))]
        assert all(line in drawn for line in lines)
        assert "• another note" in drawn  # every note is drawn, the naming's own (message, flags) once
        for note in naming_notes(r.level_naming):
            assert sum(note in text for text in drawn) == 1, note
    assert seen["agree"][0] is True and "both agree" in seen["agree"][1][0]
    assert seen["sacrum only"][0] is True and "sacrum only" in seen["sacrum only"][1][0]
    assert seen["transitional"][0] is False and "doubtful" in seen["transitional"][1][0]
    assert any("off by one" in line for line in seen["transitional"][1])
    assert seen["none"][0] is None and "NOT known" in seen["none"][1][0]
    r.level_anchor, r.level_naming = "user", None
    assert naming_verdict(r) == (None, ["Level names as given in the user's label map (not checked)."])
