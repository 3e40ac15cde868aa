"""The few lines a run ends with: its final metrics, its files, what to run next.

Read from the workdir alone (``config.json`` and ``metrics.jsonl``), so that a
finished run that is run again, or a run resumed after a kill, says the same as the
run that wrote them.
"""

from __future__ import annotations

import importlib.util
import json
import os

from vlkg import files, metrics as metrics_lib

# What a run writes, in the order the summary lists it, with what each one is.
OUTPUTS = (
    ("config.json", "the resolved config the run trained with"),
    (metrics_lib.METRICS_FILE, "one JSON line per log step and per eval"),
    ("checkpoints/", "orbax train state; the same command resumes from it"),
    ("params.npz", "the final params, for vlkg.api.load and the tools"),
    ("params_best.npz", "the params at the best select_metric"),
    ("tensorboard/", "TensorBoard events"),
)


def _run_config(workdir: str) -> dict:
  try:
    with files.open(os.path.join(workdir, "config.json")) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return {}


def _best(workdir: str) -> str:
  try:
    with files.open(os.path.join(workdir, "params_best.json")) as f:
      best = json.load(f)
    return f"the params at the best {best['metric']} (step {best['step']})"
  except (OSError, json.JSONDecodeError, KeyError):
    return dict(OUTPUTS)["params_best.npz"]


def next_commands(workdir: str) -> list[str]:
  """Evaluate, plot, export and TensorBoard, for this workdir."""
  tb = f"tensorboard --logdir {os.path.join(workdir, 'tensorboard')}"
  if importlib.util.find_spec("tensorboard") is None:
    tb += "   (install it: pip install -e '.[tensorboard]')"
  return [
      f"python -m vlkg.tools.evaluate --workdir {workdir} --benchmark world",
      f"python -m vlkg.tools.plot interactions --workdir {workdir}",
      f"python -m vlkg.tools.export --workdir {workdir} --format open_clip "
      f"--out {os.path.join(workdir, 'open_clip.safetensors')}",
      tb,
  ]


def run_summary(workdir: str, extra=()) -> str:
  """The end-of-run summary of ``workdir``.

  Args:
    workdir: A run directory.
    extra: The method's own headline patterns (its module's ``HEADLINE``).
  """
  config = _run_config(workdir)
  final = metrics_lib.read_final(workdir)
  step, total = final.get("step"), config.get("total_steps")
  method = config.get("method", "run")
  if step is not None and total is not None and step < total:
    head = f"{method} stopped at step {step} of {total} in {workdir}"
  else:
    head = f"{method} finished: step {step} of {total} in {workdir}"
  lines = [head]
  names = metrics_lib.headline(final, extra, config.get("select_metric", ""))
  if names:
    lines += ["final metrics:", metrics_lib.format_table(final, names)]
  lines.append(f"outputs in {workdir}:")
  width = max(len(name) for name, _ in OUTPUTS)
  for name, what in OUTPUTS:
    if files.exists(os.path.join(workdir, name.rstrip("/"))):
      what = _best(workdir) if name == "params_best.npz" else what
      lines.append(f"  {name:<{width}}  {what}")
  lines.append("next:")
  lines += [f"  {c}" for c in next_commands(workdir)]
  return "\n".join(lines)
