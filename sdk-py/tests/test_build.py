"""The build command: reading the project, finding the bundle, running componentize-py."""

import sys
import textwrap
from pathlib import Path

import pytest

from flowcraft_node.build import BuildError, build, entry_source, load_bundle, load_project, wit_file
from flowcraft_node.cli import main

COMPONENT_HEADER = bytes.fromhex("0061736d0d000100")
NODES = """
from flowcraft_node import Bundle, node

@node("{uses}")
def hello(ctx, value, params):
    return "hello"

bundle = Bundle([hello])
not_a_bundle = 42
"""


def make_project(directory: Path, package: str, bundle_ref: str | None = None, *, src: bool = False) -> Path:
    """A bundle project with one node type ``<package>-hello``."""
    ref = bundle_ref if bundle_ref is not None else f"{package}:bundle"
    root = directory / "src" if src else directory
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text(NODES.format(uses=f"{package}-hello"))
    (directory / "pyproject.toml").write_text(
        textwrap.dedent(f"""
            [project]
            name = "{package.replace("_", "-")}"
            version = "0.4.2"

            [tool.flowcraft]
            bundle = "{ref}"
        """)
    )
    return directory


def test_the_project_names_the_bundle(tmp_path: Path) -> None:
    project = load_project(make_project(tmp_path, "proj_a", src=True))
    assert (project.name, project.version, project.module, project.attribute) == ("proj-a", "0.4.2", "proj_a", "bundle")
    assert project.python_path == (tmp_path, tmp_path / "src")


def test_a_missing_pyproject_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"no pyproject.toml in .*: run the build in a bundle project directory"):
        load_project(tmp_path)


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project\n")
    with pytest.raises(BuildError, match=r"pyproject.toml is not valid TOML"):
        load_project(tmp_path)


def test_name_and_version_are_required(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndynamic = ["version"]\n')
    with pytest.raises(BuildError, match=r"\[project\] needs a static `name` and `version`"):
        load_project(tmp_path)


@pytest.mark.parametrize("ref", ["", "pkg", "pkg:", "pkg:not-an-identifier", "bad module:bundle"])
def test_the_bundle_reference_must_be_module_colon_attribute(tmp_path: Path, ref: str) -> None:
    make_project(tmp_path, "proj_b", bundle_ref=ref)
    with pytest.raises(BuildError, match=r'add `\[tool.flowcraft\]` with `bundle = "your_package:bundle"`'):
        load_project(tmp_path)


def test_the_bundle_is_loaded_with_the_project_identity(tmp_path: Path) -> None:
    bundle = load_bundle(load_project(make_project(tmp_path, "proj_c")))
    assert (bundle.name, bundle.version, bundle.uses()) == ("proj-c", "0.4.2", ["proj_c-hello"])


def test_a_module_that_does_not_import_is_reported(tmp_path: Path) -> None:
    project = load_project(make_project(tmp_path, "proj_d", bundle_ref="proj_d.missing:bundle"))
    with pytest.raises(BuildError, match=r"cannot import `proj_d.missing` named by \[tool.flowcraft\] bundle: "):
        load_bundle(project)


@pytest.mark.parametrize(("attribute", "found"), [("nothing_here", "nothing"), ("not_a_bundle", "a int")])
def test_the_bundle_object_must_be_a_bundle(tmp_path: Path, attribute: str, found: str) -> None:
    package = f"proj_e_{attribute}"
    project = load_project(make_project(tmp_path, package, bundle_ref=f"{package}:{attribute}"))
    with pytest.raises(BuildError, match=f"`{package}:{attribute}` .* is {found}, not a flowcraft_node.Bundle"):
        load_bundle(project)


def test_the_entry_module_exports_the_bundle(tmp_path: Path) -> None:
    source = entry_source(load_project(make_project(tmp_path, "proj_f")))
    compile(source, "entry.py", "exec")
    assert "from proj_f import bundle as _bundle\n" in source
    assert "Node = export(_bundle, name='proj-f', version='0.4.2')\n" in source


def test_the_wit_is_the_contract() -> None:
    assert "package flowcraft:node@0.1.0;" in wit_file().read_text()


def test_the_command_line_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--project", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"error: no pyproject.toml in {tmp_path}")


def test_a_build_writes_a_component(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = make_project(tmp_path / "project", "proj_g")
    assert main(["build", "--project", str(project)]) == 0
    out = project / "dist" / "proj-g.wasm"
    assert out.read_bytes()[:8] == COMPONENT_HEADER
    assert sorted(path.name for path in out.parent.iterdir()) == ["proj-g.wasm"]
    assert capsys.readouterr().out.startswith(f"built proj-g 0.4.2 (proj_g-hello): {out} (")


def test_a_failing_componentize_py_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_command(*args: str) -> list[str]:
        partial = args[args.index("-o") + 1]
        return [sys.executable, "-c", f"open({partial!r}, 'w').write('half'); raise SystemExit(3)"]

    monkeypatch.setattr("flowcraft_node.build.componentize_py_command", failing_command)
    out = tmp_path / "out" / "h.wasm"
    with pytest.raises(BuildError, match=r"componentize-py failed \(exit code 3\); its messages are above"):
        build(make_project(tmp_path / "project", "proj_h"), out)
    assert list(out.parent.iterdir()) == []
