"""The import graph of src/kagglecv has no cycles and points one way: readers and types at the bottom, stages on top."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.import_graph import SRC, find_cycle, import_closure, module_name, project_imports

PACKAGE = SRC / "kagglecv"
STAGES = PACKAGE / "stages"
HEAVY = ("torch", "timm", "albumentations", "cv2", "pandas", "sklearn", "torchvision")


def graph() -> dict[Path, set[Path]]:
    return {path: project_imports(path) for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"}


def test_no_import_cycles_in_the_package() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(module_name(p) for p in cycle)


def test_the_cycle_finder_sees_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    assert find_cycle({a: {b}, b: {c}, c: set()}) is None
    assert find_cycle({a: {b}, b: {c}, c: {a}}) == [a, b, c, a]
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from kagglecv.ingest import read_competition\n")
    assert project_imports(probe) == {PACKAGE / "ingest.py"}


def test_no_stage_imports_another_stage() -> None:
    for stage in STAGES.glob("*.py"):
        others = {p for p in project_imports(stage) if p.parent == STAGES}
        assert not others, f"{stage.name} imports {', '.join(sorted(p.name for p in others))}"


def test_no_shared_module_imports_a_stage() -> None:
    for path, targets in graph().items():
        if path.parent != STAGES:
            assert not {t for t in targets if t.parent == STAGES}, f"{path.name} imports a stage module"


def test_readers_and_types_sit_at_the_bottom() -> None:
    """paths, params and data import no other project module but these; params reads no model or transform names."""
    bottom = {PACKAGE / "paths.py", PACKAGE / "params.py", PACKAGE / "data.py"}
    for path in bottom:
        above = {p for p in import_closure(path) if p.name != "__init__.py"} - bottom
        assert not above, f"{path.name} imports {sorted(p.name for p in above)}"


def test_loading_params_imports_no_model_transform_or_array_library() -> None:
    probe = (
        "import json, sys\nfrom kagglecv.params import load_params\nload_params()\n"
        "print(json.dumps(sorted(n for n in sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]
    assert not [m for m in loaded if m in ("kagglecv.models", "kagglecv.transforms")]
