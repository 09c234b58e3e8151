"""Benchmark (not a test): where the time of writing scene.mrb goes, on the 512x512x400 CT.

Prints wall and CPU seconds of each part of write_scene_mrb (on a shared machine the CPU
seconds say more), the size of the bundle and of its CT entry, and of the CT file given.

    python benchmarks/benchmark_scene.py [--keep DIR]

DIR (e.g. the one benchmark_pipeline.py --keep filled) is reused when it holds ct512.nii.gz
and a pipeline output out_nii.gz_default; otherwise the CT is made and measured first (no scene).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from benchmark_pipeline import make_big_ct, run_once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="folder with ct512.nii.gz and out_nii.gz_default (made if missing)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="osteobmd-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    ct_path, results = folder / "ct512.nii.gz", folder / "out_nii.gz_default"
    if not ct_path.exists():
        make_big_ct(folder)
    if not (results / "results.json").exists():
        run_once(ct_path, results, "cpu", "no-scene")

    from osteobmd.io import read_ct

    ct = read_ct(ct_path)  # what the pipeline holds when it writes the scene
    out = Path(tempfile.mkdtemp(prefix="scene-", dir=folder))
    try:
        for f in results.iterdir():
            if f.is_file() and f.name != "scene.mrb":
                shutil.copy(f, out / f.name)
        wall, cpu = time.perf_counter(), time.process_time()
        from osteobmd.scene import write_scene_mrb  # slicer-core: imported only when a scene is written

        timings = {"import slicer-core": (time.perf_counter() - wall, time.process_time() - cpu)}
        mrb = write_scene_mrb(out, ct_image=ct, timings=timings)
        for part, (w, c) in timings.items():
            print(f"{part:20s} wall {w:6.2f} s   CPU {c:6.2f} s")
        print(f"{'scene in all':20s} wall {sum(w for w, _ in timings.values()):6.2f} s   "
              f"CPU {sum(c for _, c in timings.values()):6.2f} s")
        with zipfile.ZipFile(mrb) as bundle:
            ct_entry = next(i for i in bundle.infolist() if i.filename.endswith("/Data/CT.nrrd"))
        print(f"scene.mrb {mrb.stat().st_size / 1e6:.1f} MB (its CT {ct_entry.file_size / 1e6:.1f} MB, "
              f"raw int16 voxels {2 * ct.GetNumberOfPixels() / 1e6:.1f} MB); the CT file {ct_path.stat().st_size / 1e6:.1f} MB")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
