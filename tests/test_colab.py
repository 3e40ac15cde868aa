"""launch/colab.ipynb runs headless (nbclient) from this checkout on a tiny world,
without its install cell, and every cell succeeds with the outputs it promises."""

import json
import os

import nbformat
from nbclient import NotebookClient

from tests import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "launch", "colab.ipynb")
TINY = ("smoke,world.num_train=64,world.num_val=8,world.num_test=16,"
        "world.num_test_comp=8,world.workers=1,input.batch_size=16,total_steps=4,"
        "log_every_steps=2,checkpoint_every_steps=4,eval_every_steps=0")


def _with_parameters(nb, **values):
  """Puts a cell with ``values`` right after the cell tagged ``parameters``, as
  papermill does."""
  [at] = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
  nb.cells.insert(at + 1, nbformat.v4.new_code_cell(source))
  return nb


def _text(cell) -> str:
  return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_the_notebook_runs_headless_on_the_smoke_preset(tmp_path, monkeypatch):
  nb = _with_parameters(nbformat.read(NOTEBOOK, as_version=4), INSTALL=False,
                        PRESET=TINY, WORKDIR=str(tmp_path / "run"),
                        DATA_DIR=str(tmp_path / "data"))
  # The kernel inherits this environment: one CPU device, like a Colab CPU runtime.
  monkeypatch.setenv("XLA_FLAGS", xla_flags.with_devices(1))
  NotebookClient(nb, timeout=300, kernel_name="python3",
                 resources={"metadata": {"path": ROOT}}).execute()
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(not any(o.output_type == "error" for o in c.outputs) for c in code)
  out = "\n".join(_text(c) for c in code)
  assert "clip finished: step 4 of 4" in out
  assert "image embeddings (4, 32) text embeddings (4, 32) norms [1. 1. 1. 1.]" in out
  assert ("right on this item" in out) != ("wrong on this item" in out)
  images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
  assert len(images) == 2  # the world samples and the interaction map
  assert os.path.exists(tmp_path / "run" / "interactions.png")
  table = _text(code[-1]).splitlines()
  scores = {l.split()[0]: float(l.split()[1]) for l in table}
  assert 0.0 <= scores["world/attribute_swap"] <= 1.0
  assert scores["world/n_items"] > 0
  assert json.loads(open(tmp_path / "run" / "config.json").read())["total_steps"] == 4
