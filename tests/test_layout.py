"""The package's shape: one owner per concern, no import circles, a layout that reads.

These read the source, not its behaviour: they keep the layout the README describes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from cifarlab.layout import Layout, atomic_path, run_lock

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cifarlab"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
OUTPUT_FOLDERS = {
    "saved_models",
    "histories",
    "reports",
    "figures",
    "runs",
    "logs",
    "tuning",
    "ablation",
}


def _imports(module: str) -> set[str]:
    """cifarlab modules that ``module`` imports anywhere (top level or inside functions)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "cifarlab":
                found |= {a.name for a in node.names}
            elif node.module.startswith("cifarlab."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("cifarlab.")}
    return found & set(MODULES)


def test_no_two_modules_import_each_other_directly_or_through_others():
    graph = {m: _imports(m) for m in MODULES}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n) :] + [n]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", MODULES)
def test_module_stays_readable_in_size(module):
    lines = len((PACKAGE / f"{module}.py").read_text().splitlines())
    assert lines <= 450, f"{module}.py has {lines} lines: split it by concern"


@pytest.mark.parametrize("module", [m for m in MODULES if m != "layout"])
def test_only_the_layout_module_names_an_output_folder(module):
    text = (PACKAGE / f"{module}.py").read_text()
    assert "saved_models" not in text and "histories" not in text
    strings = {
        n.value
        for n in ast.walk(ast.parse(text))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    named = {s for s in strings if s.strip("/") in OUTPUT_FOLDERS}
    assert not named, f"{module}.py spells output folder(s) {named}: ask cifarlab.layout"


def test_the_model_names_are_spelled_once():
    spelled = [
        m
        for m in MODULES
        if re.search(
            r"""["']baseline["'],\s*["']overfit["'],\s*["']tuned["']""",
            (PACKAGE / f"{m}.py").read_text(),
        )
    ]
    assert spelled == ["config"]


def test_readme_layout_section_lists_every_module_once():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- `(\w+)\.py`", section, flags=re.M)
    assert sorted(listed) == sorted(MODULES + ["__init__", "__main__"]), listed
    assert len(listed) == len(set(listed))


def test_every_artifact_path_sits_under_the_output_root(tmp_path):
    out = Layout(tmp_path)
    paths = [
        out.model("m"), out.meta("m"), out.history("m"), out.work("m"), out.logs("m"),
        out.per_class("m"), out.confused_pairs("m"), out.per_superclass("m"),
        out.figure("curves", "m"),
        out.search, out.results_csv, out.results_md, out.figure_index, out.bench,
        out.executed_notebook("TestModels"), out.tuning_dir,
    ]  # fmt: skip
    assert all(p.is_relative_to(tmp_path) for p in paths)
    assert len(set(paths)) == len(paths)
    assert out.model("m").suffix == ".keras" and out.history("m").suffix == ".npy"


def test_an_atomic_write_that_fails_leaves_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk gone")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_two_runs_cannot_hold_the_same_work_folder(tmp_path):
    from cifarlab.errors import CifarlabError

    with run_lock(tmp_path / "w"):
        with pytest.raises(CifarlabError, match="another cifarlab run"):
            with run_lock(tmp_path / "w"):
                pass
