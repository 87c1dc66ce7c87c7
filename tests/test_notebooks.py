"""The four notebooks: paired with text files, free of library logic, executed end to end."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pandas as pd
import pytest

from cifarlab import course

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("TrainingModels", "ThirdModel", "TestModels", "VisualizeModel")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_and_its_paired_py_file_are_in_sync(name):
    """The pair holds the same cells (type, source, tags); the header's jupytext version,
    which changes with every jupytext release, is not part of what the pair means."""
    nb = jupytext.read(ROOT / "notebooks" / f"{name}.ipynb")
    py = jupytext.reads((ROOT / "notebooks" / f"{name}.py").read_text(), fmt="py:percent")

    def cells(book):
        return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in book.cells]

    assert cells(py) == cells(nb)
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert py.metadata["jupytext"]["formats"] == "ipynb,py:percent"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs_and_a_parameters_cell(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    names = {
        t.id
        for node in ast.parse(params[0].source).body
        if isinstance(node, ast.Assign)
        for t in node.targets
    }
    assert {"dataset", "profile", "out", "seed"} <= names
    assert 'find_spec("cifarlab")' in code[0].source  # installs itself when missing
    assert any(c.cell_type == "markdown" and len(c.source) > 200 for c in nb.cells)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_setup_cell_outside_a_checkout_writes_under_cifarlab_run(name, tmp_path):
    """Colab: a notebook opened outside a checkout (cifarlab installed) must leave the
    series under ./cifarlab-run, where `out = ".."` of the next notebook finds it; in a
    checkout's notebooks/ it stays where it is (out = the checkout)."""
    setup = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells
    code = next(c.source for c in setup if c.cell_type == "code")
    probe = code + "\nprint(Path.cwd())\n"
    checkout = tmp_path / "checkout"
    (checkout / "notebooks").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    colab = tmp_path / "content"
    colab.mkdir()
    for cwd, expected in ((colab, colab / "cifarlab-run" / "notebooks"),
                          (checkout / "notebooks", checkout / "notebooks")):  # fmt: skip
        r = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert Path(r.stdout.strip()) == expected
    # run twice in one kernel (a re-run cell): it does not nest folders
    r = subprocess.run([sys.executable, "-c", code + "\n" + probe], cwd=colab,
                       capture_output=True, text=True)  # fmt: skip
    assert Path(r.stdout.strip()) == colab / "cifarlab-run" / "notebooks"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_cells_hold_no_logic_the_library_should_own(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    for cell in nb.cells[1:]:
        if cell.cell_type != "code" or "find_spec" in cell.source:
            continue
        tree = ast.parse(cell.source)
        banned = (ast.For, ast.While, ast.FunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp)
        assert not [n for n in ast.walk(tree) if isinstance(n, banned)], cell.source
        assert "plt." not in cell.source and "keras.layers" not in cell.source


@pytest.fixture(scope="module")
def executed(series):
    """The series run by conftest (the four notebooks executed by `cifarlab notebooks`)."""
    return series["out"], series["log"]


def test_the_four_notebooks_run_in_order_and_leave_everything(executed):
    out, log = executed
    assert [line.split("]")[1].split()[0] for line in log.splitlines() if line.startswith("[")] == [
        f"{n}.ipynb" for n in NOTEBOOKS
    ]
    for n in NOTEBOOKS:
        nb = nbformat.read(out / "reports" / "notebooks" / f"{n}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), n
        assert not [o for c in code for o in c.outputs if o.output_type == "error"], n
    for m in ("baseline", "overfit", "tuned", "vgg16"):
        assert (out / "saved_models" / f"{m}.keras").is_file()
        assert (out / "histories" / f"{m}.npy").is_file()
    assert (out / "reports" / "results.csv").is_file() and (out / "reports" / "figures").is_dir()


def test_the_series_prints_its_plan_first_and_its_actual_time_last(executed):
    """Without a budget (the smoke profile's default) the plan still predicts the recipes'
    time; every model's evidence and the report hold planned and actual minutes."""
    out, log = executed
    lines = log.splitlines()
    first_notebook = next(i for i, ln in enumerate(lines) if ln.startswith("[1/4]"))
    head = "\n".join(lines[:first_notebook])
    assert "plan: " in head and "predicted to finish at" in head
    assert re.search(r"series done in [\d.]+ min \(the plan predicted [\d.]+\)", lines[-1])
    p = json.loads((out / "reports" / "plan.json").read_text())
    assert p["budget_min"] is None and p["actual_total_s"] > 0
    for m in ("baseline", "overfit", "tuned", "vgg16"):
        meta = json.loads((out / "saved_models" / f"{m}.json").read_text())
        assert meta["plan"]["count"] == meta["config"]["epochs"] == p["planned"][m]
        assert meta["plan"]["planned_min"] > 0 and meta["plan"]["actual_min"] > 0
    assert "## Time: planned and actual" in (out / "reports" / "results.md").read_text()
    # while a kernel trains, the terminal shows the model and epoch it is on
    assert re.search(r"^ +\w+( \(phase \d\))?: epoch \d+/\d+", log, flags=re.M)


def test_the_terminal_line_of_an_epoch_says_where_the_series_stands(tmp_path):
    from cifarlab.notebooks import _status_lines
    from cifarlab.training import plan

    plan.write_plan(tmp_path, {"started": 1000.0, "predicted_total_s": 3600.0})
    (tmp_path / "runs" / "tuned").mkdir(parents=True)
    status = {"phase": 0, "epoch": 3, "epochs": 8, "val_accuracy": 0.5, "time": 1000.0 + 600}
    (tmp_path / "runs" / "tuned" / "status.json").write_text(json.dumps(status))
    seen: dict = {}
    assert _status_lines(tmp_path, seen) == [
        "      tuned: epoch 3/8, val accuracy 0.500; series 10.0 of 60.0 min planned"
    ]
    assert _status_lines(tmp_path, seen) == []  # each epoch once
    # the end of a part, from the plan (its work folder, with the last epoch's status,
    # may be gone before the next look): planned against actual
    the_plan = plan.read_plan(tmp_path)
    the_plan["parts"] = {"tuned": {"count": 8, "actual_min": 11.0, "planned_min": 10.0,
                                   "ended": 1000.0 + 660}}  # fmt: skip
    plan.write_plan(tmp_path, the_plan)
    assert _status_lines(tmp_path, seen) == [
        "      tuned: done, 8 epochs in 11.0 min (planned 10.0); series 11.0 of 60.0 min planned"
    ]
    assert _status_lines(tmp_path, seen) == []
    # the search's epochs say which trial they belong to
    (tmp_path / "runs" / "search").mkdir()
    status = {"phase": 0, "label": "trial 2 of 4", "epoch": 1, "epochs": 3, "time": 1000.0 + 60}
    (tmp_path / "runs" / "search" / "status.json").write_text(json.dumps(status))
    assert _status_lines(tmp_path, seen) == [
        "      search (trial 2 of 4): epoch 1/3; series 1.0 of 60.0 min planned"
    ]


def test_the_search_tells_the_terminal_its_trial_and_epoch(tmp_path, tiny_data):
    import unittest.mock

    from cifarlab.training import tune

    seen = []
    real = tune.EpochStatus.on_epoch_end

    def spy(self, epoch, logs=None):
        real(self, epoch, logs)
        seen.append(json.loads(self.path.read_text()))

    with unittest.mock.patch.object(tune.EpochStatus, "on_epoch_end", spy):
        tune.run_search(str(tiny_data), "smoke", tmp_path, seed=0, progress=False, max_trials=2)
    assert [(s["label"], s["epoch"]) for s in seen] == [("trial 1 of 2", 1), ("trial 2 of 2", 1)]
    assert not (tmp_path / "runs").exists()  # the status file goes with the search


@pytest.mark.parametrize(
    "name,min_images",
    [("TrainingModels", 9), ("ThirdModel", 3), ("TestModels", 4), ("VisualizeModel", 20)],
)
def test_executed_notebooks_show_their_figures_inline(executed, name, min_images):
    out, _ = executed
    nb = nbformat.read(out / "reports" / "notebooks" / f"{name}.ipynb", as_version=4)
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= min_images


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_executed_notebook_has_an_html_export_with_its_figures_embedded(executed, name):
    """A reader without Jupyter opens the .html: every figure the notebook shows is a
    decodable PNG inside the page, none a link to a file that may not travel with it."""
    import base64

    from lxml import html as lxml_html
    from PIL import Image

    out, log = executed
    folder = out / "reports" / "notebooks"
    nb = nbformat.read(folder / f"{name}.ipynb", as_version=4)
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if "image/png" in o.get("data", {})]  # fmt: skip
    page = lxml_html.parse(str(folder / f"{name}.html")).getroot()
    sources = [img.get("src", "") for img in page.iter("img")]
    assert all(src.startswith("data:image/") for src in sources), sources[:3]
    embedded = [
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        for src in sources
        if src.startswith("data:image/png;base64,")
    ]
    assert len(embedded) == len(shown) > 0
    assert all(im.size[0] >= 100 and im.size[1] >= 100 for im in embedded)
    # the terminal says how big each executed notebook and its page are
    assert re.search(rf"{name}\.ipynb [\d,]+ KB, {name}\.html [\d,]+ KB", log)


def _outputs_text(nb) -> str:
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            parts.append(o.get("text", ""))
            parts.append(o.get("data", {}).get("text/plain", ""))
            parts.append(o.get("data", {}).get("text/markdown", ""))
    return "".join(parts)


def test_executed_notebooks_teach_each_model_before_and_after_it_trains(executed):
    """Issue 13's course: images, augmentation, architecture with parameters and FLOPs,
    the schedule and what to expect before each training; a reading after the results."""
    out, _ = executed
    nbs = {n: nbformat.read(out / "reports" / "notebooks" / f"{n}.ipynb", as_version=4)
           for n in NOTEBOOKS}  # fmt: skip
    train_text = _outputs_text(nbs["TrainingModels"]) + _outputs_text(nbs["ThirdModel"])
    for model in ("baseline", "overfit", "tuned", "vgg16"):
        assert re.search(
            rf"{model}: [\d,]+ parameters .* MFLOP forward per 32x32 image", train_text
        )
        table = course.expected_table()
        smoke = table[(table["model"] == model) & (table["profile"] == "smoke")]
        said = "measured" if len(smoke) else "not measured yet"  # the real data has no row
        assert re.search(rf"{model} on \S+, profile smoke: {said}", train_text)
    assert "Total params" in train_text  # Keras' own summary of the baseline and tuned
    # VGG16's two phases, each named with what trains in it
    assert re.search(
        r"phase 1 of 2: the head alone.* [\d,]+ of the model's [\d,]+ parameters", train_text
    )
    assert re.search(r"phase 2 of 2: block\d onwards unfrozen.* [\d,]+ of the model's", train_text)
    # the prose of each training and a reading after it, written from the config and the run
    for model in ("baseline", "overfit", "tuned", "vgg16"):
        assert re.search(rf"\*\*{model}\*\* trains \d+ epochs.* at batch \d+", train_text), model
        assert re.search(rf"\*\*{model}\*\* trained \d+ epochs in", train_text), model
    assert "for training** and **" in train_text and "Chance is 10.0%" in train_text
    figs = out / "reports" / "figures"
    for name in ("samples", "augmentation_baseline", "lr_schedule_baseline",
                 "lr_schedule_overfit", "augmentation_tuned", "lr_schedule_tuned"):  # fmt: skip
        assert (figs / f"{name}.png").is_file(), name
    reading = _outputs_text(nbs["TestModels"])
    table = pd.read_csv(out / "reports" / "results.csv").sort_values("test_accuracy")
    first, second = table.iloc[-1], table.iloc[-2]
    a, b, n = first["test_accuracy"], second["test_accuracy"], int(first["test_images"])
    if course.is_tie(a, b, n):  # 500 test images: a few points apart is a tie
        assert f"**{first['model']}** and **{second['model']}** tie: {a:.2%} and {b:.2%}" in reading
    else:
        assert f"**{first['model']}** wins with {a:.2%}" in reading


def test_a_series_that_succeeds_prints_nothing_that_reads_like_an_error(series):
    """The kernels' standard error (TensorFlow's start-up lines, a CUDA "ERROR" among them
    on a machine without a GPU) goes to a log beside each executed notebook."""
    noisy = [ln for ln in series["stderr"].splitlines() if re.search(r"error|fail", ln, re.I)]
    assert not noisy, noisy[:5]
    logs = sorted(p.name for p in (series["out"] / "reports" / "notebooks").glob("*.log"))
    assert logs == sorted(f"{n}.log" for n in NOTEBOOKS)


def test_training_in_a_notebook_prints_one_line_per_epoch_not_a_redrawn_bar(executed):
    out, _ = executed
    nb = nbformat.read(out / "reports" / "notebooks" / "TrainingModels.ipynb", as_version=4)
    text = "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream"
    )
    assert "Epoch 1/" in text and " - val_accuracy: " in text
    assert "\x08" not in text and "\r" not in text  # a redrawn bar leaves these frame by frame


def test_executed_test_notebook_table_equals_results_csv(executed):
    out, _ = executed
    nb = nbformat.read(out / "reports" / "notebooks" / "TestModels.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "evaluate_all(" in c.source)
    html = next(o["data"]["text/html"] for o in cell.outputs if "text/html" in o.get("data", {}))
    shown = pd.read_html(io.StringIO(html), index_col=0)[0].T  # shown a column per model
    saved = pd.read_csv(out / "reports" / "results.csv")
    assert shown.index.tolist() == saved["model"].tolist()
    for col in (
        "test_accuracy",
        "top5_accuracy",
        "test_loss",
        "params",
        "epochs",
        "best_val_accuracy",
    ):
        np.testing.assert_allclose(
            shown[col].astype(float), saved[col].astype(float), rtol=1e-3, err_msg=col
        )


def test_a_series_on_a_folder_without_a_dataset_stops_before_any_notebook(tmp_path):
    # a folder that exists (so the command line lets it through) but holds no dataset:
    # the plan, made before the first notebook, reads the data and stops there
    (tmp_path / "not-a-dataset").mkdir()
    cmd = [sys.executable, "-m", "cifarlab", "notebooks", "--dataset",
           str(tmp_path / "not-a-dataset"), "--profile", "smoke", "--out", str(tmp_path), "--quiet"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2
    last = [line for line in r.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("cifarlab: error: ") and "train/<class>" in last
    assert "Traceback" not in r.stderr and "[1/4]" not in r.stdout


def test_a_failing_notebook_is_named_with_its_cell(tmp_path):
    from cifarlab.errors import CifarlabError
    from cifarlab.notebooks import run_notebooks

    (tmp_path / "not-a-dataset").mkdir()  # the first notebook's data cell fails
    with pytest.raises(CifarlabError) as err:
        run_notebooks(
            str(tmp_path / "not-a-dataset"), "smoke", tmp_path, names=("TrainingModels",),
            progress=False,
        )  # fmt: skip
    message = str(err.value)
    assert message.startswith("notebook TrainingModels.ipynb failed in cell")
    assert "train/<class>" in message and "\n" not in message
    json.loads((tmp_path / "reports" / "notebooks" / "TrainingModels.ipynb").read_text())
    page = (tmp_path / "reports" / "notebooks" / "TrainingModels.html").read_text()
    assert "DataError" in page  # the failed run's traceback, readable in a browser


def test_bench_times_the_same_training_in_a_process_and_in_a_notebook_kernel():
    from cifarlab.bench import kernels, throughput

    k = kernels.kernel_vs_process("baseline", "smoke", steps=2, epochs=1)
    assert k["process_s"] > 0 and k["kernel_s"] > 0
    assert k["ratio"] == pytest.approx(k["kernel_s"] / k["process_s"])
    result = {
        "command": "cifarlab bench",
        "date": "2026-11-22",
        "hardware": {"processor": "cpu", "cpu_count": 2, "gpu": False},
        "versions": {"python": "3.11", "keras": "3"},
        "profile": "smoke",
        "steps": 2,
        "matmul_gflops": 100.0,
        "rows": [],
        "pipeline": {},
        "kernel_vs_process": k,
    }
    assert f"ratio **{k['ratio']:.3f}**" in throughput.markdown(result)


def test_relative_data_and_cache_folders_reach_the_kernels_as_absolute_paths(tmp_path, monkeypatch):
    """`CIFARLAB_DATA_DIR=../shared/data make run`: the kernels start in notebooks/, where
    the relative path would name another folder."""
    from cifarlab import notebooks

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIFARLAB_DATA_DIR", "../shared/data")
    monkeypatch.setenv("CIFARLAB_CACHE_DIR", "cache")
    notebooks._absolute_paths_in_environment()
    import os

    assert os.environ["CIFARLAB_DATA_DIR"] == str(tmp_path.parent / "shared" / "data")
    assert os.environ["CIFARLAB_CACHE_DIR"] == str(tmp_path / "cache")


def test_the_notebooks_parameters_name_paths_relative_to_the_kernels_folder(tmp_path, monkeypatch):
    """The injected parameters cell shows no absolute path of this machine; the kernels,
    started in notebooks/, find the same files."""
    from cifarlab import notebooks

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.tar.gz").write_bytes(b"x")
    kernels = tmp_path / "repo" / "notebooks"
    kernels.mkdir(parents=True)
    seen = notebooks._seen_from(kernels, "data/d.tar.gz")
    assert not os.path.isabs(seen) and seen == os.path.join("..", "..", "data", "d.tar.gz")
    assert (kernels / seen).resolve() == (tmp_path / "data" / "d.tar.gz").resolve()
    assert notebooks._seen_from(kernels, tmp_path / "repo") == ".."


ABSOLUTE = re.compile(r"(?<![\w.~])/(?:tmp|home|work|root|usr|opt|var|content|Users)/")


def test_executed_notebooks_show_no_stderr_no_warning_and_no_absolute_path(executed):
    """Quiet notebooks: the libraries' start-up lines go to the log beside each notebook,
    not into red boxes; no warning; no path of the machine in a cell or an output."""
    out, _ = executed
    for name in NOTEBOOKS:
        nb = nbformat.read(out / "reports" / "notebooks" / f"{name}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            assert not ABSOLUTE.search(cell.source), (name, cell.source[:300])
            for o in cell.outputs:
                assert o.get("name") != "stderr", (name, o.get("text", "")[:300])
                text = o.get("text", "") + "".join(
                    str(v) for k, v in o.get("data", {}).items() if k.startswith("text/")
                )
                assert not re.search(r"warning", text, re.I), (name, text[:300])
                assert not ABSOLUTE.search(text), (name, ABSOLUTE.search(text), text[:300])


def test_a_section_for_other_data_is_left_out_where_it_shows_nothing(executed, tmp_path):
    """TestModels' superclass section on CIFAR-10 (no superclasses): left out of the
    executed notebook; a tagged section whose code showed something stays."""
    from cifarlab import notebooks

    out, _ = executed
    nb = nbformat.read(out / "reports" / "notebooks" / "TestModels.ipynb", as_version=4)
    assert not any("Superclasses" in c.source for c in nb.cells)
    assert any("Reading the results" in c.source for c in nb.cells)  # the rest is there
    tag = {"tags": [notebooks.ONLY_WITH_OUTPUT]}
    shown = nbformat.v4.new_code_cell("1", metadata=tag, outputs=[
        nbformat.v4.new_output("execute_result", {"text/plain": "1"}, execution_count=1)])  # fmt: skip
    cells = [nbformat.v4.new_markdown_cell("## A", metadata=tag), shown,
             nbformat.v4.new_markdown_cell("## B")]  # fmt: skip
    path = tmp_path / "n.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), str(path))
    assert not notebooks.drop_sections_without_output(path)  # its code showed something
    shown.outputs = []
    nbformat.write(nbformat.v4.new_notebook(cells=cells), str(path))
    assert notebooks.drop_sections_without_output(path)
    assert [c.source for c in nbformat.read(path, as_version=4).cells] == ["## B"]


def test_a_kernels_low_level_standard_error_goes_to_the_log_not_the_notebook(tmp_path):
    """C++ libraries (TensorFlow's start-up lines) write to file descriptor 2 directly;
    Python's own warnings still reach the notebook, where a reader should see them."""
    from cifarlab import notebooks

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import os, sys\nos.write(2, b'I0000 a C++ start-up line\\n')\nprint('ran')"
        ),
        nbformat.v4.new_code_cell("print('python stderr', file=sys.stderr)"),
    ]
    nb.metadata["kernelspec"] = {
        "name": notebooks.KERNEL,
        "display_name": "cifarlab",
        "language": "python",
    }
    src = tmp_path / "tiny.ipynb"
    nbformat.write(nb, src)
    target = tmp_path / "out" / "tiny.ipynb"
    target.parent.mkdir()
    notebooks.execute(src, target, {}, progress=False)
    done = nbformat.read(target, as_version=4)
    first = [o.get("text", "") for o in done.cells[0].outputs]
    assert first == ["ran\n"], first  # the C++ line is not in the notebook
    assert "C++ start-up line" in target.with_suffix(".log").read_text()
    second = [(o.get("name"), o.get("text")) for o in done.cells[1].outputs]
    assert second == [("stderr", "python stderr\n")]
