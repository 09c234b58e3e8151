"""Click through a folder (or a CSV list) of CTs, one case at a time, with a status per case.

Statuses: new -> measured -> corrected -> saved. They, the case the reader is on and the
per-case results live in a work folder (default: ``OsteoBMD-results`` inside the CT folder),
so reopening the folder shows where the reader left off. The work folder holds

    osteobmd_cases.json          the state (statuses, current case)
    <case_id>/auto/              the pipeline's output on the network's masks
    <case_id>/corrected/         the output on the reader's corrected masks (+ mask.nrrd)
    DATA/<case_id>/              saved ground truth (see ground_truth.py)

The only names the tool invents are these fixed ones and the case ids, which come from
the CT's file or folder name the user chose (never from DICOM tags). No Slicer import here.
"""

import csv
import datetime
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

STATUS_NEW = "new"
STATUS_MEASURED = "measured"
STATUS_CORRECTED = "corrected"
STATUS_SAVED = "saved"
STATUSES = (STATUS_NEW, STATUS_MEASURED, STATUS_CORRECTED, STATUS_SAVED)

STATE_FILE = "osteobmd_cases.json"
WORK_DIR_NAME = "OsteoBMD-results"
GROUND_TRUTH_DIR = "DATA"
STATE_VERSION = 1

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
# Files beside the CTs that are not CTs (masks, segmentations, label maps).
_NOT_CT = re.compile(r"(^|[._-])(label|labels|labelmap|mask|masks|seg|segmentation)$", re.IGNORECASE)

PathLike = Union[str, Path]


class CaseListError(ValueError):
    """The folder or CSV cannot be used as a case list; the text says why."""


@dataclass
class CaseEntry:
    case_id: str
    ct_path: str
    status: str = STATUS_NEW
    updated: str = ""


def _image_stem(name: str) -> Optional[str]:
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _natural_key(text: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def _dicom_folder(folder: Path) -> bool:
    checked = 0
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and not entry.name.startswith("."):
            if _is_dicom_file(entry):
                return True
            checked += 1
            if checked >= 5:
                break
    return False


def _ct_in_subfolder(folder: Path) -> Optional[Path]:
    """A case folder: ct.<ext> (the ground-truth layout), else a DICOM series folder."""
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"ct{suffix}"
        if candidate.is_file():
            return candidate
    if _dicom_folder(folder):
        return folder
    return None


def discover_folder(folder: PathLike, work_dir: Optional[PathLike] = None) -> List[CaseEntry]:
    """CT files (NIfTI, NRRD, MHA) and DICOM/case sub-folders of a folder, in natural order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CaseListError(f"'{folder}' is not a folder. Choose the folder that holds the CT files.")
    skip = {Path(work_dir).resolve()} if work_dir else set()
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
        if entry.name.startswith(".") or entry.resolve() in skip or entry.name == WORK_DIR_NAME:
            continue
        if entry.is_file():
            stem = _image_stem(entry.name)
            if stem is None or _NOT_CT.search(stem):
                continue
            found.append((stem, entry))
        elif entry.is_dir():
            ct = _ct_in_subfolder(entry)
            if ct is not None:
                found.append((entry.name, ct))
    return _entries(found)


def safe_case_id(text: str) -> str:
    """A file-name-safe case id (letters, digits, '.', '_', '-')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text or "")).strip("._-")
    return cleaned or "case"


def _entries(found) -> List[CaseEntry]:
    entries, used = [], set()
    for name, path in found:
        case_id = safe_case_id(name)
        unique, n = case_id, 2
        while unique in used:
            unique, n = f"{case_id}-{n}", n + 1
        used.add(unique)
        entries.append(CaseEntry(case_id=unique, ct_path=str(Path(path).resolve())))
    return entries


def discover_csv(csv_path: PathLike) -> List[CaseEntry]:
    """Cases from a CSV with a column 'ct' (or 'path'/'file'/'image') and an optional 'case_id'.

    Relative paths are relative to the CSV's folder.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise CaseListError(f"'{csv_path}' does not exist. Choose a CSV file listing the CTs.")
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise CaseListError(f"'{csv_path.name}' is empty. List one CT path per line (column 'ct').")
    header = [c.strip().lower() for c in rows[0]]
    path_col = next((header.index(k) for k in ("ct", "ct_path", "path", "file", "image") if k in header), None)
    id_col = next((header.index(k) for k in ("case_id", "case", "id") if k in header), None)
    if path_col is None:
        path_col, body = 0, rows  # no header: the first column holds the paths
    else:
        body = rows[1:]
    found = []
    for row in body:
        if path_col >= len(row) or not row[path_col].strip():
            continue
        path = Path(row[path_col].strip()).expanduser()
        if not path.is_absolute():
            path = csv_path.parent / path
        if id_col is not None and id_col < len(row) and row[id_col].strip():
            name = row[id_col].strip()
        else:
            name = _image_stem(path.name) or path.name
        found.append((name, path))
    if not found:
        raise CaseListError(f"'{csv_path.name}' lists no CT. Put the CT paths in a column named 'ct'.")
    return _entries(found)


def default_work_dir(source: PathLike) -> Path:
    source = Path(source)
    if source.is_dir():
        return source / WORK_DIR_NAME
    return source.parent / f"{source.stem}-{WORK_DIR_NAME}"


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


class CaseList:
    """The cases of a folder or CSV, the reader's position and each case's status."""

    def __init__(self, source: PathLike, cases: List[CaseEntry], work_dir: PathLike, current_index: int = 0):
        self.source = Path(source)
        self.cases = cases
        self.work_dir = Path(work_dir)
        self.current_index = max(0, min(current_index, len(cases) - 1)) if cases else 0

    # ---------------------------------------------------------------- opening / saving

    @classmethod
    def open(cls, source: PathLike, work_dir: Optional[PathLike] = None) -> "CaseList":
        source = Path(source).expanduser()
        work_dir = Path(work_dir) if work_dir else default_work_dir(source)
        if source.is_dir():
            cases = discover_folder(source, work_dir)
        elif source.suffix.lower() == ".csv":
            cases = discover_csv(source)
        else:
            raise CaseListError(
                f"'{source}' is neither a folder nor a .csv file. Choose a folder of CTs or a CSV listing them."
            )
        if not cases:
            raise CaseListError(
                f"No CT was found in '{source}'. OsteoBMD lists NIfTI (.nii, .nii.gz), NRRD and MHA files "
                "and sub-folders holding a DICOM series."
            )
        case_list = cls(source, cases, work_dir)
        case_list._load_state()
        return case_list

    @property
    def state_path(self) -> Path:
        return self.work_dir / STATE_FILE

    def _load_state(self) -> None:
        state = {}
        if self.state_path.exists():
            try:
                state = json.loads(self.state_path.read_text())
            except (OSError, ValueError):
                state = {}
        saved = state.get("cases", {})
        for entry in self.cases:
            record = saved.get(entry.case_id)
            if record and record.get("status") in STATUSES:
                entry.status = record["status"]
                entry.updated = record.get("updated", "")
            else:
                entry.status = self._status_from_disk(entry)
        current = state.get("current_case")
        ids = [c.case_id for c in self.cases]
        if current in ids:
            self.current_index = ids.index(current)

    def _status_from_disk(self, entry: CaseEntry) -> str:
        """For a case the state file does not know: what its folders show."""
        if (self.work_dir / GROUND_TRUTH_DIR / entry.case_id).is_dir():
            return STATUS_SAVED
        if (self.output_dir(entry, "corrected") / "results.json").exists():
            return STATUS_CORRECTED
        if (self.output_dir(entry, "auto") / "results.json").exists():
            return STATUS_MEASURED
        return STATUS_NEW

    def save(self) -> Path:
        """Write the state file (atomically)."""
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CaseListError(
                f"The results folder '{self.work_dir}' cannot be created ({err.strerror}). "
                "Choose a writable results folder."
            ) from None
        state = {
            "version": STATE_VERSION,
            "source": str(self.source),
            "current_case": self.current.case_id if self.cases else None,
            "cases": {
                e.case_id: {"status": e.status, "updated": e.updated, "ct": self._relative(e.ct_path)}
                for e in self.cases
            },
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_path)
        return self.state_path

    def _relative(self, path: str) -> str:
        base = self.source if self.source.is_dir() else self.source.parent
        try:
            return os.path.relpath(path, base)
        except ValueError:  # another drive on Windows
            return path

    # ---------------------------------------------------------------- navigation

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def current(self) -> CaseEntry:
        return self.cases[self.current_index]

    def go_to(self, index: int) -> CaseEntry:
        if not self.cases:
            raise CaseListError("The case list is empty.")
        self.current_index = max(0, min(int(index), len(self.cases) - 1))
        self.save()
        return self.current

    def next(self) -> CaseEntry:
        return self.go_to(self.current_index + 1)

    def previous(self) -> CaseEntry:
        return self.go_to(self.current_index - 1)

    @property
    def has_next(self) -> bool:
        return self.current_index < len(self.cases) - 1

    @property
    def has_previous(self) -> bool:
        return self.current_index > 0

    def first_unfinished_index(self) -> Optional[int]:
        """The first case that is not saved yet (None when all are)."""
        for i, entry in enumerate(self.cases):
            if entry.status != STATUS_SAVED:
                return i
        return None

    # ---------------------------------------------------------------- status and folders

    def entry(self, case_id: str) -> CaseEntry:
        for e in self.cases:
            if e.case_id == case_id:
                return e
        raise KeyError(case_id)

    def set_status(self, case: Union[str, CaseEntry], status: str) -> CaseEntry:
        if status not in STATUSES:
            raise ValueError(f"Unknown status '{status}'; one of {', '.join(STATUSES)}.")
        entry = self.entry(case) if isinstance(case, str) else case
        entry.status = status
        entry.updated = _now()
        self.save()
        return entry

    def advance_status(self, case: Union[str, CaseEntry], status: str) -> CaseEntry:
        """Set a status only if it is further along than the current one."""
        entry = self.entry(case) if isinstance(case, str) else case
        if STATUSES.index(status) > STATUSES.index(entry.status):
            return self.set_status(entry, status)
        return entry

    def counts(self) -> Dict[str, int]:
        return {s: sum(1 for e in self.cases if e.status == s) for s in STATUSES}

    def output_dir(self, case: Union[str, CaseEntry], kind: str = "auto") -> Path:
        """Where the pipeline writes this case's results ('auto' or 'corrected')."""
        case_id = case if isinstance(case, str) else case.case_id
        return self.work_dir / case_id / kind

    @property
    def ground_truth_dir(self) -> Path:
        return self.work_dir / GROUND_TRUTH_DIR

    def as_dicts(self) -> List[dict]:
        return [asdict(e) for e in self.cases]
