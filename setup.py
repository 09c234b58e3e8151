"""Build step that copies the shipped weights and the sample CT into the wheel.

They stay at the repository's top level (model_weights/, samples/: the Slicer extension
and the docs use them there); a wheel gets copies in osteobmd/shipped/, where
osteobmd.data_files finds them. Everything else is in pyproject.toml.
"""

import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
# Folder in the repository -> its files the wheel carries (MANIFEST.in lists the same for the
# sdist), copied to osteobmd/shipped/<folder>/, where data_files.py looks.
SHIPPED = {
    "model_weights": ["*.safetensors", "*.json", "MODEL_CARD.md"],
    "samples": ["ct.nii.gz", "README.md", "LICENSE-*.txt"],
}
SHIPPED_PACKAGE_DIR = os.path.join("osteobmd", "shipped")


def shipped_files():
    """(source, path inside the build folder) of every file the wheel must carry."""
    pairs = []
    for folder, patterns in SHIPPED.items():
        found = sorted({p for pattern in patterns for p in glob.glob(os.path.join(HERE, folder, pattern))})
        if not any(p.endswith((".safetensors", ".nii.gz")) for p in found):
            raise SystemExit(f"setup.py: {folder}/ holds none of its data files ({', '.join(patterns)}); "
                             "a wheel without them cannot run. Restore them from the repository.")
        pairs += [(p, os.path.join(SHIPPED_PACKAGE_DIR, folder, os.path.basename(p))) for p in found]
    return pairs


class BuildPyWithShippedData(build_py):
    def run(self):
        super().run()
        # An editable install reads the checkout's own folders (data_files.py).
        if self.editable_mode:
            return
        # A weight file removed from the repository must not linger from an earlier build.
        shutil.rmtree(os.path.join(self.build_lib, SHIPPED_PACKAGE_DIR), ignore_errors=True)
        for source, target in shipped_files():
            target = os.path.join(self.build_lib, target)
            self.mkpath(os.path.dirname(target))
            self.copy_file(source, target)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return outputs + [os.path.join(self.build_lib, target) for _, target in shipped_files()]


setup(cmdclass={"build_py": BuildPyWithShippedData})
