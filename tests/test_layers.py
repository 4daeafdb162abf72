"""The package layers: no module imports a later stage (import-linter's contract)."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_imports_a_later_stage(monkeypatch):
    """Skipped only off CI: with ``CI=true`` a missing import-linter is a failure."""
    try:
        from importlinter import cli
    except ImportError:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail("import-linter is not installed (pip install -e '.[dev]'); CI must run it")
        pytest.skip("import-linter is not installed")
    monkeypatch.chdir(ROOT)  # the contract lives in pyproject.toml
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_the_contract_lists_every_package():
    """A new subpackage must take its place in the layers (else it is unconstrained)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = config["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {name.strip("() ") for layer in layers for name in layer.split("|")}
    source = ROOT / "src" / "geocells"
    packages = {
        p.stem for p in source.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()
    }
    assert packages - {"__init__", "__main__"} <= named


def test_missing_import_linter_fails_on_ci(monkeypatch):
    """With CI=true the layer check cannot quietly skip because import-linter is absent."""
    import sys

    monkeypatch.setitem(sys.modules, "importlinter", None)  # import raises ImportError
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="import-linter is not installed"):
        test_no_module_imports_a_later_stage(monkeypatch)
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        test_no_module_imports_a_later_stage(monkeypatch)


@pytest.mark.parametrize(
    ("importer", "imported"),
    [("train/step.py", "geocells.db"), ("db/build.py", "geocells.train"),
     ("models/geomodel.py", "geocells.synth"), ("synth/world.py", "geocells.models"),
     ("scoring/kappa.py", "torch"), ("geo/cells.py", "torch")],
)  # fmt: skip
def test_independent_packages_cannot_import_each_other(tmp_path, importer, imported):
    """``train | db`` and ``models | synth`` share a layer: an import either way is a broken
    contract; ``geo`` and ``scoring`` are numpy only: importing torch there is one too
    (checked on a copy of the sources with one such import added)."""
    import shutil
    import subprocess
    import sys

    pytest.importorskip("importlinter")
    shutil.copytree(ROOT / "src" / "geocells", tmp_path / "src" / "geocells")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    module = tmp_path / "src" / "geocells" / importer
    module.write_text(module.read_text() + f"\nimport {imported}  # noqa\n")
    check = "import sys; from importlinter import cli; sys.exit(cli.lint_imports(no_cache=True))"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0, done.stdout
    assert f"geocells.{importer.removesuffix('.py').replace('/', '.')}" in done.stdout
