"""A case's output folder is whole or untouched; and what a case is called.

A run writes into a hidden folder beside the target (`.NAME.osteobmd-new-PID`) and moves it
into place only when every file is written, results.json last. So the target holds the
previous complete result or the new one, never a mix: a bad input, a crash, Ctrl-C or
SIGTERM only ever remove the hidden folder. A SIGKILL cannot be caught: its leftovers carry
the dead process's id, and the next run on the same target removes them, or puts the
previous result back when the kill fell between the two renames of a swap.

Files in the target that OsteoBMD did not write (a reader's edited mask, notes) are never
replaced: the run refuses before reading the CT. Carrying them over would put them beside
results that were not computed from them, which is the stale mix this module exists to
prevent; refusing lets the user decide where they belong.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Tuple, Union

from .errors import InputError, OutputExistsError
from .io import case_id_from_path
from .results import (
    LABELS_NRRD, OVERVIEW_PNG, PATCHES_NPZ, PATCHES_PNG, RESULTS_CSV, RESULTS_JSON, SCENE_MRB, CaseResult,
)

PathLike = Union[str, Path]
# Every file a run writes; the scene is optional (only with --scene, and slicer-core).
TOOL_FILES = (RESULTS_CSV, LABELS_NRRD, PATCHES_NPZ, PATCHES_PNG, OVERVIEW_PNG, SCENE_MRB, RESULTS_JSON)
REQUIRED_FILES = tuple(n for n in TOOL_FILES if n != SCENE_MRB)
# File names that say nothing about the case: the case takes its folder's name instead.
GENERIC_STEMS = frozenset({"ct", "image", "img", "volume", "vol", "scan", "series", "input", "data"})
MARK = ".osteobmd-"  # hidden folders beside a target: "." + target name + MARK + "new|old-" + pid
NEW, OLD = "new", "old"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def case_name(ct_path: PathLike) -> str:
    """The input's name; a generic one (case_0001/ct.nrrd) takes its folder's name (case_0001)."""
    stem = case_id_from_path(ct_path)
    folder = Path(os.path.abspath(ct_path)).parent.name
    return folder if stem.lower() in GENERIC_STEMS and folder else stem


def hidden_path(target: Path, kind: str, pid: int = 0) -> Path:
    return target.parent / f".{target.name}{MARK}{kind}-{pid or os.getpid()}"


def absolute(target: PathLike) -> Path:
    """Without '.' or '..' as its last part, so that the target has a name and a parent."""
    return Path(os.path.abspath(target))


def leftovers(target: PathLike) -> List[Tuple[Path, str, int]]:
    """The hidden folders of runs on `target`: (path, "new" or "old", process id)."""
    target = absolute(target)
    prefix = f".{target.name}{MARK}"
    found = []
    if target.parent.is_dir():
        for path in target.parent.iterdir():
            kind, _, pid = path.name[len(prefix):].partition("-")
            if path.name.startswith(prefix) and kind in (NEW, OLD) and pid.isdigit():
                found.append((path, kind, int(pid)))
    return found


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process starts afresh; what it left before is stale
    if os.name == "nt":  # os.kill would terminate it there; a concurrent run on one folder is not supported
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(target: PathLike) -> None:
    """Remove what killed runs left beside `target`; restore its previous result if a swap was cut."""
    target = absolute(target)
    for path, kind, pid in sorted(leftovers(target), key=lambda item: item[1] != OLD):
        if _alive(pid):
            continue  # another run is writing this folder now
        if kind == OLD and not target.exists():
            os.rename(path, target)
        else:
            shutil.rmtree(path, ignore_errors=True)


def is_tool_file(name: str) -> bool:
    """Written by a run (also the temporary names older versions could leave)."""
    return name in TOOL_FILES or (name.endswith(".tmp") and name[:-4] in TOOL_FILES) or name.startswith(".scene-")


def is_complete(folder: PathLike) -> bool:
    """A whole case: results.json reads and every file it comes with is there."""
    folder = Path(folder)
    try:
        CaseResult.read_json(folder / RESULTS_JSON)
    except (OSError, ValueError, TypeError):
        return False
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def refuse_a_file(out: PathLike) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out '{out}' is a file, not a folder. Give a folder path (it is made if missing).")
    return out


def check_target(target: PathLike, overwrite: bool) -> Path:
    """Before any work: refuse a target that is a file, holds someone else's files, or holds
    results not to be replaced. Leftovers of killed runs are cleared first."""
    target = refuse_a_file(target)
    if absolute(target) in (Path.cwd(), *Path.cwd().parents):
        raise InputError(f"--out '{target}' holds the current folder, which a run would replace as a whole. "
                         "Give a sub-folder, e.g. --out results.")
    recover(target)
    if not target.is_dir():
        return target
    foreign = sorted(p.name for p in target.iterdir() if not is_tool_file(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(
            f"'{target}' holds files OsteoBMD did not write ({shown}); nothing was changed. "
            "Move them elsewhere, or choose another --out folder."
        )
    if (target / RESULTS_JSON).exists() and not overwrite:
        what = "results" if is_complete(target) else "an incomplete earlier result"
        raise OutputExistsError(
            f"'{target}' already holds {what}; nothing was changed. Choose another --out folder, "
            "or add --overwrite to replace them."
        )
    return target


@contextmanager
def writing(target: PathLike) -> Iterator[Path]:
    """Yields a hidden folder to write the case into; when the block ends without an error
    it replaces `target` as a whole, else it is removed and `target` stays as it was."""
    target = absolute(target)
    scratch = hidden_path(target, NEW)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
    except OSError as err:
        raise InputError(f"Cannot write into '{target.parent}' ({err.strerror}). Choose a writable --out folder.")
    try:
        yield scratch
        with signals_held():
            _move_into_place(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _move_into_place(scratch: Path, target: Path) -> None:
    if not target.exists():
        os.rename(scratch, target)
    elif exchange(scratch, target):
        shutil.rmtree(scratch)  # it now holds the previous result
    else:  # two renames; a kill between them is undone by recover()
        old = hidden_path(target, OLD)
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
        os.rename(scratch, target)
        shutil.rmtree(old, ignore_errors=True)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


@contextmanager
def signals_held():
    """Ctrl-C and SIGTERM wait until the block is done (delivered right after it)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
