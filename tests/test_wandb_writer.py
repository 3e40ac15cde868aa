"""Weights & Biases through clu's writer interface, with a fake ``wandb`` module:
off by default, a warning without the package, the same numbers as TensorBoard,
one W&B run per workdir across restarts."""

import logging
import sys
import types

import numpy as np
import pytest

from configs import clip
from vlkg import metrics, wandb_writer


class FakeRun:

  def __init__(self, **kwargs):
    self.init, self.logged, self.finished = kwargs, [], False
    self.config = types.SimpleNamespace(updates=[])
    self.config.update = lambda d, allow_val_change: self.config.updates.append(d)

  def log(self, data, step):
    self.logged.append((step, data))

  def finish(self):
    self.finished = True


def fake_wandb():
  module = types.ModuleType("wandb")
  module.runs = []
  module.init = lambda **kw: module.runs.append(FakeRun(**kw)) or module.runs[-1]
  module.Image = lambda array: ("image", np.asarray(array).shape)
  return module


def test_off_by_default_and_without_the_package(monkeypatch, caplog):
  assert clip.get_config("smoke").wandb.project == ""
  assert clip.get_config("smoke,wandb.project=vlkg").wandb.project == "vlkg"
  assert wandb_writer.create("", "/runs/a", {}) is None
  monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
  with caplog.at_level(logging.WARNING, logger="absl"):
    assert wandb_writer.create("vlkg", "/runs/a", {}) is None
  assert "wandb is not installed" in caplog.text


def test_the_metric_writer_logs_the_same_numbers_to_wandb(tmp_path, monkeypatch):
  wandb = fake_wandb()
  monkeypatch.setitem(sys.modules, "wandb", wandb)
  workdir = str(tmp_path / "run")
  w = metrics.MetricWriter(workdir, wandb_project="vlkg", run_config={"seed": 0})
  w.write(2, {"loss": 1.5, "note": "text", "bad": float("inf")})
  w.write(4, {"world/attribute_swap": 0.75})
  w.writer.write_images(4, {"sample": np.zeros((8, 8, 3), np.uint8)})
  w.writer.write_hparams({"lr": 1e-3})
  w.close()
  [run] = wandb.runs
  assert run.init == {"project": "vlkg", "name": "run", "id": wandb_writer.run_id(workdir),
                      "resume": "allow", "config": {"seed": 0}, "dir": workdir}
  assert run.logged == [(2, {"loss": 1.5}), (4, {"world/attribute_swap": 0.75}),
                        (4, {"sample": ("image", (8, 8, 3))})]
  assert run.config.updates == [{"lr": 1e-3}] and run.finished
  # A restarted run (same workdir) continues the same W&B run; another does not.
  assert wandb_writer.run_id(workdir) == wandb_writer.run_id(workdir + "/")
  assert wandb_writer.run_id(workdir) != wandb_writer.run_id(str(tmp_path / "other"))
  assert wandb_writer.run_id("gs://b/runs/x").startswith("vlkg-")


@pytest.mark.parametrize("project", ["", "vlkg"])
def test_wandb_writes_nothing_unless_asked(tmp_path, monkeypatch, project):
  wandb = fake_wandb()
  monkeypatch.setitem(sys.modules, "wandb", wandb)
  metrics.MetricWriter(str(tmp_path), wandb_project=project).close()
  assert len(wandb.runs) == (1 if project else 0)
