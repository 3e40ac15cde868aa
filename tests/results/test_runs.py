"""Runs a method module declares (vlkg.results.runs): found by name, named once;
the runs the results tool selects for the claims, and its --ablations flag."""

import pytest

from vlkg.results import command as results_tool
from vlkg.results import protocol, runs
from vlkg.results.runs import Run


def test_knowledge_clip_declares_clip_kg_and_one_run_per_objective_removed():
  declared = runs.declared("knowledge_clip")
  assert [(r.name, r.overrides, r.method) for r in declared] == [
      ("clip_kg", ("knowledge_clip.mode=captions",), "knowledge_clip"),
      ("knowledge_clip_no_e2e", ("knowledge_clip.e2e_weight=0.0",), "knowledge_clip"),
      ("knowledge_clip_no_e2r", ("knowledge_clip.e2r_weight=0.0",), "knowledge_clip"),
      ("knowledge_clip_no_g2e", ("knowledge_clip.g2e_weight=0.0",), "knowledge_clip"),
      ("knowledge_clip_no_kd", ("knowledge_clip.kd_weight=0.0",), "knowledge_clip")]
  assert all(r.label for r in declared)
  assert runs.declared("clip") == ()
  every = runs.all_declared(reserved=protocol.BASELINES)
  assert {r.name for r in declared} <= set(every)
  assert every["clip_kg"].method == "knowledge_clip"


def test_reavl_declares_its_ablations_and_a_clip_run_the_claims_read():
  from vlkg.results import command
  declared = {r.name: r for r in runs.declared("reavl")}
  assert declared["reavl_no_retrieval"].overrides == ("reavl.k=0",)
  assert declared["reavl_no_gate"].overrides == ("reavl.gate=False",)
  assert declared["reavl_10pct"].overrides == ("input.train_fraction=0.1",)
  # CLIP at 10% of the data is CLIP's config, declared beside REAVL's claim.
  spec = protocol.run_spec("clip_10pct")
  assert (spec.config, spec.overrides) == ("clip", ("input.train_fraction=0.1",))
  assert protocol.run_spec("reavl_no_gate").config == "reavl"
  assert command.claims_of("clip_10pct") == ()
  # Every run a claim reads is selected, even without --ablations.
  selected = command.select_runs(["reavl"], command.claims_of)
  assert selected[0] == "clip" and set(selected) == {
      "clip", "reavl", "reavl_no_retrieval", "reavl_distractors",
      "reavl_no_gate_distractors", "reavl_no_gate", "reavl_10pct", "clip_10pct"}


def test_a_run_name_says_one_thing(monkeypatch):
  from vlkg.methods import knowledge_clip, loupe
  monkeypatch.setattr(knowledge_clip, "RUNS", (Run("loupe", ()),))
  with pytest.raises(ValueError, match="'loupe', already the name of a method"):
    runs.all_declared()
  monkeypatch.setattr(knowledge_clip, "RUNS", (Run("negclip", ()),))
  with pytest.raises(ValueError, match="'negclip', already the name of a method or a "
                     "baseline"):
    runs.all_declared(reserved=protocol.BASELINES)
  monkeypatch.setattr(knowledge_clip, "RUNS", (Run("x", ()),))
  monkeypatch.setattr(loupe, "RUNS", (Run("x", ()),), raising=False)
  with pytest.raises(ValueError, match="'x', already the name of a run of "
                     "vlkg.methods.knowledge_clip"):
    runs.all_declared()
  monkeypatch.setattr(loupe, "RUNS", ("x",))
  with pytest.raises(TypeError, match="not a Run"):
    runs.declared("loupe")


def test_the_tool_passes_ablations_and_reevaluate_on(monkeypatch, tmp_path):
  from vlkg.results import command
  from vlkg.tools import results as tool
  got = {}
  monkeypatch.setattr(command, "run", lambda *a, **k: got.update(a=a, k=k) or {})
  tool.run(methods=["knowledge_clip"], ablations=True, seeds=2, out=str(tmp_path))
  assert got["a"][:3] == (["knowledge_clip"], 2, str(tmp_path))
  assert got["k"] == {"ablations": True, "reevaluate": ()}
  tool.run(methods=["clip"], seeds=1, out=str(tmp_path), reevaluate=["kg"])
  assert got["k"] == {"ablations": False, "reevaluate": ["kg"]}


def test_select_runs_adds_the_baselines_claims_name():
  claims_of = results_tool.claims_of
  assert results_tool.select_runs(["mosaiclip"], claims_of) == [
      "clip", "mosaiclip", "structure_clip"]
  assert results_tool.select_runs(["loupe", "negclip", "clip"], claims_of) == [
      "clip", "negclip", "loupe"]
  # Knowledge-CLIP's KG claims name the run its module declares for "CLIP + KG".
  assert results_tool.select_runs(["knowledge_clip"], claims_of) == [
      "clip", "knowledge_clip", "clip_kg"]
  assert results_tool.claims_of("clip_kg") == ()
  assert results_tool.claims_of("knowledge_clip_no_kd") == ()


def test_ablations_add_every_run_the_selected_methods_declare():
  select = lambda names: results_tool.select_runs(names, results_tool.claims_of,
                                                  results_tool.ablations_of)
  assert select(["knowledge_clip"]) == [
      "clip", "knowledge_clip", "clip_kg", "knowledge_clip_no_e2e", "knowledge_clip_no_e2r",
      "knowledge_clip_no_g2e", "knowledge_clip_no_kd"]
  assert select(["mosaiclip", "negclip"]) == ["clip", "negclip", "mosaiclip",
                                              "structure_clip"]
  # A declared run named on its own is a run like any other, without its method.
  assert results_tool.select_runs(["knowledge_clip_no_g2e"], results_tool.claims_of) == [
      "knowledge_clip_no_g2e"]
  assert results_tool.ablations_of("clip_kg") == () == results_tool.ablations_of("clip")


def test_the_vqa_head_is_fitted_where_a_claim_reads_it_and_scaled_down_under_quick():
  """REAVL's claims read ``world/kvqa_head``: its preset and its baseline's (CLIP's)
  fit the head; the others skip its two minutes. ``--quick`` scales it down where
  it is, and passes no override of a key a preset lacks."""
  has_head = {name: "vqa_head" in protocol.load_config(
      f"configs/{name}.py", "finetune", {}).evals
      for name in ("clip", "reavl", "structure_clip", "mosaiclip", "loupe",
                   "knowledge_clip")}
  assert has_head == {"clip": True, "reavl": True, "structure_clip": False,
                      "mosaiclip": False, "loupe": False, "knowledge_clip": False}
  quick = protocol.Protocol("/tmp/unused", [], [0], quick=True)
  for run, scaled in (("clip_10pct", True), ("reavl_no_gate", True),
                      ("negclip", False), ("structure_clip", False)):
    arg = quick.finetune_stage(run, 0).arg
    assert all((o in arg) == scaled for o in protocol.QUICK_FINETUNE), run
  assert not any(o in protocol.Protocol("/tmp/unused", [], [0]).finetune_stage(
      "reavl", 0).arg for o in protocol.QUICK_FINETUNE)
