"""The protocol's stages, resume and stale configs, with a fake runner that writes
what ``vlkg.main`` and ``vlkg.results.evaluation`` would write; and the whole
results command on it (the real ``--quick`` run is the slow test at the end)."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from vlkg.results import evaluation, protocol, report
from vlkg.results import workdir as workdir_lib
from vlkg.results import command as results_tool
from tests import xla_flags
from tests.results.fake_runner import KG_METRICS, SCORES, FakeRunner

ROOT = protocol.ROOT


def test_stage_command_lines_are_the_documented_cli(tmp_path):
  p = protocol.Protocol(str(tmp_path), ["clip", "negclip"], [0, 1], python="python")
  base, *rest = p.stages()
  assert base.argv("python") == ["python", "-m", "vlkg.main", "--config",
                                 "configs/clip.py:base", "--workdir", str(tmp_path / "base")]
  assert [s.name for s in rest] == ["clip seed 0", "negclip seed 0", "clip seed 1",
                                    "negclip seed 1"]
  assert rest[3].argv("python") == [
      "python", "-m", "vlkg.main", "--config",
      "configs/structure_clip.py:finetune,structure_clip.loss=negclip,"
      "structure_clip.neg_weight=0.0",
      f"--config.model_init={tmp_path / 'base'}", "--config.seed=1",
      "--workdir", str(tmp_path / "negclip" / "seed1")]


def test_finetune_config_comes_from_the_base_with_the_seed(tmp_path):
  p = protocol.Protocol(str(tmp_path), ["negclip"], [2])
  config = p.check(p.finetune_stage("negclip", 2))
  assert config.model_init == str(tmp_path / "base") and config.seed == 2
  assert config.structure_clip.loss == "negclip" and config.structure_clip.neg_weight == 0.0
  assert config.eval_every_steps == 0 and "test" in config.evals.world.splits
  assert "test_comp" in config.evals.world.splits


def test_every_method_finetunes_alike():
  from configs import clip, knowledge_clip, loupe, mosaiclip, reavl, structure_clip
  configs = [m.get_config("finetune") for m in (clip, loupe, mosaiclip, structure_clip,
                                                knowledge_clip, reavl)]
  for key in ("total_steps", "input.batch_size", "optim.lr", "optim.warmup_steps",
              "optim.end_lr_factor", "model", "world"):
    values = set()
    for c in configs:
      node = c
      for part in key.split("."):
        node = node[part]
      values.add(json.dumps(node.to_dict() if hasattr(node, "to_dict") else node,
                            sort_keys=True))
    assert len(values) == 1, key
  assert configs[0].model_init.startswith("<required")


def test_a_finished_protocol_reruns_nothing(tmp_path):
  runner = FakeRunner()
  p = protocol.Protocol(str(tmp_path), ["clip", "structure_clip"], [0, 1],
                        runner=runner, log=lambda s: None)
  result = p.run()
  assert len(runner.trained()) == 5 and len(runner.evaluated()) == 5
  assert result["runs"]["structure_clip"][1]["world/attribute_swap"] == pytest.approx(0.81)
  assert result["runs"]["structure_clip"][1]["probe/shape"] == pytest.approx(0.81)
  assert result["base"]["world/attribute_swap"] == pytest.approx(0.55)
  assert [t["stage"] for t in result["times"]][:2] == ["base", "clip seed 0"]
  assert all(t["train"] is not None and not t["resumed"] for t in result["times"])

  again = FakeRunner()
  p.runner = again
  assert p.run()["runs"] == result["runs"]
  assert again.calls == []


def test_only_the_unfinished_stages_run_again(tmp_path):
  runner = FakeRunner()
  p = protocol.Protocol(str(tmp_path), ["clip"], [0, 1], runner=runner,
                        log=lambda s: None)
  p.run()
  seed1 = str(tmp_path / "clip" / "seed1")
  # A training killed midway: config.json and an unfinished attempt, no params.
  os.remove(os.path.join(seed1, "params.npz"))
  os.remove(os.path.join(seed1, "evaluation.json"))
  times = workdir_lib.read_times(seed1)
  times["train"].append({"started": 0, "seconds": None})
  with open(os.path.join(seed1, workdir_lib.TIMES_FILE), "w") as f:
    json.dump(times, f)
  # An evaluation killed before it wrote its file.
  seed0 = str(tmp_path / "clip" / "seed0")
  os.remove(os.path.join(seed0, "evaluation.json"))
  p.runner = again = FakeRunner()
  result = p.run()
  assert again.trained() == [seed1]
  assert sorted(again.evaluated()) == [seed0, seed1]
  times = {t["stage"]: t for t in result["times"]}
  assert times["clip seed 1"]["resumed"] and not times["clip seed 0"]["resumed"]
  assert len(workdir_lib.read_times(seed1)["train"]) == 3


def test_an_evaluation_only_run_trains_nothing_and_evaluates_its_source(tmp_path):
  """REAVL's distractor run evaluates the trained reavl params under its config,
  after them even when named first; retrained params are evaluated again."""
  runner = FakeRunner()
  p = protocol.Protocol(str(tmp_path), ["reavl_distractors"], [0], runner=runner,
                        log=lambda s: None)
  assert [s.name for s in p.stages()] == ["base", "reavl seed 0", "reavl_distractors seed 0"]
  stage = p.stages()[2]
  assert stage.trained_in == str(tmp_path / "reavl" / "seed0") and stage.parent == ""
  result = p.run()
  source, own = str(tmp_path / "reavl" / "seed0"), str(tmp_path / "reavl_distractors" / "seed0")
  assert runner.trained() == [str(tmp_path / "base"), source]
  call = [c for c in runner.calls
          if "--out" in c and c[c.index("--out") + 1].startswith(own)][0]
  assert call[call.index("--workdir") + 1] == source and "--all" in call
  with open(call[call.index("--config") + 1]) as f:
    assert json.load(f)["reavl"]["eval_distractors"] == 0.5
  # Its metrics are its evaluation's alone (the fake scores reavl_distractors 0.72).
  assert result["runs"]["reavl_distractors"][0]["world/kvqa"] == pytest.approx(0.72)
  assert result["runs"]["reavl"][0]["world/kvqa"] == pytest.approx(0.75)
  assert not os.path.exists(os.path.join(own, "config.json"))
  p.runner = again = FakeRunner()
  p.run()
  assert again.calls == []
  # New params of the source: evaluated again.
  os.utime(os.path.join(source, "params.npz"), ns=(1, 1))
  p.runner = third = FakeRunner()
  p.run()
  assert sorted(third.evaluated()) == [source, source]


def test_an_evaluation_only_run_may_not_change_training(tmp_path, monkeypatch):
  from vlkg.methods import reavl
  from vlkg.results.runs import Run
  runner = FakeRunner()
  monkeypatch.setattr(reavl, "RUNS", reavl.RUNS + (
      Run("reavl_bad", ("reavl.gate=False",), evaluates="reavl"),))
  p = protocol.Protocol(str(tmp_path), ["reavl_bad"], [0], runner=runner,
                        log=lambda s: None)
  with pytest.raises(protocol.StaleRunError, match=r"reavl_bad seed 0 evaluates the "
                     r"params of .*reavl/seed0, but its config changes what trains "
                     r"\(reavl.gate: True -> False\)"):
    p.run()
  monkeypatch.setattr(reavl, "RUNS", (Run("reavl_x", (), evaluates="nothing"),))
  from vlkg.results import runs
  with pytest.raises(ValueError, match="'reavl_x' evaluates 'nothing', neither reavl "
                     "nor a declared run"):
    runs.all_declared()


def test_evaluation_changes_allow_only_eval_keys():
  trained = {"seed": 0, "reavl": {"gate": True, "eval_distractors": 0.0},
             "evals": {"world": {}}}
  tested = {"seed": 0, "reavl": {"gate": True, "eval_distractors": 0.5},
            "evals": {"world": {}, "kvqa": {}}}
  assert workdir_lib.evaluation_changes(trained, tested) == []
  tested["reavl"]["gate"] = False
  assert workdir_lib.evaluation_changes(trained, tested) == ["reavl.gate: True -> False"]


def test_stage_seconds(tmp_path):
  times = {"train": [{"started": 0, "seconds": 10.0}, {"started": 1, "seconds": None},
                     {"started": 2, "seconds": 5.0}],
           "evaluate": [{"started": 0, "seconds": 3.0}, {"started": 1, "seconds": None},
                        {"started": 2, "seconds": 4.0}]}
  (tmp_path / workdir_lib.TIMES_FILE).write_text(json.dumps(times))
  assert workdir_lib.stage_seconds(str(tmp_path), "train") == (15.0, True)
  assert workdir_lib.stage_seconds(str(tmp_path), "evaluate") == (4.0, False)
  assert workdir_lib.stage_seconds(str(tmp_path / "none"), "train") == (None, False)


def test_new_params_are_evaluated_again(tmp_path):
  runner = FakeRunner()
  p = protocol.Protocol(str(tmp_path), ["clip"], [0], runner=runner, log=lambda s: None)
  p.run()
  np.savez(str(tmp_path / "clip" / "seed0" / "params.npz"), w=np.zeros(5))
  p.runner = again = FakeRunner()
  p.run()
  assert again.trained() == [] and again.evaluated() == [str(tmp_path / "clip" / "seed0")]


def test_a_changed_config_is_an_error_before_anything_trains(tmp_path):
  runner = FakeRunner()
  p = protocol.Protocol(str(tmp_path), ["clip"], [0], runner=runner, log=lambda s: None)
  p.run()
  path = tmp_path / "base" / "config.json"
  data = json.loads(path.read_text())
  steps = data["total_steps"]
  data["total_steps"] += 1
  path.write_text(json.dumps(data))
  p2 = protocol.Protocol(str(tmp_path), ["clip"], [0, 1], runner=FakeRunner(),
                         log=lambda s: None)
  with pytest.raises(protocol.StaleRunError, match=r"base was trained with another "
                     rf"config \(total_steps: {steps + 1} -> {steps}\).*new --out"):
    p2.run()
  assert p2.runner.calls == []


def test_an_evaluator_added_since_training_is_evaluated_not_retrained(tmp_path):
  runner = FakeRunner()
  p = protocol.Protocol(str(tmp_path), ["clip"], [0], runner=runner, log=lambda s: None)
  p.run()
  for run in ("base", "clip/seed0"):  # as if trained before the kg evaluator existed
    path = tmp_path / run / "config.json"
    data = json.loads(path.read_text())
    del data["evals"]["kg"]
    data["wandb"] = {}
    path.write_text(json.dumps(data))
  p.runner = again = FakeRunner()
  result = p.run()
  assert again.trained() == []
  assert again.evaluated() == [str(tmp_path / "base"), str(tmp_path / "clip" / "seed0")]
  assert result["base"]["kg/added"] == SCORES["base"]
  assert result["runs"]["clip"][0]["kg/added"] == SCORES["clip"]
  p.runner = third = FakeRunner()
  p.run()
  assert third.calls == []  # that evaluation is cached


def test_missing_evals_are_the_protocol_configs_evaluators_the_run_lacks(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"evals": {"world": {"type": "world"}}}))
  expected = {"evals": {"world": {"type": "world"}, "kg": {"type": "kg"}}}
  assert workdir_lib.missing_evals(str(tmp_path), expected) == {"kg": {"type": "kg"}}
  assert workdir_lib.missing_evals(str(tmp_path), {}) == {}
  assert workdir_lib.config_changes({"a": 1, "evals": {"x": 1}, "wandb": {"p": ""}},
                                    {"a": 1, "evals": {"y": 2}}) == []


def test_a_run_older_than_the_knowledge_suites_is_evaluated_on_them(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"evals": {}}))
  metrics = tmp_path / workdir_lib.METRICS_FILE
  metrics.write_text(json.dumps({"step": 5, "world/order": 0.5}) + "\n")
  assert evaluation.lacks_knowledge(str(tmp_path))
  assert evaluation.cache_key(str(tmp_path), {}) == [evaluation.KNOWLEDGE_KEY]
  metrics.write_text(json.dumps({"step": 5, "world/order": 0.5, "world/kvqa": 0.2})
                     + "\n")
  assert evaluation.cache_key(str(tmp_path), {}) == []
  metrics.write_text(json.dumps({"step": 5, "retrieval/val/image_to_text_R@1": 0.1})
                     + "\n")
  assert not evaluation.lacks_knowledge(str(tmp_path))  # not a world run


def test_a_retrained_base_makes_its_finetunes_stale(tmp_path):
  p = protocol.Protocol(str(tmp_path), ["clip"], [0], runner=FakeRunner(),
                        log=lambda s: None)
  p.run()
  stamp = json.loads((tmp_path / "clip" / "seed0" / workdir_lib.PARENT_FILE).read_text())
  assert stamp == evaluation.params_stamp(str(tmp_path / "base"))
  np.savez(str(tmp_path / "base" / "params.npz"), w=np.zeros(7))
  p.runner = FakeRunner()
  with pytest.raises(protocol.StaleRunError, match="other params than"):
    p.run()
  assert p.runner.calls == []  # found before anything runs


def test_a_finetune_with_another_tokenizer_is_an_error(tmp_path):
  class OtherTokenizer(FakeRunner):
    def train(self, argv):
      super().train(argv)
      workdir = argv[argv.index("--workdir") + 1]
      if "seed0" in workdir:
        path = os.path.join(workdir, "config.json")
        data = json.load(open(path))
        data["tokenizer"] = {"type": "bpe", "vocab_size": 300}
        json.dump(data, open(path, "w"))

  p = protocol.Protocol(str(tmp_path), ["clip"], [0], runner=OtherTokenizer(),
                        log=lambda s: None)
  with pytest.raises(protocol.StageError, match="token embeddings"):
    p.run()


def test_one_results_run_per_directory(tmp_path):
  import fcntl
  with open(tmp_path / protocol.LOCK_FILE, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    p = protocol.Protocol(str(tmp_path), ["clip"], [0], runner=FakeRunner(),
                          log=lambda s: None)
    with pytest.raises(protocol.StageError, match="another results run"):
      p.run()
    assert p.runner.calls == []
  p.run()  # free again
  assert len(p.runner.trained()) == 2


def test_config_changes_ignores_what_the_trainer_fills_in():
  written = {"a": 1, "model": {"text": {"vocab_size": 512}}, "tokenizer": {"t": 1}}
  assert workdir_lib.config_changes(written, {"a": 1, "model": {"text": {"vocab_size": 0}}}) == []
  assert workdir_lib.config_changes(written, {"a": 2, "model": {"text": {"vocab_size": 0}}}) == [
      "a: 1 -> 2"]
  assert workdir_lib.config_changes(written, {"a": 1, "model": {"text": {"vocab_size": 256}}}) == [
      "model.text.vocab_size: 512 -> 256"]


def test_final_metrics_merge_the_last_step(tmp_path):
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for r in ({"step": 0, "world/x": 0.1}, {"step": 4, "loss": 2.0},
              {"step": 4, "world/x": 0.5, "grounding/y": 0.3}):
      f.write(json.dumps(r) + "\n")
  assert workdir_lib.final_metrics(str(tmp_path)) == {"world/x": 0.5, "grounding/y": 0.3}
  assert not workdir_lib.finished(str(tmp_path), 4)  # no params.npz
  np.savez(tmp_path / "params.npz", w=np.zeros(1))
  assert workdir_lib.finished(str(tmp_path), 4) and not workdir_lib.finished(str(tmp_path), 8)


def test_a_failing_stage_names_its_log(tmp_path):
  log = str(tmp_path / "train.log")
  with pytest.raises(protocol.StageError, match="(?s)exited with 3.*train.log.*\nboom\n"):
    protocol.subprocess_runner(
        [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], log)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_a_stage_dies_with_the_results_process():
  """A stand-in results process starts a guarded stage and is SIGKILLed: the
  stage dies with it instead of training on beside a restarted results run."""
  stage = [sys.executable, "-c", "import time; time.sleep(60)"]
  parent = subprocess.Popen(
      [sys.executable, "-c", "import subprocess; from vlkg.results import protocol; "
       f"print(subprocess.Popen(protocol.guarded({stage!r})).pid, flush=True); "
       "import time; time.sleep(60)"],
      cwd=ROOT, stdout=subprocess.PIPE, text=True)
  child = int(parent.stdout.readline())
  time.sleep(0.5)  # the guard execs the stage
  assert _alive(child)
  parent.kill()
  parent.wait()
  deadline = time.time() + 10
  while time.time() < deadline and _alive(child):
    time.sleep(0.1)
  assert not _alive(child)


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split(")")[-1].split()[0] != "Z"
  except FileNotFoundError:
    return False


ABLATIONS = ["knowledge_clip_no_e2e", "knowledge_clip_no_e2r", "knowledge_clip_no_g2e",
             "knowledge_clip_no_kd"]


def test_a_declared_run_is_its_methods_finetune_with_its_overrides(tmp_path):
  assert protocol.run_spec("clip_kg") == protocol.RunSpec(
      "clip_kg", "knowledge_clip", ("knowledge_clip.mode=captions",))
  assert protocol.run_spec("knowledge_clip_no_kd") == protocol.RunSpec(
      "knowledge_clip_no_kd", "knowledge_clip", ("knowledge_clip.kd_weight=0.0",))
  assert protocol.run_spec("negclip") == protocol.BASELINES["negclip"]
  assert protocol.run_spec("loupe") == protocol.RunSpec("loupe", "loupe")
  p = protocol.Protocol(str(tmp_path), ["clip_kg"], [1], python="python")
  stage = p.finetune_stage("clip_kg", 1)
  assert stage.argv("python") == [
      "python", "-m", "vlkg.main", "--config",
      "configs/knowledge_clip.py:finetune,knowledge_clip.mode=captions",
      f"--config.model_init={tmp_path / 'base'}", "--config.seed=1",
      "--workdir", str(tmp_path / "clip_kg" / "seed1")]
  config = p.check(stage)
  assert config.knowledge_clip.mode == "captions" and config.seed == 1
  full = p.check(p.finetune_stage("knowledge_clip", 1))
  # The same run but for the mode: the same triplet draws, steps, towers.
  from vlkg.results import workdir
  assert workdir.config_changes(json.loads(full.to_json()), json.loads(config.to_json())) == [
      "knowledge_clip.mode: 'fusion' -> 'captions'"]
  for name in ABLATIONS:
    weight = name.rsplit("_", 1)[1]
    c = p.check(p.finetune_stage(name, 1))
    assert c.knowledge_clip[f"{weight}_weight"] == 0.0 and c.knowledge_clip.mode == "fusion"


def test_ablations_on_the_fake_runner(tmp_path):
  """--ablations: the method, its declared runs and the clip baseline, one table."""
  runner = FakeRunner()
  summary = results_tool.run(["knowledge_clip"], 2, str(tmp_path / "out"), False, "",
                             runner=runner, log=lambda s: None, ablations=True)
  trained = {os.path.basename(os.path.dirname(w)) for w in runner.trained()[1:]}
  assert trained == {"clip", "knowledge_clip", "clip_kg", *ABLATIONS}
  assert len(runner.trained()) == 1 + 7 * 2
  kg = {c["metric"]: c for c in summary["claims"] if c["baseline"] == "clip_kg"}
  assert set(kg) == set(KG_METRICS)
  # knowledge_clip 0.72 / 0.73 against clip_kg 0.65 / 0.66: +7 points each seed.
  assert kg["kg/tail_R@1"]["delta"] == pytest.approx(0.07) and kg["kg/tail_R@1"]["met"]
  text = (tmp_path / "out" / "results.md").read_text()
  assert "--methods knowledge_clip --seeds 2 --ablations" in text
  table = text.split("#### knowledge_clip\n\n")[1].split("\n\n")[0].splitlines()
  assert table[0] == ("| run | what | `world/knowledge` | `world_comp/knowledge` | "
                      "`kg/tail_R@1` | `kg/relation_acc` | "
                      "`retrieval/test/image_to_text_R@1` |")
  rows = {r.split("|")[1].strip(): r for r in table[2:]}
  assert list(rows) == ["knowledge_clip", "clip_kg", *ABLATIONS]
  # Two seeds: 0.70 and 0.71, mean 0.705, s.e. 0.005.
  assert rows["knowledge_clip_no_e2e"] == ("| knowledge_clip_no_e2e | without E2E | "
                                           + " | ".join(["0.705 ± 0.005"] * 5) + " |")


def test_results_command_on_the_fake_runner(tmp_path):
  """The whole command: every default run, the claims judged, the files written."""
  docs = tmp_path / "docs"
  docs.mkdir()
  (docs / "results.md").write_text("# Results\n\nhand-written\n")
  runner = FakeRunner()
  from vlkg.results import claims
  methods = ["clip", "negclip"] + claims.methods_with_claims()
  summary = results_tool.run(methods, 2, str(tmp_path / "out"), False, str(docs),
                             runner=runner, log=lambda s: None)
  # The 7 defaults, clip_kg (the baseline of Knowledge-CLIP's KG claims) and the
  # six runs REAVL's claims read, of which two evaluate trained params again.
  assert len(runner.trained()) == 1 + 12 * 2
  evaluated = runner.evaluated()
  assert evaluated.count(str(tmp_path / "out" / "reavl" / "seed1")) == 2
  assert str(tmp_path / "out" / "reavl_distractors" / "seed1") not in evaluated
  assert str(tmp_path / "out" / "clip_kg" / "seed1") in runner.trained()
  assert str(tmp_path / "out" / "clip_10pct" / "seed1") in runner.trained()
  assert set(summary["base"]) == set(report.BASE_METRICS)
  by_name = {(c["method"], c["name"]): c for c in summary["claims"]}
  assert len(by_name) == 18
  # REAVL: +0.13 over k = 0; the gated drop -0.03 >= 0.5 x the ungated -0.08;
  # +0.18 over CLIP at 10% >= +0.15 at 100%; recall 0.755 < 0.9.
  assert by_name[("reavl", "knowledge VQA over no retrieval")]["delta"] == pytest.approx(0.13)
  gate = by_name[("reavl", "gate against distractors")]
  assert gate["met"] is True and gate["reference_delta"] == pytest.approx(-0.08)
  efficiency = by_name[("reavl", "sample efficiency")]
  assert efficiency["delta"] == pytest.approx(0.18) and efficiency["met"] is True
  recall = by_name[("reavl", "retriever recall")]
  assert recall["value"] == pytest.approx(0.755) and recall["met"] is False
  knowledge = by_name[("knowledge_clip", "knowledge")]
  assert knowledge["delta"] == pytest.approx(0.12) and knowledge["met"] is True
  relations = by_name[("knowledge_clip", "KG relations over CLIP + KG")]
  assert relations["baseline"] == "clip_kg" and relations["delta"] == pytest.approx(0.07)
  binding = by_name[("structure_clip", "attribute binding")]
  # structure_clip 0.80/0.81 vs clip 0.60/0.61; blind Δ 0
  assert binding["delta"] == pytest.approx(0.20) and binding["met"] is True
  assert binding["value"] == pytest.approx(0.805)
  rel = by_name[("mosaiclip", "relations at least Structure-CLIP's")]
  assert rel["baseline"] == "structure_clip" and rel["delta"] == pytest.approx(0.02)
  grounding = by_name[("loupe", "grounding")]
  assert grounding["met"] is False  # 0.615 / 0.605
  for c in summary["claims"]:
    assert {"name", "method", "metric", "baseline", "value", "delta", "target",
            "met"} <= set(c)
  text = (docs / "results.md").read_text()
  assert text.startswith("# Results\n\nhand-written\n") and report.BEGIN in text
  assert "| attribute binding | structure_clip |" in text
  # The ablation table: Knowledge-CLIP and the one declared run that ran.
  table = text.split("#### knowledge_clip\n\n")[1].split("\n\n")[0].splitlines()
  assert [r.split("|")[1].strip() for r in table[2:]] == ["knowledge_clip", "clip_kg"]
  assert (docs / "results.png").exists() and (tmp_path / "out" / "results.png").exists()
  saved = json.loads((tmp_path / "out" / "results.json").read_text())
  assert saved["claims"] == json.loads(json.dumps(summary["claims"]))



@pytest.mark.slow
def test_quick_results_end_to_end(tmp_path):
  """``--quick`` really trains: base, the baselines and every method, then judges.
  Then a second call reuses every stage."""
  env = dict(os.environ, VLKG_DATA_DIR=str(tmp_path / "data"),
             XLA_FLAGS=xla_flags.with_devices(1))
  cmd = [sys.executable, "-m", "vlkg.tools.results", "--quick",
         "--out", str(tmp_path / "out")]
  out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True,
                       text=True, timeout=1800).stdout
  summary = json.loads(out.strip().splitlines()[-1])
  assert set(summary["base"]) == set(report.BASE_METRICS)
  assert all(isinstance(v, float) and 0 <= v <= 1 for v in summary["base"].values())
  assert len(summary["claims"]) == 18
  for c in summary["claims"]:
    assert {"name", "method", "metric", "baseline", "value", "delta", "target",
            "met"} <= set(c)
    assert isinstance(c["value"], float)
    # A level claim (the retriever's recall) has no baseline, so no delta.
    assert isinstance(c["delta"], float) or (c["rule"] == "at_least"
                                             and c["delta"] is None)
    assert c["met"] in (True, False)
  assert summary["seeds"] == [0]
  # A fine-tune evaluates only at its end (eval_every_steps=0: no step-0 eval).
  records = [json.loads(l) for l in open(tmp_path / "out" / "clip" / "seed0" / "metrics.jsonl")]
  assert [r["step"] for r in records if "world/attribute_swap" in r] == [4]
  again = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True,
                         text=True, timeout=600).stdout
  assert "training in" not in again and json.loads(again.strip().splitlines()[-1])[
      "claims"] == summary["claims"]
