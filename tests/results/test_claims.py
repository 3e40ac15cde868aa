"""The claims arithmetic against hand-worked examples (vlkg.results.claims)."""

import math

import pytest

from vlkg.results import claims
from vlkg.results.claims import Claim


def runs(**per_run):
  """runs(clip={"m": [v0, v1, ...]}) -> {"clip": {0: {"m": v0}, 1: {"m": v1}}}."""
  out = {}
  for name, metrics in per_run.items():
    for metric, values in metrics.items():
      for seed, v in enumerate(values):
        out.setdefault(name, {}).setdefault(seed, {})[metric] = v
  return out


def claim(**kw):
  kw.setdefault("name", "c")
  kw.setdefault("metric", "m")
  kw.setdefault("target", 0.15)
  kw.setdefault("method", "sc")
  return Claim(**kw)


def test_stat_is_mean_and_standard_error_with_ddof_1():
  s = claims.stat([0.70, 0.74, 0.78])
  # deviations -0.04, 0, 0.04: var = 0.0032 / 2 = 0.0016, std 0.04, se 0.04 / sqrt(3)
  assert s.mean == pytest.approx(0.74)
  assert s.se == pytest.approx(0.04 / math.sqrt(3))
  assert s.n == 3
  one = claims.stat([0.5])
  assert (one.mean, one.se, one.n) == (0.5, None, 1)


def test_gain_met_with_paired_delta():
  r = runs(sc={"m": [0.70, 0.74, 0.78]}, clip={"m": [0.55, 0.57, 0.59]})
  v = claims.judge(claim(), r)
  assert v.seeds == (0, 1, 2)
  assert v.value.mean == pytest.approx(0.74)
  assert v.baseline.mean == pytest.approx(0.57)
  assert v.delta.mean == pytest.approx(0.17)
  # per-seed deltas 0.15, 0.17, 0.19: se 0.02 / sqrt(3)
  assert v.delta.se == pytest.approx(0.02 / math.sqrt(3))
  assert v.met is True and v.rule_met is True and v.blind_met is None


def test_gain_not_met_below_target_and_met_exactly_at_it():
  r = runs(sc={"m": [0.70]}, clip={"m": [0.56]})
  assert claims.judge(claim(), r).met is False  # +14 points
  r = runs(sc={"m": [0.70]}, clip={"m": [0.55]})
  assert claims.judge(claim(), r).met is True  # +15 points, float noise aside


def test_halving_errors_counts_only_above_the_threshold():
  c = claim(halve_errors_above=0.8)
  # baseline 0.86 (errors 0.14), method 0.93 (errors 0.07): Δ +7 but halved
  v = claims.judge(c, runs(sc={"m": [0.92, 0.93, 0.94]}, clip={"m": [0.84, 0.86, 0.88]}))
  assert v.delta.mean == pytest.approx(0.07)
  assert v.met is True
  # errors 0.14 -> 0.08: not halved
  v = claims.judge(c, runs(sc={"m": [0.92]}, clip={"m": [0.86]}))
  assert v.met is False
  # baseline exactly 0.80 is not above 80%: errors 0.2 -> 0.1 does not count
  v = claims.judge(c, runs(sc={"m": [0.90]}, clip={"m": [0.80]}))
  assert v.met is False
  # without the option, halving never counts
  v = claims.judge(claim(), runs(sc={"m": [0.93]}, clip={"m": [0.86]}))
  assert v.met is False


def test_ratio_rule():
  c = claim(rule="ratio", target=2.0)
  v = claims.judge(c, runs(sc={"m": [0.30, 0.40]}, clip={"m": [0.16, 0.18]}))
  assert v.ratio == pytest.approx(0.35 / 0.17)  # 2.06
  assert v.met is True
  v = claims.judge(c, runs(sc={"m": [0.30, 0.40]}, clip={"m": [0.20, 0.20]}))
  assert v.ratio == pytest.approx(1.75)
  assert v.met is False


def test_drop_bound_is_a_negative_gain_target():
  c = claim(target=-0.02)
  assert claims.judge(c, runs(sc={"m": [0.185]}, clip={"m": [0.20]})).met is True
  assert claims.judge(c, runs(sc={"m": [0.175]}, clip={"m": [0.20]})).met is False


def test_blind_rule():
  c = claim(blind="b")
  sighted = {"m": [0.70, 0.74, 0.78]}  # Δ = +17 (half: 8.5)
  ok = runs(sc={**sighted, "b": [0.50, 0.52, 0.54]},
            clip={"m": [0.55, 0.57, 0.59], "b": [0.45, 0.47, 0.49]})
  v = claims.judge(c, ok)
  assert v.blind_delta.mean == pytest.approx(0.05)
  assert v.blind_met is True and v.met is True
  prior = runs(sc={**sighted, "b": [0.54, 0.56, 0.58]},
               clip={"m": [0.55, 0.57, 0.59], "b": [0.45, 0.47, 0.49]})
  v = claims.judge(c, prior)  # blind Δ +9 >= 8.5: the captions explain the gain
  assert v.rule_met is True and v.blind_met is False and v.met is False
  missing = runs(sc=sighted, clip={"m": [0.55, 0.57, 0.59]})
  assert claims.judge(c, missing).met is None


def test_only_common_seeds_count_and_missing_runs_are_not_measured():
  r = runs(sc={"m": [0.70, 0.74, 0.90]}, clip={"m": [0.55, 0.57]})
  v = claims.judge(claim(), r)
  assert v.seeds == (0, 1)
  assert v.value.mean == pytest.approx(0.72)
  v = claims.judge(claim(), runs(sc={"m": [0.7]}))
  assert v.met is None and v.seeds == ()
  assert v.to_json()["value"] is None


def test_to_json_has_the_contract_keys():
  v = claims.judge(claim(), runs(sc={"m": [0.70, 0.74]}, clip={"m": [0.55, 0.57]}))
  j = v.to_json()
  for key in ("name", "method", "metric", "baseline", "value", "delta", "target", "met"):
    assert key in j
  assert j["value"] == pytest.approx(0.72) and j["delta"] == pytest.approx(0.16)
  assert j["baseline"] == "clip" and j["method"] == "sc" and j["met"] is True


def test_bad_rule_is_an_error():
  with pytest.raises(ValueError, match="rule"):
    claim(rule="bigger")


def test_describe_target():
  assert claim(halve_errors_above=0.8, blind="b").describe_target() == (
      "Δ ≥ +15.0 pts, or errors halved if clip > 80%; blind Δ < ½ Δ")
  assert claim(rule="ratio", target=2.0).describe_target() == "≥ 2× clip"


def test_the_methods_declare_the_issue_targets():
  assert claims.methods_with_claims() == ["knowledge_clip", "loupe", "mosaiclip",
                                          "reavl", "structure_clip"]
  sc = {c.metric: c for c in claims.declared("structure_clip")}
  assert sc["world/attribute_swap"].target == 0.15
  assert sc["world/attribute_swap"].halve_errors_above == 0.8
  assert sc["world/attribute_swap"].blind == "text_prior/test/blind"
  assert sc["world/relation_swap"].target == 0.15
  assert sc["world/relation_swap"].blind == "text_prior/test/relation_swap/blind"
  assert sc["retrieval/test/image_to_text_R@1"].target == -0.02
  mc = claims.declared("mosaiclip")
  assert {(c.metric, c.baseline, c.target) for c in mc} == {
      ("world_comp/attribute_swap", "clip", 0.15),
      ("world/relation_swap", "structure_clip", 0.0),
      ("retrieval/test/image_to_text_R@1", "clip", -0.02)}
  (lp,) = claims.declared("loupe")
  assert (lp.metric, lp.rule, lp.target, lp.method) == (
      "grounding/pointing_acc", "ratio", 2.0, "loupe")
  kc = claims.declared("knowledge_clip")
  # The KG claims beat the paper's "CLIP + KG" ablation, a run the module declares.
  assert [(c.metric, c.baseline, c.target, c.rule) for c in kc] == [
      ("world/knowledge", "clip", 0.10, "gain"),
      ("world_comp/knowledge", "clip", 0.10, "gain"),
      ("kg/tail_R@1", "clip_kg", 0.0, "gain"), ("kg/relation_acc", "clip_kg", 0.0, "gain"),
      ("retrieval/test/image_to_text_R@1", "clip", -0.02, "gain")]
  rv = {c.name: c for c in claims.declared("reavl")}
  assert [(c.metric, c.rule, c.target) for c in rv.values()] == [
      ("world/knowledge", "gain", 0.10), ("world/kvqa_head", "gain", 0.10),
      ("world/kvqa_head", "relative_gain", 0.5), ("world/knowledge", "relative_gain", 1.0),
      ("retrieval/test/image_to_text_R@1", "gain", -0.02),
      ("reavl/recall@5", "at_least", 0.9)]
  assert rv["knowledge VQA over no retrieval"].baseline == "reavl_no_retrieval"
  assert rv["sample efficiency"].runs() == ("reavl_10pct", "clip_10pct", "reavl", "clip")
  assert rv["retriever recall"].runs() == ("reavl",)
  assert claims.declared("clip") == ()


def test_at_least_is_an_absolute_level():
  c = claim(rule="at_least", target=0.9, baseline="")
  assert c.runs() == ("sc",) and c.describe_target() == "≥ 0.9"
  v = claims.judge(c, runs(sc={"m": [0.88, 0.94]}))
  assert v.met is True and v.value.mean == pytest.approx(0.91) and v.delta is None
  assert claims.judge(c, runs(sc={"m": [0.8, 0.9]})).met is False
  assert claims.judge(c, runs(clip={"m": [1.0]})).met is None


def test_relative_gain_compares_two_paired_gains():
  # Sample efficiency: (ours10 - clip10) >= 1.0 x (ours - clip), seed by seed.
  c = claim(rule="relative_gain", target=1.0, run="sc10", baseline="clip10",
            reference=("sc", "clip"))
  assert c.subject == "sc10" and c.runs() == ("sc10", "clip10", "sc", "clip")
  assert c.describe_target() == "Δ ≥ 1× Δ(sc − clip)"
  r = runs(sc10={"m": [0.60, 0.64]}, clip10={"m": [0.40, 0.42]},
           sc={"m": [0.80, 0.82]}, clip={"m": [0.62, 0.66]})
  v = claims.judge(c, r)  # gains +0.21 at 10%, +0.17 at 100%
  assert v.delta.mean == pytest.approx(0.21) and v.reference.mean == pytest.approx(0.17)
  assert v.met is True and v.to_json()["reference_delta"] == pytest.approx(0.17)
  # The gate: the drop under distractors at most half the ungated drop.
  gate = claim(rule="relative_gain", target=0.5, run="g_dis", baseline="g",
               reference=("u_dis", "u"))
  drop = lambda g, u: claims.judge(gate, runs(g_dis={"m": [0.8 - g]}, g={"m": [0.8]},
                                              u_dis={"m": [0.7 - u]}, u={"m": [0.7]}))
  assert drop(0.04, 0.10).met is True and drop(0.06, 0.10).met is False
  assert claims.judge(gate, runs(g={"m": [0.8]})).met is None
  with pytest.raises(ValueError, match="reference"):
    claim(rule="relative_gain")
  with pytest.raises(ValueError, match="reference"):
    claim(reference=("a", "b"))
