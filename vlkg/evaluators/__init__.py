"""Evaluators: one module per ``type``, and `run`, which runs a config's evaluators.

``config.evals`` maps a name to ``{"type": <module of vlkg.evaluators>, **kwargs}``;
each module has ``evaluate(encoder, dataset_dir, **kwargs) -> {metric: value}``
and talks to the model only through `vlkg.evaluators.encoder.Encoder`. `run` is the
one way a run's evaluators are run: by the trainer after every ``eval_every``, by
``python -m vlkg.main --mode eval`` and by tools.

Which evaluators apply depends on the data, which a config may change after its
file ran (``--config.input.data=coco``): `for_data` is the one function that says
what runs on which data. Configs state their evals for the built-in world.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import time


# The metric a real corpus's run selects on, in place of a world or grounding one.
RETRIEVAL_SELECT_METRIC = "retrieval/val/image_to_text_R@1"


def names() -> list[str]:
  """The evaluator types: the modules of this package that define ``evaluate``."""
  out = []
  for info in pkgutil.iter_modules(__path__):
    module = importlib.import_module(f"{__name__}.{info.name}")
    if callable(getattr(module, "evaluate", None)):
      out.append(info.name)
  return sorted(out)


def load(type_: str):
  """The evaluator module ``vlkg.evaluators.<type_>``.

  Raises:
    ValueError: If there is no such module, or it has no ``evaluate``; the message
      names ``type_`` and lists the evaluator types that exist.
  """
  try:
    module = importlib.import_module(f"{__name__}.{type_}")
  except ModuleNotFoundError as e:
    if e.name != f"{__name__}.{type_}":
      raise
    module = None
  if module is None or not callable(getattr(module, "evaluate", None)):
    raise ValueError(f"unknown evaluator type {type_!r} (no vlkg/evaluators/{type_}.py "
                     f"with an evaluate function); the types are {names()}")
  return module


def for_data(config) -> tuple[dict[str, dict], str]:
  """The evaluators a run of ``config`` runs on its data, and its select_metric.

  On the world (``config.input.data == "world"``) that is ``config.evals`` and
  ``config.select_metric`` as written. A real corpus has no world suites, so there
  the ``world`` evaluators give way to one ``retrieval`` evaluator on the corpus's
  held-out split (``val``; metrics ``retrieval/val/...``), and a select_metric on
  world or grounding metrics becomes `RETRIEVAL_SELECT_METRIC`. Every other
  evaluator runs as written.

  Pure: ``config`` is not changed. ``vlkg.train.resolve_config`` stores the result
  in the run's config, so a run's ``config.json`` says what it evaluated.

  Returns:
    (name -> evaluator spec as a dict, the select_metric).
  """
  evals = {name: spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
           for name, spec in config.evals.items()}
  select = config.select_metric
  from vlkg.data import prepare
  if prepare.is_world(config.input.data):
    return evals, select
  kept = {n: s for n, s in evals.items() if s.get("type") != "world"}
  if len(kept) < len(evals):
    kept.setdefault("retrieval", {"type": "retrieval", "split": "val"})
  if select.startswith(("world", "grounding/")):
    select = RETRIEVAL_SELECT_METRIC
  return kept, select


def run(config, encoder, dataset_dir: str) -> dict[str, float]:
  """Runs the evaluators of ``config`` for its data (`for_data`) on ``encoder``.

  Args:
    config: A run config.
    encoder: The model (`vlkg.evaluators.encoder.Encoder`).
    dataset_dir: The prepared dataset of ``config``.

  Returns:
    Every evaluator's metrics in one dict.
  """
  evals, _ = for_data(config)
  out = {}
  for name, spec in evals.items():
    spec = dict(spec)
    module = load(spec.pop("type"))
    start = time.perf_counter()
    out.update(module.evaluate(encoder, dataset_dir, **spec))
    logging.info("eval %s: %.1fs", name, time.perf_counter() - start)
  return out
