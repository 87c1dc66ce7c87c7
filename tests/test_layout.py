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
#: every module of the package, dotted from the package root ("data.batches", "cli")
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
    for p in PACKAGE.rglob("*.py")
    if p.stem not in ("__init__", "__main__")
)
#: the package's layers, bottom first: a module may import its own layer and those below.
#: The foundations, then the data's order (data, models, training, evaluation), then what
#: drives the series. Top-level modules are a layer each; a subpackage is one layer.
LAYERS = [
    "errors", "layout", "hardware", "config",
    "data", "models", "training", "evaluation",
    "backend", "course", "notebooks", "series", "ablation", "bench", "cli",
]  # fmt: skip
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


def _path(module: str) -> Path:
    return PACKAGE.joinpath(*module.split(".")).with_suffix(".py")


def _imports(module: str) -> set[str]:
    """cifarlab modules (dotted, as MODULES) that ``module`` imports anywhere (top level or
    inside functions); ``from cifarlab.data import datasets`` counts as data.datasets, an
    import of a subpackage's own names as the subpackage's modules it names."""
    tree = ast.parse(_path(module).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cifarlab"):
            base = node.module.removeprefix("cifarlab").lstrip(".")
            for a in node.names:
                full = f"{base}.{a.name}" if base else a.name
                found.add(full if full in MODULES or full in LAYERS else base)
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("cifarlab.")
                for a in node.names
                if a.name.startswith("cifarlab.")
            }
    return {m for m in found if m}


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_every_module_belongs_to_a_layer():
    assert {m.split(".")[0] for m in MODULES} == set(LAYERS)


def test_no_two_modules_import_each_other_directly_or_through_others():
    graph = {m: {n for n in _imports(m) if n in MODULES} for m in MODULES}
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
def test_no_module_imports_a_layer_above_its_own(module):
    above = sorted(n for n in _imports(module) if _layer(n) > _layer(module))
    assert not above, f"{module} imports {above}, above its layer"


def test_importing_cifarlab_leaves_the_environment_as_it_found_it(tmp_path):
    """Also where `cifarlab bench` recorded a fastest backend for this very machine."""
    import json
    import os
    import subprocess
    import sys

    from cifarlab.hardware import cpu_name

    cache = tmp_path / "cache"
    cache.mkdir()
    record = {"backend": "torch", "date": "x", "processor": cpu_name(), "cpu_count": os.cpu_count()}
    (cache / "fastest_backend.json").write_text(json.dumps(record))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["CIFARLAB_CACHE_DIR"] = str(cache)
    probe = (
        "import json, os; before = dict(os.environ); import cifarlab, cifarlab.data, "
        "cifarlab.config; print(json.dumps(dict(os.environ) == before))"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "true", out.stderr[-500:]
    # the record is one the command line's explicit step does follow, and says so
    step = "from cifarlab.backend import choose_backend; choose_backend()"
    out = subprocess.run([sys.executable, "-c", step], env=env, capture_output=True, text=True)
    assert "Keras backend torch" in out.stdout, out.stderr[-500:]


@pytest.mark.parametrize("module", [m for m in MODULES if m != "layout"])
def test_only_the_layout_module_names_an_output_folder(module):
    text = _path(module).read_text()
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
            _path(m).read_text(),
        )
    ]
    assert spelled == ["config"]


def test_readme_layout_section_lists_every_module_once():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = [m.replace("/", ".") for m in re.findall(r"^\s*- `([\w/]+)\.py`", section, flags=re.M)]
    assert sorted(listed) == sorted(MODULES), listed
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


def _no_file_locks(monkeypatch):
    """A filesystem without flock (Google Drive's FUSE mount on Colab, a network share)."""
    import errno
    import fcntl

    def flock(fh, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)


def test_without_file_locks_a_second_live_run_is_still_refused(tmp_path, monkeypatch):
    from cifarlab.errors import CifarlabError

    _no_file_locks(monkeypatch)
    with run_lock(tmp_path / "w"):
        with pytest.raises(CifarlabError, match="another cifarlab run"):
            with run_lock(tmp_path / "w"):
                pass
    with run_lock(tmp_path / "w"):  # released: the next run takes it
        pass
    assert not (tmp_path / "w" / ".lock.owner").exists()


def test_without_file_locks_a_dead_runs_lock_is_taken_over(tmp_path, monkeypatch):
    import json
    import os
    import socket
    import subprocess
    import sys

    _no_file_locks(monkeypatch)
    (tmp_path / "w").mkdir()
    owner = tmp_path / "w" / ".lock.owner"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    owner.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead)}))
    with run_lock(tmp_path / "w"):  # a killed kernel on this machine
        pass
    # a recycled runtime: another host, silent for longer than the heartbeat allows
    owner.write_text(json.dumps({"host": "old-runtime", "pid": 1}))
    old = os.stat(owner).st_mtime - 10 * 60
    os.utime(owner, (old, old))
    with run_lock(tmp_path / "w"):
        pass
    # but another host that keeps its heartbeat is alive
    owner.write_text(json.dumps({"host": "other-runtime", "pid": 1}))
    from cifarlab.errors import CifarlabError

    with pytest.raises(CifarlabError, match="another cifarlab run"):
        with run_lock(tmp_path / "w"):
            pass
