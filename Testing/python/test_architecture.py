"""Arrows point one way: the Slicer side uses the pipeline package, never the reverse.

Static (AST) over every module of OsteoBMD/osteobmd, transitively over what each module
imports when it is imported, and checked once more by importing in a fresh interpreter.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODULE_DIR

PACKAGE = "osteobmd"
PACKAGE_DIR = MODULE_DIR / PACKAGE
SCENE = f"{PACKAGE}.scene"
# Never imported by the pipeline package, at any depth or place.
SLICER_SIDE = ("OsteoBMDLib", "OsteoBMD", "qt", "ctk")
# Only osteobmd.scene may import these (slicer-core, an optional extra), and nobody imports
# osteobmd.scene when a module is loaded: only inside the function that writes a scene.
SCENE_ONLY = ("slicer", "vtk", "vtkmodules", "mrml")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(MODULE_DIR).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


MODULES = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def imports_of(name: str):
    """(imported module, at import time?) for each import in the module; relative ones resolved.
    "At import time" means outside any function body (module level, class bodies, if/try)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if is_package(path) else name.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            lazy = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, not in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                found.append((target, not in_function))
                # `from . import x` / `from .pkg import sub`: x may be a submodule.
                found.extend((f"{target}.{a.name}", not in_function) for a in child.names
                             if f"{target}.{a.name}" in MODULES)
            visit(child, lazy)

    visit(tree, False)
    return found


def top(name: str) -> str:
    return name.split(".")[0]


def in_scene(name: str) -> bool:
    return name == SCENE or name.startswith(SCENE + ".")


def loaded_on_import(start: str):
    """Every osteobmd module executed by `import start` (parents included), with the
    non-osteobmd modules each of them imports at import time."""
    todo, seen, external = [start], set(), {}
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for n in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b, a.b.c
            mod = ".".join(parts[:n])
            if mod in seen or mod not in MODULES:
                continue
            seen.add(mod)
            for target, at_import in imports_of(mod):
                if not at_import:
                    continue
                if top(target) == PACKAGE:
                    todo.append(target)
                else:
                    external.setdefault(mod, set()).add(top(target))
    return seen, external


def test_the_walk_sees_the_package():
    assert {"osteobmd", "osteobmd.pipeline", "osteobmd.stages", "osteobmd.cli"} <= set(MODULES)
    assert any(in_scene(m) for m in MODULES), "osteobmd.scene (the Qt-free scene building) is missing"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_the_slicer_side(name):
    bad = [t for t, _ in imports_of(name) if top(t) in SLICER_SIDE]
    assert not bad, f"{name} imports {bad}: the pipeline package never uses the Slicer side"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_slicer_and_vtk_only_in_the_scene_package_and_the_scene_only_lazily(name):
    imports = imports_of(name)
    if not in_scene(name):
        bad = [t for t, _ in imports if top(t) in SCENE_ONLY]
        assert not bad, f"{name} imports {bad}; only {SCENE} may"
        eager = [t for t, at_import in imports if in_scene(t) and at_import]
        assert not eager, f"{name} imports {eager} when it is loaded; import it inside the function that needs it"


@pytest.mark.parametrize("start", ["osteobmd", "osteobmd.pipeline", "osteobmd.cli", "osteobmd.options",
                                   "osteobmd.results", "osteobmd.config"])
def test_importing_the_pipeline_never_loads_the_scene_or_slicer(start):
    seen, external = loaded_on_import(start)
    assert not [m for m in seen if in_scene(m)], f"import {start} loads {SCENE}"
    reached = set().union(*external.values()) if external else set()
    assert not reached & set(SCENE_ONLY + SLICER_SIDE), (start, external)


def _modules_after(code: str) -> dict:
    probe = ("import json, sys\n" + code + "\nprint(json.dumps({m: m in sys.modules for m in "
             "('slicer', 'vtk', 'OsteoBMDLib', 'qt', 'torch', 'SimpleITK', 'scipy', 'matplotlib')}))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(MODULE_DIR), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_fresh_interpreter_agrees():
    loaded = _modules_after("import osteobmd.pipeline")
    assert not any(loaded[m] for m in ("slicer", "vtk", "OsteoBMDLib", "qt")), loaded
    loaded = _modules_after("import osteobmd.cli")
    assert not any(loaded[m] for m in ("slicer", "vtk", "OsteoBMDLib", "qt", "torch")), loaded


def test_help_and_version_load_no_heavy_library():
    """`osteobmd --help` starts fast: no torch, SimpleITK, scipy or matplotlib behind it."""
    loaded = _modules_after("from osteobmd.cli import main\n"
                            "for argv in (['--help'], ['--version'], ['run', '--help']):\n"
                            "    try:\n        main(argv)\n    except SystemExit:\n        pass")
    assert not any(loaded[m] for m in ("torch", "SimpleITK", "scipy", "matplotlib")), loaded
