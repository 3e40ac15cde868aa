"""The claims section, the markers-based docs update and results.png."""

import numpy as np
import pytest

from vlkg.results import claims, figure, report
from vlkg.results.claims import Claim
from vlkg.results.runs import Run

RESULT = {
    "base": {"probe/shape": 0.93, "world/replace_obj": 0.88, "world/replace_att": 0.95,
             "world/attribute_swap": 0.61, "world/relation_swap": 0.58,
             report.R1: 0.41},
    "runs": {
        "clip": {0: {"world/attribute_swap": 0.60, "text_prior/test/blind": 0.50},
                 1: {"world/attribute_swap": 0.64, "text_prior/test/blind": 0.52}},
        "negclip": {0: {"world/attribute_swap": 0.70}, 1: {"world/attribute_swap": 0.72}},
        "sc": {0: {"world/attribute_swap": 0.80, "text_prior/test/blind": 0.53},
               1: {"world/attribute_swap": 0.82, "text_prior/test/blind": 0.55}},
    },
    "times": [{"stage": "base", "train": 1500.0, "evaluate": 30.0, "resumed": False},
              {"stage": "clip seed 0", "train": 200.0, "evaluate": None,
               "resumed": True}],
    "seconds": 1800.0,
}
CLAIM = Claim(name="attribute binding", metric="world/attribute_swap", target=0.15,
              blind="text_prior/test/blind", paper="VG-Attribution +22", method="sc")


def verdicts():
  return [claims.judge(CLAIM, RESULT["runs"])]


def test_formatting():
  assert report.fmt(0.5) == "0.500" and report.fmt(None) == "—"
  assert report.fmt_stat(claims.Stat(0.5, 0.01, 3)) == "0.500 ± 0.010"
  assert report.fmt_stat(claims.Stat(0.5, None, 1)) == "0.500"
  assert report.fmt_points(claims.Stat(0.17, 0.0115, 3)) == "+17.0 ± 1.1"
  assert report.fmt_points(claims.Stat(-0.028, None, 1)) == "-2.8"
  assert report.fmt_seconds(125.4) == "2 min 05 s"
  assert report.fmt_seconds(42) == "42 s"


def test_section_holds_every_figure_of_the_claim():
  body = report.section(RESULT, verdicts(), command="python -m vlkg.tools.results",
                        seeds=[0, 1])
  row = next(l for l in body.splitlines() if l.startswith("| attribute binding"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  # baseline 0.62 ± 0.02; NegCLIP 0.71 ± 0.01; method 0.81 ± 0.01;
  # Δ per seed +20, +18: +19.0 ± 1.0; blind Δ per seed +3, +3: +3.0 (< 9.5)
  assert cells == ["attribute binding", "sc", "`world/attribute_swap`",
                   "clip 0.620 ± 0.020", "0.710 ± 0.010", "0.810 ± 0.010",
                   "+19.0 ± 1.0", "+3.0 ± 0.0", "VG-Attribution +22",
                   "Δ ≥ +15.0 pts; blind Δ < ½ Δ", "**met**"]
  assert "| 0.930 | 0.880 | 0.950 | 0.610 | 0.580 | 0.410 |" in body
  assert "| base | 25 min 00 s | 30 s |" in body
  assert "| all stages | 28 min 20 s | 30 s |" in body
  assert "clip seed 0 (resumed" in body
  assert "2 seeds (0, 1)" in body
  assert "| `world/attribute_swap` | 0.610 | 0.620 ± 0.020 | 0.710 ± 0.010 | 0.810 ± 0.010 |" in body


def test_one_seed_says_so():
  one = {**RESULT, "runs": {k: {0: v[0]} for k, v in RESULT["runs"].items()}}
  body = report.section(one, [claims.judge(CLAIM, one["runs"])], command="c", seeds=[0])
  assert "One seed (0)" in body and "±" not in body.split("### Claims")[1]


def test_update_markdown_keeps_the_rest():
  doc = f"# Results\n\nhand text\n\n{report.BEGIN}\nold\n{report.END}\n\n## After\nkept\n"
  new = report.update_markdown(doc, "new table\n")
  assert new == f"# Results\n\nhand text\n\n{report.BEGIN}\nnew table\n{report.END}\n\n## After\nkept\n"
  assert report.update_markdown(new, "new table") == new  # idempotent


def test_update_markdown_appends_markers_once():
  new = report.update_markdown("# Results\n\ntext\n", "table")
  assert new == f"# Results\n\ntext\n\n{report.BEGIN}\ntable\n{report.END}\n"
  assert report.update_markdown(new, "t2").count(report.BEGIN) == 1
  assert report.update_markdown("", "t") == f"{report.BEGIN}\nt\n{report.END}\n"
  with pytest.raises(ValueError, match="only one"):
    report.update_markdown(f"x {report.BEGIN} y", "t")


def test_write_markdown(tmp_path):
  path = tmp_path / "results.md"
  path.write_text(f"head\n{report.BEGIN}\nold\n{report.END}\ntail\n")
  report.write_markdown(str(path), "fresh")
  assert path.read_text() == f"head\n{report.BEGIN}\nfresh\n{report.END}\ntail\n"


def test_summary_is_the_contract_line():
  s = report.summary(RESULT, verdicts(), [0, 1])
  assert set(s["base"]) == set(report.BASE_METRICS)
  assert s["base"]["probe/shape"] == 0.93
  (c,) = s["claims"]
  assert c["value"] == pytest.approx(0.81) and c["delta"] == pytest.approx(0.19)
  assert c["met"] is True and c["target"] == 0.15 and c["baseline"] == "clip"


def test_figure_bars_and_error_bars(tmp_path):
  path = tmp_path / "r.png"
  figure.write(str(path), RESULT["base"], RESULT["runs"], ["world/attribute_swap"])
  from PIL import Image
  img = np.asarray(Image.open(path).convert("RGB"))
  assert img.shape == (figure.LEGEND_H + figure.PANEL_H, figure.PANEL_W * figure.COLUMNS, 3)
  oy = figure.LEGEND_H
  colors = figure.colors(list(RESULT["runs"]))
  for i, (name, mean) in enumerate([("base", 0.61), ("clip", 0.62), ("negclip", 0.71),
                                    ("sc", 0.81)]):
    color = figure.BASE_COLOR if name == "base" else colors[name]
    x0, x1 = figure.bar_span(i, 4)
    x = x0 + 2  # left of the whisker
    top = oy + figure.value_y(mean)
    assert tuple(img[top + 1, x]) == color, name
    assert tuple(img[top - 2, x]) != color, name  # the bar ends at its mean
  # the whisker of clip (se 0.02) reaches above its bar
  x0, x1 = figure.bar_span(1, 4)
  hi = oy + figure.value_y(0.64)
  assert tuple(img[hi, (x0 + x1) // 2]) == (0, 0, 0)
  assert figure.value_y(0.0) == figure.PLOT_BOTTOM and figure.value_y(1.5) == figure.PLOT_TOP


def test_command_line():
  from vlkg.results import command
  assert command.command_line(["clip", "loupe"], 3, False) == (
      "python -m vlkg.tools.results --methods clip,loupe --seeds 3")
  assert command.command_line(["clip"], 1, True).endswith("--seeds 1 --quick")
  assert command.command_line(["knowledge_clip"], 3, False, ablations=True) == (
      "python -m vlkg.tools.results --methods knowledge_clip --seeds 3 --ablations")


ABLATION_RUNS = {
    "kc": {0: {"world/knowledge": 0.80, "kg/tail_R@1": 0.30},
           1: {"world/knowledge": 0.84, "kg/tail_R@1": 0.34}},
    "kc_no_e2e": {0: {"world/knowledge": 0.70, "kg/tail_R@1": 0.20},
                  1: {"world/knowledge": 0.72}},
    "kc_captions": {0: {"world/knowledge": 0.75}},
    "clip": {0: {"world/knowledge": 0.60}},
}
DECLARED = {"kc_captions": Run("kc_captions", ("kc.mode=captions",), "CLIP + KG", "kc"),
            "kc_no_e2e": Run("kc_no_e2e", ("kc.e2e_weight=0.0",), "without E2E", "kc"),
            "kc_no_kd": Run("kc_no_kd", ("kc.kd_weight=0.0",), "without KD", "kc"),
            "other_x": Run("other_x", (), "", "other")}


def test_ablation_table_rows_are_the_method_and_its_runs_that_ran():
  lines = report.ablation_tables(ABLATION_RUNS, DECLARED,
                                 lambda m: ["world/knowledge", "kg/tail_R@1"])
  # kc 0.82 ± 0.02 (0.80, 0.84), 0.32 ± 0.02; no E2E 0.71 ± 0.01, one seed 0.20;
  # kc_no_kd and other_x did not run: no row, no table.
  assert lines == [
      "#### kc", "",
      "| run | what | `world/knowledge` | `kg/tail_R@1` |",
      "| --- | --- | --- | --- |",
      "| kc | the full method | 0.820 ± 0.020 | 0.320 ± 0.020 |",
      "| kc_captions | CLIP + KG | 0.750 | — |",
      "| kc_no_e2e | without E2E | 0.710 ± 0.010 | 0.200 |", ""]
  assert report.ablation_tables({"kc": ABLATION_RUNS["kc"]}, DECLARED) == []


def test_the_section_has_ablation_tables_only_when_ablations_ran():
  # The columns are the method's claims' metrics.
  from vlkg.methods import knowledge_clip
  declared = {"clip_kg": Run("clip_kg", (), "CLIP + KG", "knowledge_clip")}
  runs = {"knowledge_clip": {0: {"kg/relation_acc": 0.5}, 1: {"kg/relation_acc": 0.7}},
          "clip_kg": {0: {"kg/relation_acc": 0.4}}}
  body = report.section({**RESULT, "runs": runs}, [], command="c", seeds=[0, 1],
                        declared=declared)
  assert "### Ablations (mean ± s.e. over seeds)" in body
  table = body.split("#### knowledge_clip\n\n")[1].split("\n\n")[0].splitlines()
  assert table[0] == ("| run | what | " + " | ".join(
      f"`{c.metric}`" for c in knowledge_clip.CLAIMS) + " |")
  assert table[2] == "| knowledge_clip | the full method | — | — | — | 0.600 ± 0.100 | — |"
  assert table[3] == "| clip_kg | CLIP + KG | — | — | — | 0.400 | — |"
  assert "### Ablations" not in report.section(RESULT, verdicts(), command="c",
                                               seeds=[0, 1], declared=declared)
