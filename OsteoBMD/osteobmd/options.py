"""What the user asks of one run, parsed once at the edge (CLI, batch, Slicer panel).

`RunOptions.parse` turns raw values (strings from the command line, a CSV, or the panel's
parameter node) into one typed, frozen value and refuses any bad one with an InputError
before the CT is read or a model is loaded. `to_argv` gives the `osteobmd run` options that
reproduce it exactly, so the panel starts its worker through the same parser as a user.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from .calibration import Calibration, no_calibration, parse_calibration
from .config import DEFAULT_MEAN_VERTEBRAE, VERTEBRA_NAMES
from .errors import InputError

PathLike = Union[str, Path]
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def parse_vertebrae(spec: Optional[Union[str, Sequence[str]]]) -> Optional[List[str]]:
    """'L1,L2,L3' (or 'l1, 2, L3', or a list) -> ['L1', 'L2', 'L3'] in anatomical order;
    None or empty -> None (the caller's default)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or ())
    names = [str(s).strip().upper() for s in items if str(s).strip()]
    if not names:
        return None
    names = [f"L{int(n)}" if n.isdigit() else n for n in names]
    unknown = [n for n in names if n not in VERTEBRA_NAMES]
    if unknown:
        raise InputError(
            f"Unknown vertebra name(s) {', '.join(unknown)}; choose from {', '.join(VERTEBRA_NAMES)}, e.g. L1,L2,L3."
        )
    return [n for n in VERTEBRA_NAMES if n in names]


def parse_device(device: Optional[str]) -> str:
    """'auto', 'cpu', 'cuda' or 'cuda:N' (whether that GPU exists is checked when the run starts)."""
    name = (device or "auto").strip().lower()
    if not DEVICE_PATTERN.match(name):
        raise InputError(f"Device '{device}' is not known; use auto, cpu, cuda or cuda:N.")
    return name


def parse_flag(value, what: str) -> bool:
    """A bool, or its spelling in a parameter node / CSV ('true', '0', ...)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InputError(f"'{value}' is not a yes/no value for {what}; use true or false.")


def _existing_path(value: Optional[PathLike], what: str) -> Optional[Path]:
    if value is None or not str(value).strip():
        return None
    path = Path(str(value).strip()).expanduser()
    if not path.exists():
        raise InputError(f"The {what} '{path}' does not exist. Check the path and try again.")
    return path


def _optional_path(value) -> Optional[Path]:
    return None if value is None else Path(value)


@dataclass(frozen=True)
class RunOptions:
    """One run's choices; the method's numbers live in config.PipelineConfig."""

    device: str = "auto"
    mean_vertebrae: Tuple[str, ...] = DEFAULT_MEAN_VERTEBRAE
    # "internal" stays a request here (pending); it is estimated from each case's CT.
    calibration: Calibration = field(default_factory=no_calibration)
    mask_path: Optional[Path] = None  # a label map to measure instead of segmenting
    weights_dir: Optional[Path] = None  # None: weights.default_weights_dir()
    write_scene: bool = False  # scene.mrb is opt-in (--scene): it costs more than the 10 s a case may take
    overwrite: bool = False
    case_id: Optional[str] = None

    def __post_init__(self):
        # Keyword changes (dataclasses.replace, run_case(..., mask_path=...)) keep the types.
        object.__setattr__(self, "mean_vertebrae", tuple(self.mean_vertebrae))
        object.__setattr__(self, "mask_path", _optional_path(self.mask_path))
        object.__setattr__(self, "weights_dir", _optional_path(self.weights_dir))
        if not isinstance(self.calibration, Calibration):
            object.__setattr__(self, "calibration", parse_calibration(self.calibration))

    @classmethod
    def parse(cls, device: Optional[str] = "auto", vertebrae=None, calibration: Optional[str] = "none",
              mask: Optional[PathLike] = None, weights: Optional[PathLike] = None, write_scene=False,
              overwrite=False, case_id: Optional[str] = None) -> "RunOptions":
        """Raw user values -> RunOptions; InputError names the first bad one."""
        return cls(
            device=parse_device(device),
            mean_vertebrae=tuple(parse_vertebrae(vertebrae) or DEFAULT_MEAN_VERTEBRAE),
            calibration=parse_calibration(calibration),
            mask_path=_existing_path(mask, "label map (--mask)"),
            weights_dir=_existing_path(weights, "weights folder (--weights)"),
            write_scene=parse_flag(write_scene, "writing the scene"),
            overwrite=parse_flag(overwrite, "overwrite"),
            case_id=(str(case_id).strip() or None) if case_id is not None else None,
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RunOptions":
        """From a parser set up by `add_measure_arguments` (and maybe `add_case_arguments`)."""
        raw = dict(device=args.device, vertebrae=args.vertebrae, calibration=args.calibration,
                   weights=args.weights, write_scene=args.scene)
        for name in ("mask", "overwrite", "case_id"):
            if hasattr(args, name):
                raw[name] = getattr(args, name)
        return cls.parse(**raw)

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> "RunOptions":
        """Parse what `to_argv` gives (the `osteobmd run` options without the CT and --out)."""
        parser = argparse.ArgumentParser(prog="osteobmd run", add_help=False)
        add_measure_arguments(parser)
        add_case_arguments(parser)
        return cls.from_args(parser.parse_args(list(argv)))

    def to_argv(self) -> List[str]:
        """The `osteobmd run` options (CT and --out excluded) that reproduce these options."""
        argv = ["--device", self.device, "--vertebrae", ",".join(self.mean_vertebrae),
                "--calibration", self.calibration.spec]
        if self.mask_path is not None:
            argv += ["--mask", str(self.mask_path)]
        if self.weights_dir is not None:
            argv += ["--weights", str(self.weights_dir)]
        argv.append("--scene" if self.write_scene else "--no-scene")  # explicit, whatever the default
        if self.overwrite:
            argv.append("--overwrite")
        if self.case_id is not None:
            argv += ["--case-id", self.case_id]
        return argv


def add_measure_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `osteobmd run` and `osteobmd batch`."""
    p.add_argument("--device", default="auto",
                   help="auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--vertebrae", default=None,
                   help=f"vertebrae whose BMD makes the mean (default {','.join(DEFAULT_MEAN_VERTEBRAE)})")
    p.add_argument("--calibration", default="none",
                   help="HU calibration: none, internal (air and fat of the patient), or linear:SLOPE,INTERCEPT")
    p.add_argument("--weights", default=None, help="folder with the model weights (default: model_weights/)")
    p.add_argument("--scene", dest="scene", action="store_true", default=False,
                   help="also write scene.mrb (CT, L1-L4 segmentation, BMD table) for 3D Slicer; "
                        "needs slicer-core and adds about 8 s on a 512x512x400 CT")
    p.add_argument("--no-scene", dest="scene", action="store_false",
                   help="no scene.mrb: the default (accepted for older scripts)")


def add_case_arguments(p: argparse.ArgumentParser) -> None:
    """Options of a single case (`osteobmd run`)."""
    p.add_argument("--mask", default=None,
                   help="label map (1..4 = L1..L4, CT grid): skip segmentation and measure these masks")
    p.add_argument("--case-id", default=None, help="case id for the outputs (default: the input's name)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
