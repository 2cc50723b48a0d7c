"""dvc.yaml's deps cover every project module each stage imports, so `dvc status` never hides a change."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import REPO
from tests.import_graph import SRC, import_closure, module_file


def stage_deps() -> dict[str, tuple[Path, set[str]]]:
    """stage -> (its module's file, the source files dvc.yaml lists as its deps)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        module = stage["cmd"].split("-m", 1)[1].split()[0]
        deps = {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}
        out[name] = (module_file(module), {d for d in deps if d.startswith("src/")})
    return out


def test_every_imported_module_is_a_dep_of_its_stage() -> None:
    missing = []
    for name, (module, deps) in stage_deps().items():
        assert module is not None, f"stage {name}: its cmd names no module under src/"
        for path in sorted(import_closure(module)):
            relative = path.relative_to(REPO).as_posix()
            if relative not in deps:  # package __init__ files too: importing a module runs them
                missing.append(f"stage {name}: {relative} is imported but not among its deps")
    assert not missing, "\n".join(missing)


def test_no_dep_is_listed_that_the_stage_does_not_import() -> None:
    extra = []
    for name, (module, deps) in stage_deps().items():
        closure = {p.relative_to(REPO).as_posix() for p in import_closure(module)}
        extra += [f"stage {name}: {d} is a dep but never imported" for d in sorted(deps - closure)]
    assert not extra, "\n".join(extra)


def test_the_closure_sees_imports_inside_functions(tmp_path: Path) -> None:
    train = {p.relative_to(SRC).as_posix() for p in import_closure(SRC / "kagglecv/stages/train.py")}
    assert {"kagglecv/engine.py", "kagglecv/images.py", "kagglecv/progress.py"} <= train  # indirect, through fold_training.py
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from kagglecv.images import decode_image\n")
    assert "images.py" in {p.name for p in import_closure(source)}
