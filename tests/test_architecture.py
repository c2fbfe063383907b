"""The package's sides import only downward: the folder tree is the architecture.

Every import statement of every module is read (inside functions too), so a lazy import that
runs sideways or upward fails here before it can pull TensorFlow into the base install.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgelesion"
SHARED = "shared"
# What each side may import besides itself. Shared leaves are the top-level modules but cli.
ALLOWED: dict[str, set[str]] = {
    SHARED: set(),
    "data": {SHARED},
    "infer": {SHARED},
    "train": {SHARED, "data"},
    "export": {SHARED, "data", "train", "infer"},
    "bench": {SHARED, "data", "infer"},
    "cli": {SHARED, "data", "train", "export", "infer", "bench", "package"},
}
SIDES = {"data", "train", "export", "infer", "bench"}


def side_of(module: str) -> str:
    """'edgelesion.infer.runtimes' -> 'infer'; top-level modules are shared leaves; 'edgelesion' is the package face."""
    parts = module.split(".")
    if parts == ["edgelesion"]:
        return "package"
    if parts[1] in SIDES:
        return parts[1]
    return "cli" if parts[1] == "cli" else SHARED


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def edgelesion_imports(path: Path) -> list[str]:
    """Every edgelesion module that `path` imports, at any depth of its code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "edgelesion"]
        elif isinstance(node, ast.ImportFrom) and node.module == "edgelesion":
            found += [f"edgelesion.{alias.name}" for alias in node.names]  # a submodule or a name of the face
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edgelesion":
            found.append(node.module)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_sides_are_the_folders_the_readme_names():
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} == SIDES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_run_only_downward(path):
    own = side_of(module_name(path))
    if own == "package":  # the package face re-exports the inference API only
        assert {side_of(m) for m in edgelesion_imports(path)} <= {"infer"}
        return
    wrong = [m for m in edgelesion_imports(path) if side_of(m) != own and side_of(m) not in ALLOWED[own]]
    assert not wrong, (
        f"{module_name(path)} ({own}) imports {wrong}, against the direction {own} -> {sorted(ALLOWED[own])}"
    )


def test_the_checker_sees_imports_inside_functions(tmp_path):
    probe = PACKAGE / "infer" / "runtimes.py"
    source = probe.read_text() + "\n\ndef _late():\n    from edgelesion.train.training import train\n"
    copy = tmp_path / "edgelesion" / "infer" / "runtimes.py"
    copy.parent.mkdir(parents=True)
    copy.write_text(source)
    assert "edgelesion.train.training" in edgelesion_imports(copy)


def test_nothing_imports_the_cli():
    importers = [module_name(p) for p in MODULES if any(side_of(m) == "cli" for m in edgelesion_imports(p))]
    assert importers == []


def test_each_command_s_entry_point_is_on_its_side_s_face_and_the_inference_face_stays_light():
    import subprocess
    import sys

    from edgelesion.bench import compare_bundles, run_benchmark
    from edgelesion.bench.benchmarking import compare_bundles as deep_compare
    from edgelesion.bench.benchmarking import run_benchmark as deep_benchmark
    from edgelesion.data import MetadataSpec, run_audit
    from edgelesion.data.audit_report import run_audit as deep_audit
    from edgelesion.data.metadata import MetadataSpec as deep_spec
    from edgelesion.infer import run_predict
    from edgelesion.infer.predicting import run_predict as deep_predict
    from edgelesion.train import cross_validate, cross_validate_sources
    from edgelesion.train.cross_validation import cross_validate as deep_cv
    from edgelesion.train.leave_source_out import cross_validate_sources as deep_lso

    assert (
        run_benchmark,
        compare_bundles,
        run_audit,
        MetadataSpec,
        run_predict,
        cross_validate,
        cross_validate_sources,
    ) == (deep_benchmark, deep_compare, deep_audit, deep_spec, deep_predict, deep_cv, deep_lso)
    import edgelesion.infer

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        edgelesion.infer.nothing  # noqa: B018
    code = "import sys, edgelesion.infer as face; face.run_predict; print('tensorflow' in sys.modules)"
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert answer.strip() == "False"
