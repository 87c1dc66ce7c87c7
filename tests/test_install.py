"""How cifarlab installs: the tested set is recorded, and a Colab-like environment (its
TensorFlow and Keras a minor release behind this project's constraints, Jupyter present)
keeps its preinstalled packages when cifarlab is installed into it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

#: What a Colab runtime has preinstalled (its TensorFlow and Keras a minor release behind
#: constraints.txt): installing cifarlab must change none of these.
COLAB_LIKE = {
    "tensorflow": "2.20.0",
    "keras": "3.10.0",
    "numpy": "2.0.2",
    "pandas": "2.2.2",
    "matplotlib": "3.10.0",
    "scikit-learn": "1.6.1",
    "seaborn": "0.13.2",
    "ipykernel": "6.17.1",
    "jupyter": "1.1.1",
}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def _requirements() -> list[Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = meta["optional-dependencies"]["dev"]
    return [Requirement(r) for r in meta["dependencies"] + dev]


def test_the_constraints_file_pins_every_dependency_within_its_range():
    pins = _pins(ROOT / "constraints.txt")
    for req in _requirements():
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {req.specifier}"
        )


def test_make_installs_from_the_constraints_file():
    makefile = (ROOT / "Makefile").read_text()
    # the project's own environment (make setup / test / run); `lock` and `oldest` build
    # theirs from the newest and the lowest releases on purpose
    install = [ln for ln in makefile.splitlines() if "$(BIN)/python -m pip install" in ln]
    assert any("-e '.[dev]'" in ln for ln in install)
    assert all("-c $(CONSTRAINTS)" in ln for ln in install if "-e '.[dev]'" in ln)


def test_the_ranges_admit_the_previous_minor_release_of_tensorflow_and_keras():
    pins = _pins(ROOT / "constraints.txt")
    reqs = {r.name.lower(): r for r in _requirements()}
    for name in ("tensorflow", "keras"):
        major, minor, *_ = Version(pins[name]).release
        previous = Version(f"{major}.{minor - 1}.0")
        assert reqs[name].specifier.contains(previous), f"{name} {previous} is refused"


@pytest.mark.network
def test_installing_into_a_colab_like_environment_changes_none_of_its_packages(tmp_path):
    """pip's resolver (`--dry-run --report`) with the Colab set held fixed: cifarlab's
    ranges admit every preinstalled version, so pip resolves without replacing one."""
    held = tmp_path / "colab.txt"
    held.write_text("".join(f"{k}=={v}\n" for k, v in COLAB_LIKE.items()))
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
           "--report", str(report), "-c", str(held), str(ROOT), *COLAB_LIKE]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0 and re.search(r"connection|network|resolve host", r.stderr, re.I):
        pytest.fail("the resolver test needs the package index: " + r.stderr[-500:])
    assert r.returncode == 0, r.stderr[-2000:]
    chosen = {
        i["metadata"]["name"].lower(): i["metadata"]["version"]
        for i in json.loads(report.read_text())["install"]
    }
    for name, version in COLAB_LIKE.items():
        assert chosen[name] == version, f"{name}: {version} -> {chosen[name]}"
