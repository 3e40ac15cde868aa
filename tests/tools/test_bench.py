"""The benchmark scripts' plumbing (never their timings): vlkg.tools.timing and
vlkg.tools.bench_graphs."""

from __future__ import annotations

import pytest

from configs import clip
from vlkg.graphs import decompose
from vlkg.tools import bench_graphs, bench_run, bench_step, timing


def test_run_seconds_counts_warmup_and_repeats():
  calls = []
  seconds = timing.run_seconds(lambda: calls.append(1), repeats=3, warmup=2)
  assert len(calls) == 5 and len(seconds) == 3
  assert all(s >= 0 for s in seconds)
  calls.clear()
  timing.median_seconds(lambda: calls.append(1), repeats=3)
  assert len(calls) == 4  # one warm-up by default


def test_interleaved_seconds_alternates_the_functions():
  calls = []
  times = timing.interleaved_seconds({"a": lambda: calls.append("a"),
                                      "b": lambda: calls.append("b")},
                                     repeats=3, warmup=1)
  assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds
  assert set(times) == {"a", "b"} and all(len(t) == 3 for t in times.values())
  assert all(s >= 0 for t in times.values() for s in t)


def test_clip_config_keeps_the_towers_and_drops_the_method():
  from configs import mosaiclip
  config = mosaiclip.get_config("smoke")
  clip_config = bench_step.clip_config(config)
  assert clip_config.method == "clip" and "mosaiclip" not in clip_config
  assert clip_config.model.to_dict() == config.model.to_dict()
  assert clip_config.input.to_dict() == config.input.to_dict()
  assert clip_config.optim.to_dict() == config.optim.to_dict()


def test_parse_reports_its_counts():
  out = bench_graphs.parse(n=30, repeats=2)
  assert out["n"] == 30 and out["repeats"] == 2
  assert out["captions_per_sec"] == pytest.approx(30 / out["median_seconds"])


def test_decompose_cost_on_world_captions(capsys):
  from vlkg.data import world as world_lib
  world = world_lib.settings(clip.get_config())
  graphs, reject = bench_graphs.world_caption_graphs(40, world)
  assert len(graphs) == 40 and all(g.objects for g in graphs)
  assert reject is not None  # the train split rejects held-out pairs
  assert bench_graphs.world_caption_graphs(5, world, split="test")[1] is None
  out = bench_graphs.decompose_cost(world, n=40, repeats=1)
  assert out["captions"] == 40 and len(out["seconds"]) == 1
  assert set(out["category_share"]) == set(decompose.CATEGORIES)
  assert sum(out["category_share"].values()) == pytest.approx(1.0, abs=0.01)
  assert out["mean_positives"] >= 1.0
  assert "per 1,000 world captions" in capsys.readouterr().out


def test_retrieval_bench_checks_every_path_against_top_k():
  from vlkg.tools import bench_retrieval
  out = bench_retrieval.run(repeats=1, entities=8 * 500, dim=16, k=4, block=100)
  assert {"top_k_ms", "blocked_ms", "approx_ms", "sharded_ms"} <= set(out)
  assert out["top_k_exact"] and out["blocked_exact"] and out["sharded_exact"]
  assert out["best_ms"] == min(out[f"{n}_ms"] for n in ("top_k", "blocked", "approx",
                                                        "sharded"))


def test_run_bench_counts_evals_and_projects_their_share():
  # The default run: 900 steps, evals at 0, 450 and 900.
  assert bench_run.eval_count(900, 450) == 3
  assert bench_run.eval_count(1000, 450) == 4  # 0, 450, 900 and the end
  assert bench_run.eval_count(600, 0) == 1  # only at the end
  # 900 steps at 1.5 steps/s is 600 s; evals 30 s then 2 x 10 s: 50 / 650.
  assert bench_run.eval_share(900, 450, 1.5, 30.0, 10.0) == pytest.approx(50 / 650)


def test_step_flops_count_every_device_of_the_mesh(tmp_path):
  """XLA's cost analysis counts one device's share of an SPMD program; the bench's
  FLOPs per step are the whole step's, on 1 device or on 8."""
  import jax
  from vlkg import train
  from vlkg.data import prepare
  from tests import trainer_world
  config = trainer_world.config(str(tmp_path))
  config = train.resolve_config(config, prepare.ensure_prepared(config))
  batch = bench_step.synthetic_batch(config, config.model.text.vocab_size)
  one = bench_step._Stepper(config, batch, devices=jax.devices()[:1]).flops
  eight = bench_step._Stepper(config, batch, devices=jax.devices()[:8]).flops
  # Not 1/8 of it; a little more, as each device also updates its replica of the
  # params (5% more at this tiny size).
  assert one > 0 and eight == pytest.approx(one, rel=0.1)
