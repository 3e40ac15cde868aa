"""vlkg installs as a package (pyproject.toml) and imports from outside the repository.

The package is built from a copy of the files that pyproject.toml reads, into a
folder of its own (pip --target, no dependencies, no index): the environment the
tests run in is left as it was, and nothing is written into the repository.
"""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_installed_vlkg_imports_from_outside_the_repository(tmp_path):
  # The build uses this environment's setuptools (the build needs no index).
  setuptools = pytest.importorskip("setuptools")
  if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (70, 1):
    pytest.importorskip("wheel")  # bdist_wheel moved into setuptools in 70.1
  src = tmp_path / "src"
  src.mkdir()
  for name in ("pyproject.toml", "README.md", "LICENSE", "requirements.txt"):
    shutil.copy(os.path.join(ROOT, name), src / name)
  shutil.copytree(os.path.join(ROOT, "vlkg"), src / "vlkg",
                  ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  site = tmp_path / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                  "--no-build-isolation", "--no-index", "--disable-pip-version-check",
                  "--target", str(site), str(src)], check=True, capture_output=True,
                 timeout=300)
  assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == [
      "vlkg"]  # no top-level "configs": configs/ are files, named by path
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["PYTHONPATH"] = str(site)
  code = ("import vlkg, vlkg.api, vlkg.main, vlkg.tools.evaluate; "
          "from vlkg import graphs; "
          "print(vlkg.__file__); "
          "print(graphs.parse('a red circle above a blue square').triples())")
  out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  where, triples = out.stdout.splitlines()
  assert where == str(site / "vlkg" / "__init__.py")
  # The parser's lexicon files are package data: they came along.
  assert triples == ("[('circle', 'is', 'red'), ('square', 'is', 'blue'), "
                     "('circle', 'above', 'square')]")
  assert (site / "vlkg" / "data" / "benchmarks" / "aro_vg_relation_dropped.json").exists()
