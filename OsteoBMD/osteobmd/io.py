"""Reading CTs and label maps, and checking they are what the pipeline needs.

Every image leaves this module reoriented to LPS (see docs/DESIGN.md), so later steps
can rely on array axes (k, j, i) = (inferior->superior, anterior->posterior, right->left).
The CT remembers the orientation it was stored in (InputGrid), so what the pipeline writes
for the user (labels.nrrd, *_ijk indices) goes back onto the CT file's own grid.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .errors import InputError

PathLike = Union[str, Path]

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")

# Air reads about -1000 HU and cortical bone several hundred HU; a CT in HU spans both.
MIN_AIR_HU = -800.0
MIN_BONE_HU = 300.0
# A tight spine crop has no air: it is recognised by soft tissue and fat in HU instead.
SOFT_TISSUE_HU = (-150.0, 150.0)
MIN_SOFT_TISSUE_SHARE = 0.3
FAT_HU = (-150.0, -30.0)
MIN_FAT_SHARE = 0.005
# Almost nothing in HU lies far below air (a few voxels may: edge and reconstruction artefacts).
LOWEST_HU = -1100.0
MAX_BELOW_LOWEST_SHARE = 0.001
MIN_DISTINCT_VALUES = 32  # fewer: a mask or label map, not a CT

MODALITY_TAG = "0008|0060"
# Set by read_ct on the LPS image: the grid the CT file was stored on (InputGrid as JSON).
INPUT_GRID_KEY = "osteobmd_input_grid"


def _read_dicom_folder(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(
            f"The folder '{folder.name}' holds no DICOM series. Point OsteoBMD at a folder of "
            "DICOM CT slices or at a NIfTI/NRRD/MHA file."
        )
    # Several series (e.g. a localiser and the axial CT): take the one with most slices.
    files = max((reader.GetGDCMSeriesFileNames(str(folder), s) for s in series), key=len)
    reader.SetFileNames(files)
    image = reader.Execute()
    header = sitk.ImageFileReader()
    header.SetFileName(files[0])
    header.ReadImageInformation()
    if header.HasMetaDataKey(MODALITY_TAG):  # the series reader keeps no tags; check_is_ct wants this one
        image.SetMetaData(MODALITY_TAG, header.GetMetaData(MODALITY_TAG))
    return image


@contextmanager
def itk_warnings_silenced():
    """ITK prints its own warnings (e.g. "No Series were found" for an empty folder) before
    the tool's one-line message; while reading, the tool's words are the only ones."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _read_any(path: Path) -> sitk.Image:
    if not path.exists():
        raise InputError(f"'{path}' does not exist. Check the path and try again.")
    try:
        with itk_warnings_silenced():  # every reader of CTs and masks, the panel's too
            if path.is_dir():
                return _read_dicom_folder(path)
            return sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError:
        raise InputError(
            f"'{path.name}' could not be read as an image. OsteoBMD reads NIfTI (.nii, .nii.gz), "
            "NRRD, MHA/MHD and DICOM series folders; check that the file is complete and of one of these kinds."
        ) from None


def to_lps(image: sitk.Image) -> sitk.Image:
    """Reorient (a permutation/flip of axes, no resampling) to LPS; an LPS image is returned as it is."""
    if orientation_code(image) == "LPS":
        return image
    return sitk.DICOMOrient(image, "LPS")


@dataclass(frozen=True)
class InputGrid:
    """The CT's grid as the user stored it; the pipeline itself works on its LPS reorientation."""

    orientation: str  # DICOM code of the stored axes, e.g. "RAS"
    size: Tuple[int, ...]
    spacing: Tuple[float, ...]
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "InputGrid":
        return cls(orientation_code(image), tuple(image.GetSize()), tuple(image.GetSpacing()),
                   tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def continuous_index(self, point: Sequence[float]) -> Tuple[float, float, float]:
        """The (i, j, k) of a physical point on this grid, as ITK's TransformPhysicalPointToContinuousIndex."""
        axes = np.reshape(self.direction, (3, 3)) * np.asarray(self.spacing)
        return tuple(float(v) for v in np.linalg.solve(axes, np.asarray(point, float) - np.asarray(self.origin)))


def orientation_code(image: sitk.Image) -> str:
    """The three-letter DICOM orientation code of the image's axes ("LPS", "RAS", "PIR" ...)."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def read_ct(path: PathLike) -> sitk.Image:
    """Read a CT in HU, check it is a 3D CT, and return it as float32 in LPS.

    The returned image carries the file's own grid (see input_grid and to_input_grid)."""
    path = Path(path)
    image = _read_any(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"'{path.name}' is a colour or multi-component image, not a CT. Load the CT volume itself."
        )
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise InputError(
            f"'{path.name}' is a 2D image (size {image.GetSize()}); OsteoBMD needs a 3D CT volume "
            "(a DICOM series or a NIfTI/NRRD volume) that covers the lumbar spine."
        )
    if min(image.GetSize()) < 8:
        raise InputError(
            f"'{path.name}' has only {min(image.GetSize())} slices along one axis; OsteoBMD needs a "
            "3D CT that covers L1 to L4 (about 15 cm along the body)."
        )
    header_says_ct = image.HasMetaDataKey(MODALITY_TAG) and image.GetMetaData(MODALITY_TAG).strip().upper() == "CT"
    stored = InputGrid.of(image)
    # Reoriented before the cast: moving the stored (often 16-bit) voxels copies half the bytes.
    image = sitk.Cast(to_lps(image), sitk.sitkFloat32)
    check_is_ct(image, path.name, header_says_ct)
    # Carried on the image itself so every step that gets the CT can reach the user's grid.
    image.SetMetaData(INPUT_GRID_KEY, json.dumps(asdict(stored)))
    return image


def input_grid(ct: sitk.Image) -> InputGrid:
    """The grid `ct` was stored on (read_ct records it); an image not read by read_ct is its own."""
    if not ct.HasMetaDataKey(INPUT_GRID_KEY):
        return InputGrid.of(ct)
    fields = json.loads(ct.GetMetaData(INPUT_GRID_KEY))
    return InputGrid(fields["orientation"], *(tuple(fields[k]) for k in ("size", "spacing", "origin", "direction")))


def to_input_grid(image: sitk.Image, ct: sitk.Image) -> sitk.Image:
    """`image` on the LPS grid of `ct`, put back voxel for voxel on the grid the CT file was stored on.

    DICOMOrient only permutes and flips axes, so this is exact; the recorded geometry is then
    set bit for bit after checking it is the one the reorientation gives."""
    grid = input_grid(ct)
    # A copy either way: the recorded geometry is set on it below, never on the caller's image.
    back = sitk.Image(image) if orientation_code(image) == grid.orientation else sitk.DICOMOrient(image, grid.orientation)
    same = (
        back.GetSize() == grid.size
        and np.allclose(back.GetSpacing(), grid.spacing, rtol=1e-6, atol=1e-6)
        and np.allclose(back.GetOrigin(), grid.origin, rtol=1e-6, atol=1e-4)
        and np.allclose(back.GetDirection(), grid.direction, atol=1e-6)
    )
    if not same:
        raise ValueError(f"image of size {image.GetSize()} is not on the LPS grid of this CT")
    back.SetSpacing(grid.spacing)
    back.SetOrigin(grid.origin)
    back.SetDirection(grid.direction)
    return back


def check_is_ct(image: sitk.Image, name: str = "the image", header_says_ct: bool = False) -> None:
    """Refuse images that are not in Hounsfield units (MRI, PET, a mask, a scaled export).

    A CT is recognised by air and bone in view, or, for tight spine crops with no air, by
    fat and soft tissue in HU with a bone tail; a DICOM header saying CT is believed."""
    array = sitk.GetArrayViewFromImage(image)
    # A coarse sample is enough to see the HU range and keeps this cheap on big volumes.
    step = max(1, int(round((array.size / 2e6) ** (1 / 3))))
    sample = np.asarray(array[::step, ::step, ::step], dtype=np.float32).ravel()
    if not np.isfinite(sample).all():
        raise InputError(f"{name} contains NaN or infinite values; re-export the CT and try again.")
    if header_says_ct:
        return
    low, high = np.percentile(sample, [0.5, 99.9])
    if low <= MIN_AIR_HU and high >= MIN_BONE_HU:
        return  # air and bone in view
    distinct = np.unique(sample)
    if len(distinct) < MIN_DISTINCT_VALUES and np.array_equal(distinct, np.round(distinct)):
        raise InputError(
            f"{name} holds only {len(distinct)} distinct whole values: it looks like a mask or label map, "
            "not a CT. Load the CT itself (a label map of L1-L4 can be given with --mask)."
        )
    if high >= MIN_BONE_HU and _looks_like_soft_tissue_in_hu(sample):
        return  # a tight crop without air: fat, soft tissue and bone in HU
    if sample.min() >= 0.0 and sample.max() <= 255.0:
        kind = "a rescaled export (values 0..1)" if sample.max() <= 1.0 else "a rescaled 8-bit export (values 0..255)"
        raise InputError(
            f"{name} looks like {kind}, not a CT in Hounsfield units. Load the original CT "
            "(the DICOM series or a NIfTI/NRRD saved in HU)."
        )
    raise InputError(
        f"{name} does not look like a CT in Hounsfield units (values span {low:.0f} to {high:.0f}; "
        "a CT has air near -1000 or fat below 0, soft tissue near 0 and bone above 300). Load the original "
        "CT, not an MRI, a PET, a mask or a rescaled export."
    )


def _looks_like_soft_tissue_in_hu(sample: np.ndarray) -> bool:
    """Fat (negative HU) and soft tissue (near 0) make up the body; MRI and PET have no negative fat."""
    def share(band):
        return float(np.mean((sample >= band[0]) & (sample <= band[1])))
    return (
        float(np.mean(sample < LOWEST_HU)) <= MAX_BELOW_LOWEST_SHARE
        and share(SOFT_TISSUE_HU) >= MIN_SOFT_TISSUE_SHARE
        and share(FAT_HU) >= MIN_FAT_SHARE
    )


def read_labelmap(path: PathLike, ct: sitk.Image) -> sitk.Image:
    """Read a label map (values 0..4) and check it lies on the CT's grid."""
    path = Path(path)
    labels = _read_any(path)
    if labels.GetDimension() != 3:
        raise InputError(f"The label map '{path.name}' is not 3D; save the mask as a 3D label map.")
    labels = to_lps(labels)
    same_grid = (
        labels.GetSize() == ct.GetSize()
        and np.allclose(labels.GetSpacing(), ct.GetSpacing(), rtol=1e-4, atol=1e-4)
        and np.allclose(labels.GetOrigin(), ct.GetOrigin(), atol=1e-2)
        and np.allclose(labels.GetDirection(), ct.GetDirection(), atol=1e-4)
    )
    if not same_grid:
        raise InputError(
            f"The label map '{path.name}' does not lie on the CT's grid (size {labels.GetSize()} vs "
            f"{ct.GetSize()}, spacing {tuple(round(s, 3) for s in labels.GetSpacing())} vs "
            f"{tuple(round(s, 3) for s in ct.GetSpacing())}). Export the mask with the CT as reference geometry."
        )
    values = np.unique(sitk.GetArrayViewFromImage(labels))
    if values.min() < 0 or values.max() > 4 or not np.allclose(values, np.round(values)):
        raise InputError(
            f"The label map '{path.name}' holds values {values[:10].tolist()}; OsteoBMD expects "
            "0 = background and 1..4 = L1..L4."
        )
    labels = sitk.Cast(labels, sitk.sitkUInt8)
    labels.CopyInformation(ct)
    return labels


def case_id_from_path(path: PathLike) -> str:
    """A case id from the input's name, without the image suffix (never from DICOM tags)."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "case"
    return name or "case"
