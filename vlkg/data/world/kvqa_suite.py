"""The world's knowledge-VQA questions: answers that need a knowledge-graph fact.

Knowledge VQA (OK-VQA, Marino et al., CVPR 2019; REAVL, Rao et al., ACM MM 2023)
asks what the image alone does not say. Here every answer joins what the image
shows with one fact of the world's knowledge graph (`vlkg.data.world.knowledge`),
read through `vlkg.data.world.knowledge_queries`:

============  ===============================================  ====================
type          question                                         fact, answers
============  ===============================================  ====================
corners       how many corners does the red shape have?        shape has N corners;
                                                                zero .. twelve
family        is the shape left of the star a warm color?     color is a warm /
                                                                cool color; yes, no
shape_class   is the large red shape convex? (round?           shape is round /
              a polygon?)                                      polygon / convex;
                                                                yes, no
alias_shape   what shape is the scarlet one?                   scarlet alias of red;
                                                                the shape's name
alias_color   what color is the quadrate?                      quadrate alias of
                                                                square; a color
============  ===============================================  ====================

The object asked about is named alone and without the asked attribute
(`vlkg.data.world.referring`). Answers are balanced so that a text prior gains
little: a yes/no question first draws its answer (yes or no, half each) and then the
fact asked about (a warm question is as often "no" as "yes"; a shape-class question
is asked only in a scene with objects of both answers), and `balance` makes each
yes/no type exactly half yes over a split, the least two answers allow; the other
types follow the scene sampler's uniform shapes and colors (the largest share is a
corner count shared by two shapes, 2/9). Each scene gets one question, of a type
drawn first and replaced by the next type in a seeded order when the scene cannot
support it.
"""

from __future__ import annotations

from typing import NamedTuple

import networkx as nx
import numpy as np

from vlkg.data.world import knowledge_queries as kq
from vlkg.data.world import ontology, referring
from vlkg.data.world.scene import Scene

TYPES = ("corners", "family", "shape_class", "alias_shape", "alias_color")
# Answer words for corner counts; "zero" rather than the captions' "no", which
# would collide with the yes/no answer.
_COUNT_WORDS = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five",
                6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten",
                11: "eleven", 12: "twelve"}
# Shape classes asked about: (words, the complementary class). Every world shape is
# either round or a polygon, and convex or not.
_SHAPE_CLASS = {"round": ("round", "polygon"), "polygon": ("a polygon", "round"),
                "convex": ("convex", "non_convex"),
                "non_convex": ("non-convex", "convex")}
_ASKED_FIRST = ("round", "polygon", "convex")


class Question(NamedTuple):
  """A question, its answer and type, the object it is about; for yes/no types also
  ``negated``, the question asking the complementary fact, whose answer is the other
  one (`balance`)."""

  question: str
  answer: str
  type: str
  about: int
  negated: str | None = None


def _corners(graph: nx.MultiDiGraph, shape: str) -> int:
  node = kq.concepts_of(graph, shape)["corners"]
  return int(graph.nodes[node]["count"])


def _shape_property(graph: nx.MultiDiGraph, shape: str, prop: str) -> bool:
  if prop == "non_convex":
    return not _shape_property(graph, shape, "convex")
  return bool(kq.concepts_of(graph, shape)[prop])


def _corners_question(scene, graph, rng):
  i = int(rng.integers(len(scene.objects)))
  desc = referring.describe(scene, i, "shape", rng)
  if desc is None:
    return None
  n = _corners(graph, scene.objects[i].shape)
  return Question(f"how many corners does {desc} have?", _COUNT_WORDS[n], "corners", i)


def _yes_no_shape_question(scene, graph, rng):
  """"is <it> round?" (a polygon? convex?), asked only in a scene that holds objects
  of both answers, the answer drawn first: so the wording says nothing of the
  answer, however rare the class (two of nine shapes are round)."""
  yes = bool(rng.random() < 0.5)
  props = list(_ASKED_FIRST)
  rng.shuffle(props)
  for prop in props:
    truth = [_shape_property(graph, o.shape, prop) for o in scene.objects]
    if len(set(truth)) < 2:
      continue
    fits = [k for k, t in enumerate(truth) if t == yes]
    i = fits[int(rng.integers(len(fits)))]
    desc = referring.describe(scene, i, "shape", rng)
    if desc is None:
      continue
    words, other = _SHAPE_CLASS[prop]
    shape = scene.objects[i].shape
    negated = None
    if _shape_property(graph, shape, other) != yes:  # the complement holds: negatable
      negated = f"is {desc} {_SHAPE_CLASS[other][0]}?"
    return Question(f"is {desc} {words}?", "yes" if yes else "no", "shape_class", i,
                    negated)
  return None


def _alias_question(scene, graph, rng, asked: str):
  """``asked`` "shape": name the object by its color's alias, ask its shape."""
  said = "color" if asked == "shape" else "shape"
  i = int(rng.integers(len(scene.objects)))
  obj = scene.objects[i]
  if sum(o.attribute(said) == obj.attribute(said) for o in scene.objects) != 1:
    return None
  alias = kq.aliases(graph, obj.attribute(said))
  if not alias:
    return None
  word = alias[int(rng.integers(len(alias)))]
  if asked == "shape":
    return Question(f"what shape is the {word} one?", obj.shape, "alias_shape", i)
  return Question(f"what color is the {word}?", obj.color, "alias_color", i)


def make_question(scene: Scene, graph: nx.MultiDiGraph,
                  rng: np.random.Generator) -> Question | None:
  """One question about ``scene`` (see the module docstring), or None if the scene
  supports none."""
  if not scene.objects:
    return None
  first = int(rng.integers(len(TYPES)))
  for k in range(len(TYPES)):
    kind = TYPES[(first + k) % len(TYPES)]
    if kind == "corners":
      q = _corners_question(scene, graph, rng)
    elif kind == "family":
      q = _family(scene, graph, rng)
    elif kind == "shape_class":
      q = _yes_no_shape_question(scene, graph, rng)
    else:
      q = _alias_question(scene, graph, rng, kind.removeprefix("alias_"))
    if q is not None:
      return q
  return None


def _family(scene, graph, rng):
  """"is <it> a warm color?": the answer is drawn first, then the family asked."""
  i = int(rng.integers(len(scene.objects)))
  desc = referring.describe(scene, i, "color", rng)
  if desc is None:
    return None
  yes = bool(rng.random() < 0.5)
  family = kq.concepts_of(graph, scene.objects[i].color)["family"]
  other = _opposite(graph, family)
  asked, negated = (family, other) if yes else (other, family)
  return Question(f"is {desc} a {asked}?", "yes" if yes else "no", "family", i,
                  f"is {desc} a {negated}?")


def _opposite(graph: nx.MultiDiGraph, node: str) -> str:
  tails = sorted(t for _, t, d in graph.out_edges(node, data=True)
                 if d.get("relation") == "opposite of")
  if len(tails) != 1:
    raise ValueError(f"knowledge graph: {node!r} needs one 'opposite of', has {tails}")
  return tails[0]


def balance(questions: list[Question | None], rng: np.random.Generator
            ) -> list[Question | None]:
  """Makes each yes/no type exactly half yes (one more "no" when odd): the surplus
  answer's questions, picked by ``rng``, are asked about the complementary fact
  instead (``negated``), which flips their answer. Order is kept."""
  out = list(questions)
  for kind in ("family", "shape_class"):
    yes = [k for k, q in enumerate(out) if q and q.type == kind and q.answer == "yes"]
    no = [k for k, q in enumerate(out) if q and q.type == kind and q.answer == "no"]
    target = (len(yes) + len(no)) // 2  # yes answers wanted
    more, surplus = (yes, len(yes) - target) if len(yes) > target else (
        no, target - len(yes))
    flippable = [k for k in more if out[k].negated is not None]
    for k in sorted(rng.permutation(flippable)[:surplus].tolist()):
      q = out[k]
      out[k] = Question(q.negated, "no" if q.answer == "yes" else "yes", q.type,
                        q.about, q.question)
  return out


def answer_words() -> tuple[str, ...]:
  """Every answer a world question can have (its closed vocabulary's superset)."""
  counts = sorted({s.corners for s in ontology.SHAPES})
  return (("yes", "no") + tuple(_COUNT_WORDS[n] for n in counts)
          + tuple(s.name for s in ontology.SHAPES)
          + tuple(c.name for c in ontology.COLORS))
