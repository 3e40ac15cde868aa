"""Exact parser of the synthetic world's caption grammar, and the ground-truth graph.

Structure-CLIP turns every caption into a scene graph with a rule-based text parser
before it builds negatives and triples (Structure-CLIP, Huang et al., AAAI 2024). On the world the grammar is
known (``vlkg.data.world.captions``), so the parse can be exact: ``parse(text)``
equals ``graph_of(caption)`` for every realisation of every sampled logical form,
which the tests check on 10,000 captions. This gives the world's training and
evaluation a parser whose errors are zero, so a method's gains or losses there are
never a parser artefact.

What the graph holds:
  * objects are the shape nouns in order of appearance, canonical ("oval" ->
    "ellipse", "plus" -> "cross"), or "shape" for the generic noun;
  * attributes are canonical values ("big" -> "large", "stripy" -> "striped"),
    listed per object in the order they are said (size, color, texture);
  * relations use the canonical predicate ("to the left of" -> "left of",
    "beneath" -> "below").

Knowledge noun phrases ("a warm-colored shape with four corners", "a scarlet
crux") keep their concept words as written: "round"/"polygonal", "warm-colored",
the aliases "scarlet" and "crux", and "four corners" become attributes and object
names verbatim. They are *not* mapped to canonical values, because resolving them
needs the knowledge graph (Knowledge-CLIP, Pan et al., NeurIPS 2022; REAVL, Rao et al., ACM MM 2023), which is exactly what the knowledge
suite tests a model for; a parser that resolved them would leak the answer.
"""

from __future__ import annotations

from vlkg.data.world import captions as cap
from vlkg.data.world import ontology
from vlkg.graphs import general_parser
from vlkg.graphs.scene_graph import SceneGraph

# The words realise_np writes for knowledge concepts (captions.realise_np).
FORM_WORDS = {"round": "round", "polygon": "polygonal"}
FAMILY_WORDS = {f: f"{f}-colored" for f in sorted({c.family for c in ontology.COLORS})}

# Function words of the grammar: articles, lead-ins ("there is", "a picture of"),
# the ARO copula ("the red circle is left of ..."). Everything else must be a
# vocabulary word in strict mode.
_FUNCTION_WORDS = frozenset({"a", "an", "the", "there", "is", "picture", "image", "of"})
_CONJUNCTIONS = frozenset({"and", ",", "."})

_NOUN, _ATTR, _REL, _CORNERS = range(4)


def _corner_phrase(n: int) -> str:
  return f"{cap.CORNER_WORDS[n]} {'corner' if n == 1 else 'corners'}"


def _build_vocab() -> tuple[dict[tuple[str, ...], tuple[int, str]], dict[str, int]]:
  """Phrase (as a token tuple) -> (role, graph word); and the longest phrase per first token."""
  vocab: dict[tuple[str, ...], tuple[int, str]] = {}
  for form, concept in ontology.lexicon().items():
    role = (_NOUN if concept in ontology.SHAPE_BY_NAME else
            _REL if concept in ontology.RELATIONS else _ATTR)
    vocab[tuple(form.split())] = (role, concept)
  # Aliases and concept words stay as written (see the module docstring).
  for shape in ontology.SHAPES:
    for alias in shape.aliases:
      vocab[(alias,)] = (_NOUN, alias)
  for color in ontology.COLORS:
    for alias in color.aliases:
      vocab[(alias,)] = (_ATTR, alias)
  vocab[("shape",)] = (_NOUN, "shape")
  for word in (*FORM_WORDS.values(), *FAMILY_WORDS.values()):
    vocab[(word,)] = (_ATTR, word)
  for n in cap.CORNER_WORDS:
    phrase = _corner_phrase(n)
    vocab[("with", *phrase.split())] = (_CORNERS, phrase)
  longest: dict[str, int] = {}
  for key in vocab:
    longest[key[0]] = max(longest.get(key[0], 0), len(key))
  return vocab, longest


_VOCAB, _LONGEST = _build_vocab()


def parse(text: str, strict: bool = False) -> SceneGraph:
  """The scene graph of a world caption.

  Args:
    text: a caption realised by ``captions.realise``/``realise_clause`` (lead-ins,
      ", "/" and " between clauses, "is" in ARO-style captions), any case.
    strict: raise on a word outside the world's grammar instead of skipping it.

  Returns:
    The caption's SceneGraph; unknown words are skipped unless ``strict``.

  Raises:
    ValueError: in strict mode, naming the first word the grammar does not know.
  """
  tokens = general_parser.tokenize(text)
  objects: list[str] = []
  attributes: list[tuple[int, str]] = []
  relations: list[tuple[int, str, int]] = []
  pending: list[str] = []
  subject_and_predicate: tuple[int, str] | None = None
  i, n = 0, len(tokens)
  while i < n:
    tok = tokens[i]
    entry, size = None, 1
    for size in range(min(_LONGEST.get(tok, 0), n - i), 0, -1):
      entry = _VOCAB.get(tuple(tokens[i:i + size]))
      if entry is not None:
        break
    if entry is None:
      if tok in _CONJUNCTIONS:
        # A clause ends here; a relation never spans two clauses.
        subject_and_predicate = None
      elif strict and tok not in _FUNCTION_WORDS:
        raise ValueError(f"word {tok!r} is not in the world's caption grammar: {text!r}")
      i += 1
      continue
    role, word = entry
    if role == _ATTR:
      pending.append(word)
    elif role == _NOUN:
      k = len(objects)
      objects.append(word)
      attributes.extend((k, a) for a in pending)
      pending = []
      if subject_and_predicate is not None:
        relations.append((subject_and_predicate[0], subject_and_predicate[1], k))
        subject_and_predicate = None
    elif role == _CORNERS:
      if objects:  # "with four corners" follows its noun
        attributes.append((len(objects) - 1, word))
    elif objects:  # a relation's subject is the noun phrase just before it
      subject_and_predicate = (len(objects) - 1, word)
    i += size
  return SceneGraph(tuple(objects), tuple(attributes), tuple(relations))


def _noun_phrase_graph(np_: cap.NounPhrase) -> tuple[str, list[str]]:
  """(object name, attributes) of a noun phrase, in the order realise_np says them."""
  concepts = dict(np_.concepts)
  attrs = []
  if "form" in concepts:
    attrs.append(FORM_WORDS[concepts["form"]])
  if "family" in concepts:
    attrs.append(FAMILY_WORDS[concepts["family"]])
  for kind in cap.ATTRIBUTE_ORDER:
    value = np_.attribute(kind)
    if value is None:
      continue
    if kind == "color" and "color" in np_.alias_kinds:
      # realise_np picks among the aliases; the ontology has one per concept, so
      # the first is the one said. Should it get more, compare canonical() instead.
      value = ontology.COLOR_BY_NAME[value].aliases[0]
    attrs.append(value)
  if np_.shape is None:
    name = "shape"
  elif "shape" in np_.alias_kinds:
    name = ontology.SHAPE_BY_NAME[np_.shape].aliases[0]
  else:
    name = np_.shape
  if "corners" in concepts:
    attrs.append(_corner_phrase(int(concepts["corners"])))
  return name, attrs


def graph_of(caption: cap.Caption) -> SceneGraph:
  """The ground-truth scene graph of a logical form.

  One object per noun phrase, in the order the clauses say them (a relation's
  subject before its object); attributes per object in ``ATTRIBUTE_ORDER``, with
  knowledge concept words as ``parse`` writes them; one relation per Relation clause
  with its canonical predicate. Noun phrases in different clauses are different
  objects even when they describe the same thing, since the text cannot tell.
  """
  objects: list[str] = []
  attributes: list[tuple[int, str]] = []
  relations: list[tuple[int, str, int]] = []

  def add(np_: cap.NounPhrase) -> int:
    name, attrs = _noun_phrase_graph(np_)
    k = len(objects)
    objects.append(name)
    attributes.extend((k, a) for a in attrs)
    return k

  for clause in caption:
    if isinstance(clause, cap.NounPhrase):
      add(clause)
    else:
      s = add(clause.subject)
      o = add(clause.object)
      relations.append((s, clause.predicate, o))
  return SceneGraph(tuple(objects), tuple(attributes), tuple(relations))
