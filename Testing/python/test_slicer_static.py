"""Static checks of the Slicer extension (no Slicer needed).

- every `self.ui.<name>` / `ui.<name>` OsteoBMD.py uses is a widget of the .ui file, and
  every SlicerParameterName is a field of the parameter node;
- every file the module's CMakeLists.txt lists exists, and every .py under OsteoBMD/ is
  installed (listed or globbed), checked by parsing and, when cmake is there, by cmake itself;
- the top-level CMakeLists.txt is a current Slicer extension;
- OsteoBMD.py, OsteoBMDLib and the pipeline package parse with Python 3.9 grammar (Slicer
  5.8's Python; the worker runs the package in it) and use no 3.10+ runtime annotations;
- OsteoBMDLib uses no Qt/CTK/application; the pipeline package imports no slicer, except its
  scene building (osteobmd/scene), which uses nodes only (the one-way rule in full:
  test_architecture.py);
- OsteoBMD.py is only the wiring (under 300 lines), one owner per concept, texts translated.
"""

import ast
import glob
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "OsteoBMD"
MODULE_PY = MODULE / "OsteoBMD.py"
LIB = MODULE / "OsteoBMDLib"
SELF_TEST = MODULE / "OsteoBMDTesting"  # the module's self-test, run inside Slicer
PACKAGE = MODULE / "osteobmd"
PANEL_STATE = LIB / "panel_state.py"
TEXTS = LIB / "texts.py"
UI_FILE = MODULE / "Resources" / "UI" / "OsteoBMD.ui"
MODULE_CMAKE = MODULE / "CMakeLists.txt"


def py_files(folder: Path):
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def ui_widgets() -> dict:
    tree = ET.parse(UI_FILE)
    widgets = {}
    for w in tree.iter("widget"):
        prop = w.find("property[@name='SlicerParameterName']/string")
        widgets[w.get("name")] = (w.get("class"), prop.text if prop is not None else None)
    return widgets


# --------------------------------------------------------------------------- the .ui file


def used_ui_names(source: str) -> set:
    """Names used as `<x>.ui.<name>` (self.ui, widget.ui) or `ui.<name>`."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            base = node.value
            if isinstance(base, ast.Attribute) and base.attr == "ui":
                names.add(node.attr)
            elif isinstance(base, ast.Name) and base.id == "ui":
                names.add(node.attr)
    return names


def view_widget_names(source: str) -> set:
    """The widget names of panel_state's views: keys of {name: {property: value}} dicts and of
    `view["name"] = {...}` assignments."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                is_dict = isinstance(value, ast.Dict) or (isinstance(value, ast.Call)
                                                          and getattr(value.func, "id", "") == "dict")
                if isinstance(key, ast.Constant) and is_dict:
                    names.add(key.value)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
                    names.add(target.slice.value)
    return names


def test_every_ui_name_the_module_uses_exists_in_the_ui_file():
    widgets = ui_widgets()
    for path in [MODULE_PY, SELF_TEST / "panel_flow.py"]:
        used = used_ui_names(path.read_text(encoding="utf-8"))
        assert used, f"{path.name} uses no .ui.<name>: the check would prove nothing"
        missing = sorted(used - set(widgets))
        assert not missing, f"{path.name} uses widgets the .ui file lacks: {missing}"
    assert len(widgets) == len(list(ET.parse(UI_FILE).iter("widget"))), "widget names in the .ui file must be unique"


def test_every_widget_panel_state_sets_exists_in_the_ui_file():
    named = view_widget_names(PANEL_STATE.read_text(encoding="utf-8"))
    assert {"applyButton", "meanBmdLabel", "caseStatusLabel", "calibrationSlopeSpinBox"} <= named, named
    missing = sorted(named - set(ui_widgets()))
    assert not missing, f"panel_state sets widgets the .ui file lacks: {missing}"


def parameter_fields() -> dict:
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                (isinstance(d, ast.Name) and d.id == "parameterNodeWrapper") for d in node.decorator_list):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("OsteoBMD.py has no @parameterNodeWrapper class")


def test_parameter_bound_widgets_match_typed_parameters():
    fields = parameter_fields()
    bound = {name: (cls, param) for name, (cls, param) in ui_widgets().items() if param}
    for name, (cls, param) in bound.items():
        assert param in fields, f"{name} is bound to '{param}', which the parameter node does not declare"
    by_param = {param: cls for cls, param in bound.values()}
    # The inputs the issue asks for are typed parameters bound to their widgets.
    assert by_param.get("inputVolume") == "qMRMLNodeComboBox" and "vtkMRMLScalarVolumeNode" in fields["inputVolume"]
    assert by_param.get("device") == "QComboBox"
    for i in range(1, 5):
        assert by_param.get(f"meanL{i}") == "QCheckBox" and fields[f"meanL{i}"] == "bool"
    # The calibration: a choice, and the slope and intercept of the linear one.
    assert by_param.get("calibration") == "QComboBox" and fields["calibration"] == "CalibrationChoice"
    for name in ("calibrationSlope", "calibrationIntercept"):
        assert by_param.get(name) == "QDoubleSpinBox" and fields[name] == "float"


def test_user_facing_strings_go_through_translation():
    """Message boxes and labels set from Python get their text from _()."""
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    offenders = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "errorDisplay", "confirmOkCancelDisplay", "confirmYesNoDisplay", "warningDisplay", "infoDisplay"):
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                offenders.append(f"line {node.lineno}")
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str) \
                and node.value.value.strip():
            for target in node.targets:
                if isinstance(target, ast.Attribute) and target.attr in ("text", "toolTip"):
                    offenders.append(f"line {node.lineno}")
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and getattr(node.exc.func, "id", "") == \
                "OsteoBMDError":
            arg = node.exc.args[0] if node.exc.args else None
            if isinstance(arg, ast.Constant):
                offenders.append(f"line {node.lineno}")
    assert not offenders, f"untranslated user-facing strings at {offenders}"


# --------------------------------------------------------------------------- CMake


def _cmake_values(text: str, variable: str) -> list:
    values = []
    for m in re.finditer(r"set\(\s*" + re.escape(variable) + r"\b(.*?)\)", text, re.S):
        values += m.group(1).split()
    return values


def cmake_module_lists() -> tuple:
    """(scripts, resources) of OsteoBMD/CMakeLists.txt, evaluated like CMake would."""
    text = re.sub(r"#[^\n]*", "", MODULE_CMAKE.read_text(encoding="utf-8"))
    module_name = _cmake_values(text, "MODULE_NAME")[0]

    def expand(entries):
        return [e.replace("${MODULE_NAME}", module_name) for e in entries]

    scripts = expand(_cmake_values(text, "MODULE_PYTHON_SCRIPTS"))
    resources = expand(_cmake_values(text, "MODULE_PYTHON_RESOURCES"))
    globs = {}
    for m in re.finditer(r"file\(\s*GLOB_RECURSE\s+(\w+)(.*?)\)", text, re.S):
        words = m.group(2).split()
        assert words[:2] == ["RELATIVE", "${CMAKE_CURRENT_SOURCE_DIR}"], "globs must be RELATIVE to the module folder"
        patterns = [w for w in words[2:] if w != "CONFIGURE_DEPENDS"]
        found = []
        for pattern in patterns:
            directory, _, name = pattern.rpartition("/")
            found += [str(p.relative_to(MODULE)) for p in (MODULE / directory).rglob(name)]
        globs[m.group(1)] = sorted(f.replace(os.sep, "/") for f in found if "__pycache__" not in f)
    for m in re.finditer(r"list\(\s*APPEND\s+(\w+)\s+\$\{(\w+)\}\s*\)", text):
        target = {"MODULE_PYTHON_SCRIPTS": scripts, "MODULE_PYTHON_RESOURCES": resources}[m.group(1)]
        target += globs[m.group(2)]
    return scripts, resources


def test_every_file_cmake_lists_exists_and_every_py_is_installed():
    scripts, resources = cmake_module_lists()
    assert "OsteoBMD.py" in scripts
    for entry in scripts + resources:
        assert (MODULE / entry).is_file(), f"CMakeLists.txt lists '{entry}', which does not exist"
    assert len(scripts) == len(set(scripts)), "a script is listed twice"
    every_py = {str(p.relative_to(MODULE)).replace(os.sep, "/") for p in py_files(MODULE)}
    not_installed = sorted(every_py - set(scripts))
    assert not not_installed, (
        f"these .py files would be missing from the installed extension: {not_installed}; "
        "list them in OsteoBMD/CMakeLists.txt (or put them under osteobmd/, which is globbed)"
    )
    for required in ("Resources/Icons/OsteoBMD.png", "Resources/UI/OsteoBMD.ui", "Resources/requirements.txt"):
        assert required in resources
    # Package data the pipeline reads at run time (pyproject's package-data) is installed too.
    for data in glob.glob(str(PACKAGE / "**" / "*.json"), recursive=True):
        assert str(Path(data).relative_to(MODULE)).replace(os.sep, "/") in resources


STUB = """
cmake_minimum_required(VERSION 3.16)
project(OsteoBMDStaticCheck NONE)
set(PROJECT_SOURCE_DIR "{repo}")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/qt-scripted-modules)
set(BUILD_TESTING ON)
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${{ARGN}})
  foreach(f ${{MY_SCRIPTS}} ${{MY_RESOURCES}})
    if(NOT EXISTS "${{CMAKE_CURRENT_SOURCE_DIR}}/${{f}}")
      message(FATAL_ERROR "listed file does not exist: ${{f}}")
    endif()
  endforeach()
  string(REPLACE ";" "\\n" s "${{MY_SCRIPTS}}")
  string(REPLACE ";" "\\n" r "${{MY_RESOURCES}}")
  file(WRITE "{out}/scripts.txt" "${{s}}")
  file(WRITE "{out}/resources.txt" "${{r}}")
endfunction()
function(slicer_add_python_unittest)
endfunction()
add_subdirectory("{module}" module)
"""


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_itself_installs_every_py(tmp_path):
    """The same check by running the module's CMakeLists.txt with Slicer's macros stubbed."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(STUB.format(repo=REPO.as_posix(), out=tmp_path.as_posix(),
                                                    module=MODULE.as_posix()))
    proc = subprocess.run(["cmake", "-S", str(src), "-B", str(tmp_path / "build")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    scripts = set((tmp_path / "scripts.txt").read_text(encoding="utf-8").split("\n"))
    every_py = {str(p.relative_to(MODULE)).replace(os.sep, "/") for p in py_files(MODULE)}
    assert every_py <= scripts, sorted(every_py - scripts)
    assert set(cmake_module_lists()[0]) == scripts
    # The sample CT for the self-test lands beside the module in the build tree.
    assert (tmp_path / "build" / "lib" / "qt-scripted-modules" / "Resources" / "Samples" / "ct.nii.gz").exists()


def test_top_level_cmake_is_a_current_slicer_extension():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                     "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(r"set\(\s*" + variable + r"\s+\S", text), f"{variable} is not set"
    assert re.search(r'set\(\s*EXTENSION_DEPENDS\s+"?PyTorch"?', text)
    for line in ("project(OsteoBMD)", "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                 "add_subdirectory(OsteoBMD)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                 "include(${Slicer_EXTENSION_CPACK})"):
        assert line in text, line
    module = MODULE_CMAKE.read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule(" in module and "WITH_GENERIC_TESTS" in module
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in module


def test_icon_is_a_128_pixel_png():
    data = (MODULE / "Resources" / "Icons" / "OsteoBMD.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)


def _requirement_name(line: str) -> str:
    return re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_match_pyproject():
    """What the panel installs = the package's dependencies minus what Slicer provides."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
    package_deps = {_requirement_name(d) for d in re.findall(r'"([^"]+)"', block)}
    lines = [l.split("#")[0].strip() for l in (MODULE / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()]
    panel = {_requirement_name(l) for l in lines if l}
    provided = {"torch", "simpleitk", "numpy", "vtk"}  # PyTorch extension / shipped with Slicer
    assert not panel & provided, "never pip-install torch, SimpleITK, numpy or vtk into Slicer"
    assert panel == package_deps - provided


# --------------------------------------------------------------------------- Python 3.9, imports


def _runtime_pep604(tree: ast.Module) -> list:
    """`X | Y` in annotations that Python 3.9 evaluates (no `from __future__ import annotations`)."""
    if any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
           for n in tree.body):
        return []
    found = []
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations = [a.annotation for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs]
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        for a in annotations:
            if a is not None and any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(a)):
                found.append(node.lineno)
    return found


@pytest.mark.parametrize("path", [MODULE_PY] + py_files(LIB) + py_files(SELF_TEST) + py_files(PACKAGE),
                         ids=lambda p: str(p.relative_to(MODULE)))
def test_parses_with_python_3_9_grammar(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path), feature_version=(3, 9))
    assert not [n for n in ast.walk(tree) if type(n).__name__ == "Match"], "match statements need Python 3.10"
    lines = _runtime_pep604(tree)
    assert not lines, f"'X | Y' annotations evaluated at run time (Python 3.10+) at lines {lines}"


def _imports(tree: ast.Module) -> set:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", py_files(LIB), ids=lambda p: p.name)
def test_osteobmdlib_is_qt_free(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not _imports(tree) & {"qt", "ctk", "PythonQt", "slicer_qt"}, "OsteoBMDLib must not import Qt/CTK"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer":
            assert node.attr not in ("app", "modules", "util", "mrmlScene", "qMRMLNodeComboBox"), (
                f"line {node.lineno}: slicer.{node.attr} exists only inside the Slicer application; "
                "take the scene as an argument"
            )


def test_osteobmdlib_modules_without_mrml_import_without_slicer():
    """worker and case_list run where slicer-core is absent (the pipeline's own tests)."""
    for name in ("worker.py", "case_list.py", "__init__.py"):
        assert "slicer" not in _imports(ast.parse((LIB / name).read_text(encoding="utf-8"))), name


SCENE = PACKAGE / "scene"  # the scene building: the one part of the package that needs slicer-core


def pipeline_modules_outside_scene():
    return [p for p in py_files(PACKAGE) if SCENE not in p.parents]


@pytest.mark.parametrize("path", pipeline_modules_outside_scene(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pipeline_package_imports_no_slicer(path):
    imported = _imports(ast.parse(path.read_text(encoding="utf-8")))
    assert not imported & {"slicer", "qt", "ctk", "vtkSlicer", "MRMLCore"}, (
        f"{path.name} imports {sorted(imported & {'slicer', 'qt', 'ctk'})}: the pipeline package must run without Slicer"
    )


@pytest.mark.parametrize("path", py_files(SCENE), ids=lambda p: p.name)
def test_scene_building_uses_no_application_and_no_slicer_side(path):
    """osteobmd.scene writes scene.mrb outside Slicer: nodes and storage nodes, no Qt, no OsteoBMDLib."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not _imports(tree) & {"qt", "ctk", "PythonQt", "OsteoBMDLib", "OsteoBMD"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer":
            assert node.attr not in ("app", "modules", "util", "mrmlScene"), f"line {node.lineno}: slicer.{node.attr}"


# --------------------------------------------------------------------------- a thin widget, one owner per concept


def test_module_file_is_only_the_wiring():
    """OsteoBMD.py: the module, its parameter node, widget, logic and test, under 300 lines;
    what the panel decides lives in the tested OsteoBMDLib (panel_state, texts, session)."""
    source = MODULE_PY.read_text(encoding="utf-8")
    assert len(source.splitlines()) < 300
    classes = {n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)}
    assert classes == {"OsteoBMD", "OsteoBMDParameterNode", "OsteoBMDWidget", "OsteoBMDLogic", "OsteoBMDTest"}


def _assigned_names(path: Path) -> set:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


@pytest.mark.parametrize("name, owner", [
    ("OsteoBMDError", PACKAGE / "errors.py"),
    ("CLASS_COLORS", PACKAGE / "config.py"),
    ("DEFAULT_MEAN_VERTEBRAE", PACKAGE / "config.py"),
    ("FINISHED", LIB / "worker.py"),  # the run states; the session's outcomes build on them
    ("FAILED", LIB / "worker.py"),
    ("CANCELLED", LIB / "worker.py"),
])
def test_one_owner_per_concept(name, owner):
    owners = [p for p in [MODULE_PY, *py_files(LIB), *py_files(SELF_TEST), *py_files(PACKAGE)]
              if name in _assigned_names(p)]
    assert owners == [owner], f"{name} is defined in {[str(p.relative_to(MODULE)) for p in owners]}"


def test_panel_texts_go_through_translation():
    """Every sentence in texts.py is the argument of _() (docstrings and dict keys, which are names, apart)."""
    tree = ast.parse(TEXTS.read_text(encoding="utf-8"))
    translated = {id(n.args[0]) for n in ast.walk(tree)
                  if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "_" and n.args}
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef)) and n.body and isinstance(n.body[0], ast.Expr)}
    keys = {id(k) for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys}
    sentences = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                 and " " in n.value.strip() and id(n) not in docstrings | keys]
    assert sentences, "texts.py has no sentence: the check would prove nothing"
    untranslated = [f"line {n.lineno}: {n.value[:40]}" for n in sentences if id(n) not in translated]
    assert not untranslated, untranslated
