"""``--reevaluate``: an evaluator changed since the runs trained is run again on
their params, its figures replace the trainer's, and later results runs keep them."""

import json

from vlkg.results import evaluation, protocol
from vlkg.results import command as results_tool
from tests.results.fake_runner import KG_METRICS, RESCORED, SCORES, FakeRunner


def test_reevaluated_metrics_replace_the_runs_and_stay(tmp_path):
  quiet = dict(runner=FakeRunner(), log=lambda s: None)
  protocol.Protocol(str(tmp_path), ["clip"], [0], **quiet).run()
  again = FakeRunner()
  result = protocol.Protocol(str(tmp_path), ["clip"], [0], runner=again,
                             log=lambda s: None, reevaluate=["kg"]).run()
  assert again.trained() == []
  assert again.evaluated() == [str(tmp_path / "base"), str(tmp_path / "clip" / "seed0")]
  assert all("--reevaluate" in c and c[c.index("--reevaluate") + 1] == "kg"
             for c in again.calls)
  run = result["runs"]["clip"][0]
  assert all(run[m] == RESCORED for m in KG_METRICS)
  assert run["world/order"] == SCORES["clip"]  # the trainer's other figures stand
  cached = json.loads((tmp_path / "clip" / "seed0" / "evaluation.json").read_text())
  assert cached["evals"] == ["kg"]
  # A later results run without the flag reuses that evaluation, figures and all.
  third = FakeRunner()
  later = protocol.Protocol(str(tmp_path), ["clip"], [0], runner=third,
                            log=lambda s: None).run()
  assert third.calls == []
  assert all(later["runs"]["clip"][0][m] == RESCORED for m in KG_METRICS)


def test_extra_evals_and_the_cache_rule(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"evals": {"world": {"type": "world"}}}))
  expected = {"evals": {"world": {"type": "world"}, "kg": {"type": "kg"}}}
  workdir = str(tmp_path)
  assert evaluation.extra_evals(workdir, expected) == {"kg": {"type": "kg"}}
  # Named again: run although the run has it; a name the config lacks is ignored.
  assert evaluation.extra_evals(workdir, expected, ["world", "nope"]) == expected["evals"]
  assert evaluation.cache_key(workdir, expected, ["world"]) == ["kg", "world"]
  assert evaluation.covers(["kg", "world"], ["kg"])
  assert not evaluation.covers(["kg"], ["kg", "world"])
  assert not evaluation.covers([evaluation.ALL_KEY, "kg"], ["kg"])
  assert evaluation.covers([evaluation.ALL_KEY, "kg"], [evaluation.ALL_KEY, "kg"])


def test_the_report_names_the_flag():
  line = results_tool.command_line(["knowledge_clip"], 3, False, reevaluate=["kg"])
  assert line == ("python -m vlkg.tools.results --methods knowledge_clip --seeds 3 "
                  "--reevaluate kg")
