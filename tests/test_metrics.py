"""vlkg.metrics and vlkg.summary: the log line, the ETA with evals, eval tables,
the final metrics of a run and its end-of-run summary."""

import json
import logging
import os

import pytest

from vlkg import metrics, summary


def test_format_value_and_duration():
  assert metrics.format_value(3.4475402) == "3.448"
  assert metrics.format_value(0.53191489) == "0.5319"
  assert metrics.format_value(4.74e-4) == "4.74e-04"
  assert metrics.format_value(0.0) == "0"
  assert metrics.format_value(450) == "450"
  assert metrics.format_value(float("nan")) == "nan"
  assert [metrics.format_duration(s) for s in (0.4, 42, 245, 7380)] == [
      "0s", "42s", "4m05s", "2h03m"]


@pytest.mark.parametrize("step, total, every, left", [
    (25, 900, 450, 2),    # 450 and 900 to come
    (450, 900, 450, 2),   # logged before its own eval
    (475, 900, 450, 1),
    (900, 900, 450, 1),   # the final eval
    (5, 20, 10, 2),
    (15, 20, 10, 1),
    (5, 22, 10, 3),       # 10, 20 and the end (22)
    (21, 22, 10, 1),
    (5, 20, 0, 1),        # 0: only at the end
    (5, 20, None, 0),     # no evals
])
def test_evals_left(step, total, every, left):
  assert metrics.evals_left(step, total, every) == left


def test_eta_counts_the_evals_to_come_at_the_latest_eval_time():
  p = metrics.Progress(900, 128, 0, eval_every=450)
  # Before any eval has run, the evals cannot be counted, and the ETA says so.
  assert p.eta(25, steps_per_sec=1.0) == (875.0, False)
  p.eval_seconds = 30.0
  assert p.eta(25, 1.0) == (875.0 + 2 * 30.0, True)
  assert p.eta(475, 1.0) == (425.0 + 30.0, True)
  assert metrics.Progress(900, 128, 0).eta(25, 1.0) == (875.0, True)  # no evals


def test_a_timed_eval_is_left_out_of_the_throughput(monkeypatch):
  clock = iter([0.0, 10.0, 14.0, 20.0, 30.0])
  monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
  p = metrics.Progress(20, 32, 0, eval_every=10)  # t=0
  with p.timed("eval"):  # t=10 .. 14
    pass
  assert p.eval_seconds == 4.0
  rates = p.tick(5, {"loss": 1.0})  # t=20: 5 steps in 20 - 4 s of training
  assert rates == {"steps_per_sec": 5 / 16, "examples_per_sec": 32 * 5 / 16}
  rates = p.tick(10, {"loss": 1.0})  # t=30: no eval since, 5 steps in 10 s
  assert rates["steps_per_sec"] == 0.5


def test_log_line_shows_loss_and_training_metrics(caplog):
  p = metrics.Progress(20, 32, 0, eval_every=10, show=metrics.TRAIN_KEYS + ("ranking",))
  p.eval_seconds = 2.0
  with caplog.at_level(logging.INFO, logger="absl"):
    p.tick(5, {"loss": 3.5071, "i2t_acc": 0.25, "grad_norm": 4.77, "lr": 4.74e-4,
               "ranking": 0.1, "neg_logit_mean": -2.0})
  line = caplog.records[-1].getMessage()
  assert line.startswith("step 5/20 (25%)  loss 3.507  i2t_acc 0.25  grad_norm 4.77  "
                         "lr 4.74e-04  ranking 0.1  |  ")
  assert "neg_logit_mean" not in line
  assert "steps/s" in line and "examples/s" in line and "ETA " in line
  assert not line.endswith("+ evals")


RESULTS = {
    "retrieval/test/image_to_text_R@1": 0.163, "retrieval/test/image_to_text_R@5": 0.4,
    "retrieval/test/text_to_image_R@1": 0.092, "world/attribute_swap": 0.547,
    "world/order": 0.144, "world_comp/attribute_swap": 0.474,
    "world/relation_swap": 0.525, "world_val/attribute_swap": 0.51,
    "grounding/pointing_acc": 0.174, "grounding/iou50_acc": 0.05,
    "grounding/n_items": 2440.0, "world/n_items": 1000.0, "selected_step": 450,
}


def test_headline_picks_the_main_figures_in_order():
  assert metrics.headline(RESULTS) == [
      "retrieval/test/image_to_text_R@1", "retrieval/test/text_to_image_R@1",
      "world/attribute_swap", "world_comp/attribute_swap", "world_val/attribute_swap",
      "world/relation_swap", "grounding/pointing_acc", "grounding/iou50_acc"]
  # A method's own patterns, then the select metric and the step it selected.
  names = metrics.headline(RESULTS, extra=("world/order",),
                           select_metric="world_val/attribute_swap")
  assert names[-2:] == ["world/order", "selected_step"]
  assert metrics.headline({"aro_relation/macro_accuracy": 0.6, "winoground/group": 0.1,
                           "sugarcrepe/add_att": 0.7}) == [
      "aro_relation/macro_accuracy", "winoground/group"]


def test_eval_table(caplog):
  with caplog.at_level(logging.INFO, logger="absl"):
    metrics.log_eval(450, {"world/attribute_swap": 0.547, "grounding/pointing_acc": 0.1744,
                           "world/n_items": 1000.0}, 31.62)
  assert caplog.records[-1].getMessage() == (
      "eval at step 450 (31.6s):\n"
      "  world/attribute_swap    0.547\n"
      "  grounding/pointing_acc  0.1744")


def _fake_run(workdir, total_steps=20, last_step=20, best=False):
  os.makedirs(os.path.join(workdir, "checkpoints"))
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"method": "clip", "total_steps": total_steps, "select_metric": ""}, f)
  lines = [{"step": 0, "world/attribute_swap": 0.5},
           {"step": 10, "loss": 3.6, "examples_per_sec": 100.0},
           {"step": 10, "world/attribute_swap": 0.52, "world/relation_swap": 0.49},
           {"step": last_step, "loss": 3.4, "examples_per_sec": 120.0}]
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.write("".join(json.dumps(l) + "\n" for l in lines) + '{"step": 2')  # a cut line
  open(os.path.join(workdir, "params.npz"), "wb").close()
  if best:
    open(os.path.join(workdir, "params_best.npz"), "wb").close()
    with open(os.path.join(workdir, "params_best.json"), "w") as f:
      json.dump({"metric": "world_val/attribute_swap", "value": 0.6, "step": 10}, f)


def test_read_final_is_the_latest_value_of_each_metric(tmp_path):
  _fake_run(str(tmp_path))
  assert metrics.read_final(str(tmp_path)) == {
      "step": 20, "loss": 3.4, "examples_per_sec": 120.0,
      "world/attribute_swap": 0.52, "world/relation_swap": 0.49}
  assert metrics.read_final(str(tmp_path / "nothing")) == {}


def test_run_summary_lists_metrics_files_and_next_commands(tmp_path):
  workdir = str(tmp_path)
  _fake_run(workdir, best=True)
  text = summary.run_summary(workdir)
  lines = text.splitlines()
  assert lines[0] == f"clip finished: step 20 of 20 in {workdir}"
  assert lines[1:4] == ["final metrics:", "  world/attribute_swap  0.52",
                        "  world/relation_swap   0.49"]
  assert f"outputs in {workdir}:" in lines
  for name in ("config.json", "metrics.jsonl", "checkpoints/", "params.npz"):
    assert any(l.startswith(f"  {name} ") for l in lines), name
  assert any("params_best.npz" in l and "world_val/attribute_swap (step 10)" in l
             for l in lines)
  assert not any("tensorboard/ " in l for l in lines)  # not written: not listed
  nxt = lines[lines.index("next:") + 1:]
  assert nxt[0] == f"  python -m vlkg.tools.evaluate --workdir {workdir} --benchmark world"
  assert any("vlkg.tools.plot" in l for l in nxt) and any("vlkg.tools.export" in l for l in nxt)
  assert any(l.startswith(f"  tensorboard --logdir {workdir}/tensorboard") for l in nxt)


def test_run_summary_of_a_stopped_run(tmp_path):
  _fake_run(str(tmp_path), total_steps=900, last_step=300)
  assert summary.run_summary(str(tmp_path)).splitlines()[0] == (
      f"clip stopped at step 300 of 900 in {tmp_path}")


def _scalars(logdir) -> dict:
  """{(tag, step): value} of every scalar event under ``logdir``."""
  import tensorflow as tf
  out = {}
  for name in os.listdir(logdir):
    for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
      for v in event.summary.value:
        out[(v.tag, event.step)] = float(tf.make_ndarray(v.tensor))
  return out


def test_writer_sends_the_finite_numbers_to_tensorboard_through_clu(tmp_path):
  w = metrics.MetricWriter(str(tmp_path))
  p = metrics.Progress(20, 32, 0, writer=w.writer)
  w.write(2, {"loss": 1.5, "lr": 1e-3, "note": "text", "bad": float("nan"), "ok": True})
  w.write(4, {"world/attribute_swap": 0.75, "selected_step": None})
  w.write(4, {**p.tick(4, {"loss": 1.0}), "loss": 1.0})
  w.close()
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert lines[0]["note"] == "text" and lines[1]["selected_step"] is None
  events = _scalars(tmp_path / "tensorboard")
  assert events[("loss", 2)] == 1.5 and events[("lr", 2)] == pytest.approx(1e-3)
  assert events[("world/attribute_swap", 4)] == 0.75
  assert events[("steps_per_sec", 4)] > 0 and events[("uptime", 4)] >= 0  # clu's own
  assert ("examples_per_sec", 4) in events and ("loss", 4) in events
  assert not any(tag in ("note", "bad", "ok", "selected_step") for tag, _ in events)


def test_writer_on_another_process_writes_nothing(tmp_path):
  w = metrics.MetricWriter(str(tmp_path), enabled=False)
  w.write(1, {"loss": 1.0})
  w.close()
  assert w.writer is None and os.listdir(tmp_path) == []
