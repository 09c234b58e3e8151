"""The ground-truth dataset (docs/DESIGN.md) and the training samples made from it.

    DATA/<case_id>/ct.nrrd       the CT (any format io.read_ct reads: ct.nii.gz, ct.mha, a ct/ DICOM folder ...)
    DATA/<case_id>/labels.nrrd   uint8 label map on the CT's grid, 1..4 = L1..L4
    DATA/<case_id>/bmd.csv       vertebra,bmd_mg_cm3 (reference, e.g. QCT); needed for regression only
    DATA/<case_id>/case.json     optional: {"source", "corrected", "vendor", "split": "train"|"val"|"test"}

Samples are made with the pipeline's own functions, so training sees exactly what
inference sees (one code path):
- segmentation: `io.read_ct` / `io.read_labelmap` -> `canal.detect_canal` -> for each slab
  slice `sagittal.sagittal_slice` + `sagittal.prepare_for_network` (window, resample,
  pad) and the labels with `sagittal.resample_labels` on the same grid;
- regression: `patches.vertebra_geometry` (centres) -> `patches.extract_patch` with the
  label map, as `pipeline.run_case` calls it, at the centre and at small jittered centres.

Prepared samples are cached as .npz under the output folder, named by a hash of the
case's files and the preprocessing settings (never by the case id, which may identify a
patient), so a second run skips the preparation.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config import ANCHOR_CLASSES, LABEL_OF, VERTEBRA_NAMES, CanalConfig, PatchConfig, SegmentationConfig
from ..errors import InputError

# Bump when the way samples are made changes: old caches are then ignored.
CACHE_VERSION = 1
IMAGE_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".mha", ".mhd", ".nhdr")
# levels.nrrd codes (the synthetic generator's, documented in docs/DESIGN.md) -> network classes.
ANCHOR_OF_LEVEL_CODE = {12: ANCHOR_CLASSES["T12"], 25: ANCHOR_CLASSES["L5"], 30: ANCHOR_CLASSES["sacrum"]}

LogFn = Callable[[str], None]


@dataclass
class CaseFolder:
    case_id: str
    folder: Path
    ct_path: Path
    labels_path: Optional[Path]
    bmd: Dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    # Optional every-level body map (codes T12=12, L1..L5=21..25, sacrum=30): the anchors.
    levels_path: Optional[Path] = None

    @property
    def split(self) -> Optional[str]:
        s = self.info.get("split")
        return str(s).lower() if s else None


def _find_image(folder: Path, stem: str) -> Optional[Path]:
    for suffix in IMAGE_SUFFIXES:
        p = folder / (stem + suffix)
        if p.is_file():
            return p
    d = folder / stem
    if d.is_dir():  # a DICOM series folder
        return d
    return None


def read_bmd_csv(path: Path) -> Dict[str, float]:
    """vertebra -> reference BMD (mg/cm3) from a case's bmd.csv."""
    out: Dict[str, float] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            if "vertebra" not in cols or "bmd_mg_cm3" not in cols:
                raise InputError(
                    f"'{path}' must have the columns vertebra,bmd_mg_cm3 (found {reader.fieldnames}); "
                    "one row per vertebra, e.g. L1,112.5."
                )
            for row in reader:
                name = (row[cols["vertebra"]] or "").strip().upper()
                value = (row[cols["bmd_mg_cm3"]] or "").strip()
                if not name or not value:
                    continue
                if name not in VERTEBRA_NAMES:
                    raise InputError(f"'{path}' names vertebra {name!r}; use L1, L2, L3 or L4.")
                try:
                    bmd = float(value)
                except ValueError:
                    raise InputError(f"'{path}': the BMD of {name} is {value!r}, not a number in mg/cm3.") from None
                if not np.isfinite(bmd) or not 0.0 <= bmd <= 600.0:
                    raise InputError(f"'{path}': the BMD of {name} is {bmd}, outside 0..600 mg/cm3.")
                out[name] = bmd
    except OSError as err:
        raise InputError(f"'{path}' could not be read ({err.strerror}).") from None
    return out


def find_cases(data_dir, need_labels: bool = True, need_bmd: bool = False) -> List[CaseFolder]:
    """Every usable case folder under `data_dir` (sorted by name)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(
            f"The training data folder '{data_dir}' does not exist. Give a folder with one sub-folder per "
            "case holding ct.nrrd, labels.nrrd (and bmd.csv for regression)."
        )
    cases: List[CaseFolder] = []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        ct = _find_image(folder, "ct")
        if ct is None:
            continue
        labels = _find_image(folder, "labels")
        if need_labels and labels is None:
            continue
        bmd_path = folder / "bmd.csv"
        bmd = read_bmd_csv(bmd_path) if bmd_path.is_file() else {}
        if need_bmd and not bmd:
            continue
        info: dict = {}
        if (folder / "case.json").is_file():
            try:
                info = json.loads((folder / "case.json").read_text(encoding="utf-8"))
            except ValueError:
                raise InputError(f"'{folder / 'case.json'}' is not valid JSON; fix or remove it.") from None
            if not isinstance(info, dict):
                info = {}
        if need_bmd and info.get("bmd_source") == "osteobmd":
            # bmd.csv holds the tool's own predictions (a saved correction), not a reference:
            # training on it would teach the network its own errors.
            continue
        cases.append(CaseFolder(folder.name, folder, ct, labels, bmd, info, _find_image(folder, "levels")))
    if not cases:
        need = "ct.nrrd and labels.nrrd" + (" and bmd.csv" if need_bmd else "")
        raise InputError(
            f"No usable case in '{data_dir}': each case is a sub-folder with {need} (see docs/DESIGN.md, "
            "'Ground-truth case folder')."
        )
    return cases


def split_cases(
    cases: Sequence[CaseFolder], val_fraction: float, seed: int
) -> Tuple[List[CaseFolder], List[CaseFolder]]:
    """(train, val). A "split" in case.json wins ("test" cases are left out of both);
    otherwise a seeded shuffle puts `val_fraction` of the cases (at least one when there
    are two or more) in validation."""
    if any(c.split for c in cases):
        train = [c for c in cases if c.split in (None, "train")]
        val = [c for c in cases if c.split in ("val", "validation")]
        return train, val
    order = sorted(cases, key=lambda c: c.case_id)
    rng = np.random.default_rng([int(seed), 7])
    perm = rng.permutation(len(order))
    n_val = int(round(val_fraction * len(order)))
    if val_fraction > 0 and len(order) >= 2:
        n_val = min(max(n_val, 1), len(order) - 1)
    else:
        n_val = 0
    val = sorted((order[i] for i in perm[:n_val]), key=lambda c: c.case_id)
    train = sorted((order[i] for i in perm[n_val:]), key=lambda c: c.case_id)
    return train, val


def ground_truth_split(data_dir, val_fraction: float, seed: int, need_bmd: bool = False):
    """(all cases, train, val) of a ground-truth folder; InputError when nothing is left to train on."""
    cases = find_cases(data_dir, need_labels=True, need_bmd=need_bmd)
    train, val = split_cases(cases, val_fraction, seed)
    if not train:
        raise InputError(f"No training case in '{data_dir}' (all are marked val/test in case.json).")
    return cases, train, val


def data_record(data_dir, train: Sequence[CaseFolder], val: Sequence[CaseFolder], **counts) -> dict:
    """What a weights file says about its training data (never a case id)."""
    return {"folder": Path(data_dir).name, "cases_train": len(train), "cases_val": len(val), **counts,
            "case_ids_sha256": cases_fingerprint(list(train) + list(val))}


def cases_fingerprint(cases: Sequence[CaseFolder]) -> str:
    """A hash of the case ids (identifies the data without naming any case)."""
    h = hashlib.sha256()
    for c in sorted(cases, key=lambda c: c.case_id):
        h.update(c.case_id.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def _file_stamp(path: Optional[Path]) -> str:
    if path is None:
        return "-"
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def cache_key(case: CaseFolder, settings: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({
        "v": CACHE_VERSION,
        "case": case.case_id,
        "ct": _file_stamp(case.ct_path),
        "labels": _file_stamp(case.labels_path),
        "bmd": case.bmd,
        "settings": settings,
    }, sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest()[:24]


def _cached(cache_dir: Optional[Path], key: str, make: Callable[[], dict]) -> dict:
    if cache_dir is None:
        return make()
    path = Path(cache_dir) / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):
            pass  # a damaged cache file is made again
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **data)
    tmp.replace(path)
    return data


# --------------------------------------------------------------------------- segmentation
@dataclass
class SegmentationSamples:
    """One case's slab slices on the network grid."""

    images: np.ndarray  # (n, H, W) float32 in [0, 1]
    labels: np.ndarray  # (n, H, W) uint8 0..4
    content: Tuple[int, int, int, int]  # rows r0:r1, cols c0:c1 of the network frame holding image data
    slab_source: str  # "canal" or "labels" (no canal found: the slab around the labelled vertebrae)


def _label_slab(lab_kji: np.ndarray, width: int) -> List[int]:
    i_idx = np.nonzero(lab_kji)[2]
    centre = int(round(float(np.median(i_idx))))
    first = max(0, centre - (width - 1) // 2)
    return list(range(first, min(lab_kji.shape[2], first + width)))


def _with_anchors(lab: np.ndarray, levels_path: Path, ct) -> np.ndarray:
    """L1-L4 from the label map, plus the anchor classes from the level map where it is background."""
    import SimpleITK as sitk

    from .. import io as ctio

    levels = ctio.to_lps(sitk.ReadImage(str(levels_path)))
    if levels.GetSize() != ct.GetSize():
        raise InputError(f"'{levels_path}' does not lie on the CT's grid; re-export it with the CT as reference.")
    codes = sitk.GetArrayViewFromImage(levels)
    anchors = np.zeros(lab.shape, np.uint8)
    for code, cls in ANCHOR_OF_LEVEL_CODE.items():
        anchors[codes == code] = cls
    return np.where(lab > 0, lab, anchors).astype(np.uint8)


def prepare_segmentation_case(
    case: CaseFolder, seg_cfg: SegmentationConfig, canal_cfg: CanalConfig, multiple: int, anchors: bool = False
) -> dict:
    """Arrays of one case's training slices, made with the pipeline's functions."""
    import SimpleITK as sitk

    from .. import io as ctio
    from ..canal import detect_canal
    from ..sagittal import SagittalGrid, prepare_for_network, resample_labels, sagittal_slice

    ct = ctio.read_ct(case.ct_path)
    lab_img = ctio.read_labelmap(case.labels_path, ct)
    volume = sitk.GetArrayViewFromImage(ct)
    lab = sitk.GetArrayViewFromImage(lab_img)
    if not np.any(lab):
        return {"images": np.zeros((0, 1, 1), np.float16), "labels": np.zeros((0, 1, 1), np.uint8),
                "content": np.zeros(4, np.int32), "source": np.array("empty")}
    sx, sy, sz = ct.GetSpacing()
    lumbar = lab
    if anchors and case.levels_path is not None:
        lab = _with_anchors(np.asarray(lab), case.levels_path, ct)
    source = "canal"
    try:
        slab = list(detect_canal(ct, canal_cfg).slab_indices)
    except InputError:
        slab = []
    slab = [i for i in slab if np.any(lumbar[:, :, i])]
    if not slab:
        # No canal found, or the canal's slab misses the labels: the labelled mid-sagittal slab.
        source = "labels"
        slab = [i for i in _label_slab(lumbar, max(1, int(round(canal_cfg.slab_width_mm / sx))))
                if np.any(lumbar[:, :, i])]
        if not slab:  # labels in separate places: the sagittal slice with most of them
            slab = [int(np.argmax(np.count_nonzero(lumbar, axis=(0, 1))))]
    images, labels = [], []
    grid: Optional[SagittalGrid] = None
    for i in slab:
        x01, grid = prepare_for_network(sagittal_slice(volume, i), (sz, sy), seg_cfg, multiple)
        images.append(x01)
        labels.append(resample_labels(sagittal_slice(lab, i), (sz, sy), seg_cfg, multiple, grid=grid))
    (r_off, c_off), (r_n, c_n) = grid.offset, grid.resampled_shape
    H, W = grid.out_shape
    content = np.array([max(r_off, 0), min(r_off + r_n, H), max(c_off, 0), min(c_off + c_n, W)], np.int32)
    return {
        "images": np.stack(images).astype(np.float16),
        "labels": np.stack(labels).astype(np.uint8),
        "content": content,
        "source": np.array(source),
    }


def load_segmentation_samples(
    cases: Sequence[CaseFolder], seg_cfg: SegmentationConfig, canal_cfg: CanalConfig, multiple: int,
    cache_dir: Optional[Path], log: LogFn, anchors: bool = False,
) -> List[SegmentationSamples]:
    settings = {"seg": asdict(seg_cfg), "canal": asdict(canal_cfg), "multiple": int(multiple), "anchors": anchors}
    out: List[SegmentationSamples] = []
    for n, case in enumerate(cases):
        data = _cached(cache_dir, "seg-" + cache_key(case, settings),
                       lambda: prepare_segmentation_case(case, seg_cfg, canal_cfg, multiple, anchors))
        if len(data["images"]) == 0:
            log(f"  case {n + 1}/{len(cases)}: no labelled vertebra on its sagittal slab; skipped")
            continue
        out.append(SegmentationSamples(
            images=data["images"].astype(np.float32), labels=data["labels"],
            content=tuple(int(v) for v in data["content"]), slab_source=str(data["source"]),
        ))
    return out


# --------------------------------------------------------------------------- regression
@dataclass
class RegressionSamples:
    """Patches of all cases: x01 (M, 3, s, s), BMD targets, and which vertebra each is."""

    x01: np.ndarray
    bmd: np.ndarray
    case_index: np.ndarray
    vertebra: np.ndarray  # 1..4
    jitter: np.ndarray  # 0 = the pipeline's own centre, >0 = a jittered centre
    flagged: int = 0  # patches left out because the pipeline flagged them

    def __len__(self) -> int:
        return len(self.bmd)

    def subset(self, mask: np.ndarray) -> "RegressionSamples":
        return RegressionSamples(self.x01[mask], self.bmd[mask], self.case_index[mask], self.vertebra[mask],
                                 self.jitter[mask], self.flagged)


def jitter_offsets(n: int, rng: np.random.Generator, in_plane_mm: float = 3.0, axial_mm: float = 4.0) -> np.ndarray:
    """(n+1, 3) LPS offsets in mm: the centre itself, then n random small shifts."""
    shifts = np.zeros((n + 1, 3))
    if n:
        shifts[1:, :2] = rng.uniform(-in_plane_mm, in_plane_mm, size=(n, 2))
        shifts[1:, 2] = rng.uniform(-axial_mm, axial_mm, size=n)
    return shifts


def prepare_regression_case(case: CaseFolder, patch_cfg: PatchConfig, window: SegmentationConfig,
                            n_jitter: int, seed: int, keep_flagged: bool) -> dict:
    """Patches of one case's vertebrae that have a reference BMD (pipeline functions)."""
    from .. import io as ctio
    from ..patches import extract_patch, vertebra_geometry

    ct = ctio.read_ct(case.ct_path)
    labels = ctio.read_labelmap(case.labels_path, ct)
    geometry = vertebra_geometry(labels)
    x01, bmd, vert, jit = [], [], [], []
    flagged = 0
    for name in VERTEBRA_NAMES:
        if name not in geometry or name not in case.bmd:
            continue
        digest = hashlib.sha256(f"{case.case_id}/{name}".encode()).digest()
        rng = np.random.default_rng([int(seed), int.from_bytes(digest[:4], "little")])
        for j, offset in enumerate(jitter_offsets(n_jitter, rng)):
            patch = extract_patch(ct, geometry[name].center_lps_mm + offset, patch_cfg, labels, LABEL_OF[name], window)
            if patch.reasons and not keep_flagged:
                flagged += 1
                continue
            x01.append(np.round(patch.x01 * 255.0).astype(np.uint8))
            bmd.append(case.bmd[name])
            vert.append(LABEL_OF[name])
            jit.append(j)
    s = patch_cfg.size_px
    return {
        "x255": np.stack(x01) if x01 else np.zeros((0, 3, s, s), np.uint8),
        "bmd": np.asarray(bmd, np.float32),
        "vertebra": np.asarray(vert, np.int8),
        "jitter": np.asarray(jit, np.int16),
        "flagged": np.asarray(flagged, np.int32),
    }


def load_regression_samples(
    cases: Sequence[CaseFolder], patch_cfg: PatchConfig, window: SegmentationConfig, n_jitter: int, seed: int,
    keep_flagged: bool, cache_dir: Optional[Path], log: LogFn,
) -> RegressionSamples:
    settings = {"patch": asdict(patch_cfg), "window": [window.window_level, window.window_width],
                "jitter": int(n_jitter), "seed": int(seed), "keep_flagged": bool(keep_flagged)}
    parts = []
    flagged = 0
    for n, case in enumerate(cases):
        data = _cached(cache_dir, "reg-" + cache_key(case, settings),
                       lambda: prepare_regression_case(case, patch_cfg, window, n_jitter, seed, keep_flagged))
        flagged += int(data["flagged"])
        if len(data["bmd"]) == 0:
            log(f"  case {n + 1}/{len(cases)}: no usable patch with a reference BMD; skipped")
            continue
        parts.append((n, data))
    s = patch_cfg.size_px
    if not parts:
        return RegressionSamples(np.zeros((0, 3, s, s), np.float32), np.zeros(0, np.float32),
                                 np.zeros(0, np.int32), np.zeros(0, np.int8), np.zeros(0, np.int16), flagged)
    return RegressionSamples(
        x01=np.concatenate([d["x255"] for _, d in parts]).astype(np.float32) / 255.0,
        bmd=np.concatenate([d["bmd"] for _, d in parts]),
        case_index=np.concatenate([np.full(len(d["bmd"]), n, np.int32) for n, d in parts]),
        vertebra=np.concatenate([d["vertebra"] for _, d in parts]),
        jitter=np.concatenate([d["jitter"] for _, d in parts]),
        flagged=flagged,
    )
