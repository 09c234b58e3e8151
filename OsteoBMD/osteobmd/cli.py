"""The `osteobmd` command line: run, batch, demo, train, evaluate, synth.

Exit codes are EXIT_CODES (also in `osteobmd --help`). Never a traceback for a user's
mistake; a bug gets one line and a log file beside the output folder.
"""

from __future__ import annotations

import argparse
import signal
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

from . import __version__
from .data_files import sample_ct
from .errors import InputError, OsteoBMDError, write_error_log
from .options import add_case_arguments, add_measure_arguments
from .progress import JsonLinesProgress, TerminalProgress, silent

# The bundled real CT (samples/ct.nii.gz, see samples/README.md; a wheel carries a copy).
SAMPLE_CT = sample_ct()
DEMO_OUT = Path("osteobmd-demo")
EXIT_CODES = (
    (0, "done: a valid measurement (batch: every case done)"),
    (1, "internal error: a bug; one line, the details in a log file whose path is printed (batch: some case hit one)"),
    (2, "bad input: one line saying what is wrong and what to do; nothing was written (batch: some case was refused)"),
    (3, "no valid measurement: the results, with each level's reasons, are written (batch: some case had none)"),
    (130, "cancelled (Ctrl-C or SIGTERM): the output folder holds its previous result, or none"),
)
EPILOG = "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES) + (
    "\n\nAn output folder is whole or untouched: a run writes beside it and replaces it only when every "
    "file is written.\nbatch: the first of 1, 2, 3 that applies to any case, else 0.")
PROGRESS_HELP = "progress report on stderr: json lines (for programs), a bar, none; auto: a bar at a terminal, else json"
# Sub-commands of their own packages: package, help in `osteobmd --help`.
OPTIONAL_COMMANDS = {
    "train": ("training", "train a network: the vertebra finder (on generated phantoms), "
                          "or the segmentation or regression network on a ground-truth folder"),
    "evaluate": ("evaluation", "compare predicted BMD / segmentations with a reference (METHOD 5 statistics and report)"),
    "synth": ("synthetic", "make a synthetic lumbar CT cohort (CT, labels, true BMD)"),
}


def _progress(kind: str):
    if kind == "auto":
        kind = "bar" if sys.stderr.isatty() else "json"
    return {"json": JsonLinesProgress(), "bar": TerminalProgress(), "none": silent}[kind]


def _print_result(result, out_dir: Path) -> None:
    print(f"case {result.case}")
    for v in result.vertebrae:
        bmd = "   -  " if v.bmd_mg_cm3 is None else f"{v.bmd_mg_cm3:6.1f}"
        print(f"  {v.name}  BMD {bmd} mg/cm3  {'valid' if v.valid else 'INVALID: ' + '; '.join(v.reasons)}")
    if result.mean_bmd_mg_cm3 is not None:
        print(f"  mean ({'+'.join(result.mean_vertebrae)}) {result.mean_bmd_mg_cm3:.1f} mg/cm3 -> {result.classification}")
    for m in result.messages:
        print(f"  note: {m}")
    print(f"results in {out_dir}")


def _run(args) -> int:
    from .options import RunOptions
    from .pipeline import run_case

    options = RunOptions.from_args(args)  # every bad value is refused here, before the CT is read
    result = run_case(args.ct, args.out, options, progress=_progress(args.progress))
    _print_result(result, args.out)
    if not result.valid:
        print("osteobmd: no valid measurement: "
              + "; ".join(f"{v.name}: {', '.join(v.reasons)}" for v in result.vertebrae if v.reasons), file=sys.stderr)
        return 3
    return 0


def _batch(args) -> int:
    from .batch import run_batch
    from .options import RunOptions

    from .batch import batch_exit_code

    rows = run_batch(args.inputs, args.out, workers=args.workers, options=RunOptions.from_args(args))
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    code = batch_exit_code(rows)
    print("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"; see {Path(args.out) / 'summary.csv'}")
    if code:
        print(f"osteobmd: not every case gave a valid measurement (exit {code}); see the summary.", file=sys.stderr)
    return code


def _demo(args) -> int:
    from .options import RunOptions
    from .pipeline import run_case

    # The demo folder is the tool's own: re-running the demo replaces it. It shows every output,
    # scene.mrb included (opt-in for run and batch; on the demo's small CTs it is quick).
    options = RunOptions.parse(device=args.device, overwrite=True, write_scene=True)
    out = args.out or (DEMO_OUT / ("synthetic" if args.synthetic else "sample"))
    if args.synthetic:
        from .synthetic import make_case, write_case

        case_dir = out.parent / (out.name + "-input")
        print(f"making a synthetic lumbar CT (seed {args.seed}) in {case_dir}")
        case = make_case(args.seed)
        write_case(case, case_dir)
        ct_path, case_id = case_dir / "ct.nrrd", f"synthetic_{args.seed}"
        truth = ", ".join(f"{k} {v:.0f}" for k, v in sorted(case.bmd.items()) if k in ("L1", "L2", "L3", "L4"))
        print(f"true BMD (mg/cm3): {truth}")
    else:
        ct_path, case_id = SAMPLE_CT, "sample_totalsegmentator"
        if not ct_path.exists():
            raise InputError(f"The bundled sample CT is missing ({ct_path}); reinstall from the repository.")
        print("sample: real abdomen CT from the TotalSegmentator example (Apache-2.0, see samples/README.md)")
    result = run_case(ct_path, out, replace(options, case_id=case_id), progress=_progress(args.progress))
    _print_result(result, out)
    if not result.valid:
        print("no valid measurement on this case: the reasons are above and in results.json; "
              "the labels can be corrected (Slicer panel, or osteobmd run --mask) and measured again")
    print(f"open {out / 'overview.png'} to see the result")
    # The demo has done its job when it ran: its outcome, valid or not, is shown above.
    return 0


def build_parser(chosen: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole command line; `chosen` is the sub-command about to run (see _add_optional_cli)."""
    parser = argparse.ArgumentParser(prog="osteobmd", description="Lumbar BMD (L1-L4) from routine CT. "
                                     "Research use only, not a medical device.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"osteobmd {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="measure one CT", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ct", type=Path, help="CT file (NIfTI, NRRD, MHA) or DICOM series folder")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder for this case (made if missing; replaced as a whole only with --overwrite)")
    p.add_argument("--progress", choices=("auto", "json", "bar", "none"), default="auto", help=PROGRESS_HELP)
    add_case_arguments(p)
    add_measure_arguments(p)
    p.set_defaults(handler=_run)

    p = sub.add_parser("batch", help="measure many CTs (a folder or a CSV with a 'path' column)", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", type=Path,
                   help="a folder (CT files, case folders holding ct.*, DICOM series folders) or a CSV with a "
                        "'path' column (optional: case_id, mask); paths in a CSV are relative to it")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for one sub-folder per case and summary.csv; a re-run skips complete cases")
    p.add_argument("--workers", type=int, default=1, help="cases measured at once (default 1; each uses a share of the CPU)")
    add_measure_arguments(p)
    p.set_defaults(handler=_batch)

    p = sub.add_parser("demo", help="run on the bundled real sample CT (or --synthetic)")
    p.add_argument("--synthetic", action="store_true", help="use a synthetic CT made by the package instead")
    p.add_argument("--seed", type=int, default=0, help="which synthetic CT to make (with --synthetic; default 0)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default {DEMO_OUT}/sample or {DEMO_OUT}/synthetic; replaced on each demo)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--progress", choices=("auto", "json", "bar", "none"), default="auto", help=PROGRESS_HELP)
    p.set_defaults(handler=_demo)

    for command in OPTIONAL_COMMANDS:
        _add_optional_cli(sub, command, load=command == chosen)
    return parser


def _add_optional_cli(sub, command: str, load: bool) -> None:
    """A sub-command that lives with its own package (train, evaluate, synth).

    Those packages load torch, scipy or matplotlib on import, which takes seconds: only the
    chosen command's parser is built from its module; the others are listed by name.
    """
    import importlib.util

    package, help_text = OPTIONAL_COMMANDS[command]
    if importlib.util.find_spec(f"{__package__}.{package}") is None:
        return  # that part of the package is not there (a trimmed install)
    if load:
        importlib.import_module(f"{__package__}.{package}.cli").add_cli(sub)
    else:
        sub.add_parser(command, help=help_text)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(chosen=argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        with sigterm_as_cancel():
            return int(args.handler(args) or 0)
    except OsteoBMDError as err:
        print(f"osteobmd: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("osteobmd: cancelled; the output folder holds its previous result, or none.", file=sys.stderr)
        return 130
    except MemoryError:
        print("osteobmd: out of memory. Close other programs or run on a machine with more memory.", file=sys.stderr)
        return 1
    except Exception as err:  # a bug: say so in one line, keep the details in a log file
        print(f"osteobmd: internal error ({type(err).__name__}: {err}); {write_error_log(getattr(args, 'out', None))}."
              " Please report it.", file=sys.stderr)
        return 1


@contextmanager
def sigterm_as_cancel():
    """SIGTERM (a closed panel, `kill`, a scheduler) stops a run as Ctrl-C does: the hidden
    output folder is removed and the exit code is 130."""
    def cancel(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, cancel)
    except ValueError:  # not the main thread: leave signals to the host
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
