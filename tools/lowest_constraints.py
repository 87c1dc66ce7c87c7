"""Print a constraints file that pins every dependency of pyproject.toml (and its dev
extra) at the lowest version its range admits: `make oldest` tests those."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
reqs = project["project"]["dependencies"] + project["project"]["optional-dependencies"]["dev"]
print("# the lowest versions pyproject.toml admits (tools/lowest_constraints.py)")
for req in reqs:
    name = re.match(r"[A-Za-z0-9_.\-]+", req).group(0)
    low = re.search(r"(?:>=|==)\s*([0-9][^,;\s]*)", req)
    if low:  # "2.3" admits 2.3.x: the lowest minor, its newest patch (2.3.0 may not exist)
        version = low.group(1)
        print(f"{name}=={version}" + (".*" if version.count(".") < 2 else ""))
    else:
        print(f"# {name}: no lower bound", file=sys.stderr)
# ipykernel's lowest (Colab's 6.17.1) imports IPython.core.pylabtools.backend2gui, which
# IPython 9 removed, and declares no upper bound: the IPython Colab ships beside it
print("ipython==7.34.0")
