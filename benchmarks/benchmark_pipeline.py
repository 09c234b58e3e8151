"""Benchmark (not a test): seconds per stage and peak memory of `osteobmd run` on a 512x512x400 CT.

The CT is the bundled real sample resampled to 512 x 512 x 400 (0.6-0.7 mm in plane,
0.84 mm slices) with scanner-like noise, written as NIfTI (.nii.gz) and as raw NRRD so the
file read is part of the time. Each run is a fresh process so its peak memory is its own.

    python benchmarks/benchmark_pipeline.py [--device cpu] [--repeats 2] [--keep DIR]

Target on a 2-core machine: the default run (`osteobmd run CT --out DIR`, no scene.mrb since
the scene became opt-in), file read included, under 10 s. The runs with --scene show what the
scene adds (its parts: benchmarks/benchmark_scene.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "ct.nii.gz"


def make_big_ct(folder: Path) -> dict:
    paths = {"nii.gz": folder / "ct512.nii.gz", "nrrd": folder / "ct512.nrrd"}
    if all(p.exists() for p in paths.values()):  # made by an earlier run with this --keep (same seed)
        return paths
    ct = sitk.ReadImage(str(SAMPLE))
    size = (512, 512, 400)
    extent = [n * s for n, s in zip(ct.GetSize(), ct.GetSpacing())]
    spacing = [e / n for e, n in zip(extent, size)]
    big = sitk.Resample(ct, size, sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(), spacing,
                        ct.GetDirection(), -1024, sitk.sitkFloat32)
    rng = np.random.default_rng(0)
    a = sitk.GetArrayFromImage(big)
    a += rng.normal(0, 15, a.shape).astype(np.float32)
    out = sitk.GetImageFromArray(np.clip(a, -1024, 3071).astype(np.int16))
    out.CopyInformation(big)
    sitk.WriteImage(out, str(paths["nii.gz"]), True)
    sitk.WriteImage(out, str(paths["nrrd"]), False)
    return paths


CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from osteobmd.options import RunOptions
from osteobmd.pipeline import run_case
t_import = time.perf_counter() - t0
t1 = time.perf_counter()
scene = {} if sys.argv[4] == 'default' else {"write_scene": sys.argv[4] == 'scene'}
options = RunOptions.parse(device=sys.argv[3], overwrite=True, **scene)
r = run_case(sys.argv[1], sys.argv[2], options)
wall = time.perf_counter() - t1
print(json.dumps({"import_s": t_import, "run_s": wall, "stages": r.timings_s, "scene": options.write_scene,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "valid": r.valid, "mean": r.mean_bmd_mg_cm3}))
"""


def run_once(ct: Path, out: Path, device: str, scene: str) -> dict:
    """One run in a fresh process; scene: "default" (the options' default), "scene" or "no-scene"."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ct), str(out), device, scene],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"run failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="keep the big CT and outputs here (a CT already there is reused)")
    args = parser.parse_args()
    import torch

    folder = args.keep or Path(tempfile.mkdtemp(prefix="osteobmd-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    paths = make_big_ct(folder)
    print(f"made a 512x512x400 CT from the sample in {time.perf_counter() - t:.1f} s; torch threads {torch.get_num_threads()}")
    best = {}
    for fmt, path in paths.items():
        for kind, label in (("default", "DEFAULT"), ("scene", "--scene")):
            out = folder / f"out_{fmt}_{kind}"
            for rep in range(args.repeats):
                r = run_once(path, out, args.device, kind)
                best[fmt, kind] = min(best.get((fmt, kind), float("inf")), r["run_s"])
                stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items() if k != "total")
                print(f"{fmt:7s} {label:8s} (scene.mrb {'yes' if r['scene'] else 'no '}) run {rep + 1}: "
                      f"whole case {r['run_s']:.2f} s (python+torch import {r['import_s']:.2f} s not included) | "
                      f"{stages} | peak RSS {r['peak_rss_mb']:.0f} MB | valid {r['valid']} mean {r['mean']}")
    print(f"self peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print("DEFAULT run, the figure judged against 10 s (best of the repeats): " +
          ", ".join(f"{fmt} {best[fmt, 'default']:.2f} s" for fmt in paths))
    print("--scene adds: " + ", ".join(
        f"{fmt} {best[fmt, 'scene'] - best[fmt, 'default']:+.2f} s "
        f"(scene.mrb {(folder / f'out_{fmt}_scene' / 'scene.mrb').stat().st_size / 1e6:.0f} MB, "
        f"CT file {path.stat().st_size / 1e6:.0f} MB)" for fmt, path in paths.items()))


if __name__ == "__main__":
    main()
