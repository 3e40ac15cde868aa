"""Weights & Biases as one more clu metric writer, optional.

``config.wandb.project`` names the project ("" = off, the default); it is used only
where the ``wandb`` package is installed (``pip install wandb``; vlkg does not
require it). The W&B run gets the run's resolved config, and an id derived from the
workdir, so that a run resumed after a pre-emption goes on in the same W&B run
(``resume="allow"``). W&B drops points whose step is below one it already has: the
steps a resumed run repeats after its last checkpoint are kept only in
``metrics.jsonl``, which the trainer truncates to the restored step.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

from absl import logging
from clu.metric_writers import interface

from vlkg import files


def run_id(workdir: str) -> str:
  """The W&B run id of a workdir: the same for every start of the run."""
  return "vlkg-" + hashlib.sha256(files.abspath(workdir).encode()).hexdigest()[:16]


def create(project: str, workdir: str, config: Mapping[str, Any]):
  """A ``WandbWriter`` for ``project``, or None when it is "" or wandb is missing."""
  if not project:
    return None
  try:
    import wandb  # pylint: disable=import-outside-toplevel
  except ImportError:
    logging.warning("config.wandb.project=%r, but wandb is not installed (pip install "
                    "wandb): not logging to Weights & Biases", project)
    return None
  run = wandb.init(project=project, name=os.path.basename(files.abspath(workdir)),
                   id=run_id(workdir), resume="allow", config=dict(config),
                   dir=workdir if files.is_local(workdir) else None)
  return WandbWriter(run, wandb)


class WandbWriter(interface.MetricWriter):
  """clu's ``MetricWriter`` interface over a W&B run: scalars, texts, images and
  hyper-parameters; summaries, videos, audio and histograms are not logged."""

  def __init__(self, run, wandb_module):
    self._run, self._wandb = run, wandb_module

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    self._run.log({k: float(v) for k, v in scalars.items()}, step=int(step))

  def write_texts(self, step: int, texts: Mapping[str, str]):
    self._run.log(dict(texts), step=int(step))

  def write_images(self, step: int, images: Mapping[str, Any]):
    self._run.log({k: self._wandb.Image(v) for k, v in images.items()}, step=int(step))

  def write_hparams(self, hparams: Mapping[str, Any]):
    self._run.config.update(dict(hparams), allow_val_change=True)

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def flush(self):
    pass

  def close(self):
    self._run.finish()
