"""Benchmarks of the prepare-time graph work: caption parsing and decomposition.

    python -m vlkg.tools.bench parse
    python -m vlkg.tools.bench decompose [--config configs/mosaiclip.py]

``parse`` times `vlkg.graphs.general_parser` on COCO-like captions; ``decompose``
times MosaiCLIP's per-caption prepare step (`vlkg.graphs.decompose.build_example`:
sub-graphs, graph-space negatives and their texts; Singh et al., "Coarse-to-Fine
Contrastive Learning in Image-Text-Graph Space for Improved Vision-Language
Compositionality", EMNLP 2023, §3) on the world's training captions. Both time only
the per-caption work that data preparation pays, after a warm-up, and report the
median of repeats.
"""

from __future__ import annotations

import statistics

import numpy as np

from vlkg.graphs import decompose, general_parser, negatives
from vlkg.graphs.scene_graph import SceneGraph
from vlkg.tools.timing import median_seconds, run_seconds

# COCO-like captions for the parser's benchmark.
BENCHMARK_CAPTIONS = (
    "A man in a red shirt riding a brown horse.",
    "Two white towels hanging by the blue shower.",
    "A cat and a dog sleeping on a sofa.",
    "A black and white dog catching a frisbee in a park.",
    "A woman holding an umbrella walking down a busy street.",
    "A plate of food with broccoli, carrots and rice on a wooden table.",
    "A group of people standing around a kitchen counter.",
    "A large giraffe standing next to a tall tree.",
    "Two zebras grazing in a grassy field.",
    "A red double decker bus driving down the street.",
    "A young boy swinging a baseball bat at a ball.",
    "A kitchen with a white refrigerator and a black stove.",
    "A pizza with cheese and tomatoes sitting on top of a pan.",
    "An airplane flying over a city on a cloudy day.",
    "A person on a snowboard going down a snowy hill.",
    "A little girl sitting at a table eating a slice of cake.",
    "A bathroom with a white toilet next to a sink.",
    "A surfer riding a large wave in the ocean.",
    "A clock tower in front of a tall building.",
    "Several boats parked in a harbor near a pier.",
    "A man wearing a hat and sunglasses sitting on a bench.",
    "A brown teddy bear lying on a bed with pillows.",
    "An elephant walking along a dirt road with trees behind it.",
    "A stop sign on the corner of a street next to a fire hydrant.",
    "A woman in a blue dress holding a glass of wine.",
    "Three sheep standing in a field of green grass.",
    "A laptop computer sitting on a desk next to a keyboard and mouse.",
    "A cat laying on top of a laptop keyboard.",
    "A skateboarder doing a trick on a ramp.",
    "Two men playing frisbee on a sandy beach.",
    "A bowl of oranges and bananas on a counter.",
    "A traffic light hanging over an empty road.",
    "The dog is brown and the cat is black.",
    "A child holding a kite standing on the grass.",
    "A tennis player swinging a racket at a yellow ball.",
    "A living room with a couch, a coffee table and a television.",
    "A train traveling down the tracks past a station.",
    "A small bird perched on a branch of a tree.",
    "A motorcycle parked next to a red car on the street.",
    "Two children sitting on a couch playing video games.",
    "A chef preparing food in a restaurant kitchen.",
    "A herd of cows walking across a green field.",
    "A vase of flowers sitting on a window sill.",
    "A picture of a sandwich cut in half on a white plate.",
    "A man and a woman standing under an umbrella in the rain.",
    "A horse pulling a carriage down a cobblestone street.",
    "A hot dog with mustard and ketchup on a bun.",
    "There are two knives and a fork next to the plate.",
    "A silver car parked in front of a brick building.",
    "A large red circle to the left of a small blue square.",
)


def parse(n: int = 5000, repeats: int = 5) -> dict:
  """Times ``parse`` on ``n`` COCO-like captions; median of ``repeats`` runs.

  The default parser is built before timing: the figure is the per-caption cost
  that data preparation pays, not the one-off lexicon compilation.
  """
  parser = general_parser.default_parser()
  texts = [BENCHMARK_CAPTIONS[i % len(BENCHMARK_CAPTIONS)] for i in range(n)]

  def run():
    for text in texts:
      parser.parse(text)

  median = median_seconds(run, repeats, warmup=0)
  print(f"general parser: {n / median:.0f} captions/s on one core")
  return {"captions_per_sec": n / median, "n": n, "repeats": repeats,
          "median_seconds": median}


def world_caption_graphs(n: int, world_cfg, split: str = "train"
                         ) -> tuple[list[SceneGraph], negatives.Reject | None]:
  """``n`` parsed captions of world scenes, sampled as ``build`` samples them.

  Args:
    n: How many captions.
    world_cfg: ``config.world`` of the run whose world is sampled.
    split: The world split the scenes come from.

  Returns:
    (graphs, the reject hook ``build`` uses on ``split``).
  """
  from vlkg.data.world import build
  from vlkg.graphs import world_parser
  spec = build.world_spec(world_cfg)
  graphs: list[SceneGraph] = []
  index = 0
  while len(graphs) < n:
    _, texts = build.scene_and_captions(spec, world_cfg, split, index)
    graphs += [world_parser.parse(t) for t in texts]
    index += 1
  reject = negatives.world_heldout_reject(spec.heldout_pairs) if split == "train" else None
  return graphs[:n], reject


def decompose_cost(world_cfg, n: int = 1000, repeats: int = 3, seed: int = 0) -> dict:
  """Seconds of `build_example` per 1,000 world training captions: median of repeats.

  Scene sampling and parsing are not timed (prepare pays them already); the
  per-caption work of MosaiCLIP's prepare step is.
  """
  graphs, reject = world_caption_graphs(n, world_cfg)
  vocab = negatives.world_vocabulary()
  examples: list[decompose.MosaicExample] = []

  def run():
    rng = np.random.default_rng(seed)
    examples[:] = [decompose.build_example(g, rng, vocab=vocab,
                                           realise_fn=decompose.world_realise,
                                           reject=reject) for g in graphs]

  # One warm-up: caches (vocabulary meaning, reading) are built outside the timing.
  seconds = run_seconds(run, repeats, warmup=1)
  median = statistics.median(seconds)

  def shares(some):
    cats = [c for e in some for c in e.categories]
    return {c: round(cats.count(c) / max(1, len(cats)), 3) for c in decompose.CATEGORIES}

  out = {
      "captions": n, "repeats": repeats, "seconds": [round(s, 3) for s in seconds],
      "median_seconds_per_1000": round(median * 1000 / n, 3),
      "mean_positives": round(float(np.mean([len(e.positives) for e in examples])), 3),
      "mean_negatives": round(float(np.mean([len(e.negatives) for e in examples])), 3),
      "whole_negative_rate": round(float(np.mean(
          [e.whole_negative is not None for e in examples])), 3),
      "category_share": shares(examples),
      # Captions of one object have f_obj only; p1/p2/p3 show on the others.
      "category_share_with_relation": shares(
          [e for e, g in zip(examples, graphs) if g.relations]),
  }
  print(f"decompose: {out['median_seconds_per_1000']} s per 1,000 world captions "
        f"(median of {repeats}), {out['mean_positives']} positives and "
        f"{out['mean_negatives']} negatives per caption")
  return out
