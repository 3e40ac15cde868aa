"""A minimal spaCy dependency-parse backend for ``vlkg.graphs.parse(text, "spacy")``.

An alternative to the lexicon parser (`vlkg.graphs.general_parser`) for users who
have spaCy and an English model installed; vlkg never needs it.
"""

from __future__ import annotations

import functools

from vlkg.graphs.scene_graph import SceneGraph


@functools.lru_cache(maxsize=2)
def _spacy_pipeline(model: str):
  try:
    import spacy  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        "the 'spacy' scene-graph backend needs spaCy, which is not installed: "
        f"pip install spacy && python -m spacy download {model}; or use "
        "backend='general'") from e
  try:
    return spacy.load(model)
  except OSError as e:
    raise ImportError(f"spaCy is installed but its model {model!r} is not: "
                      f"python -m spacy download {model}") from e


def parse_spacy(text: str, model: str = "en_core_web_sm") -> SceneGraph:
  """A minimal dependency-parse backend: noun chunks, their modifiers, verbs and preps.

  Objects are noun-chunk roots (lemmas); attributes their adjectival and numeric
  modifiers; relations a preposition between two chunks, or a verb (plus its
  preposition) whose subject and object are chunks.

  Raises:
    ImportError: naming spaCy when it, or its English model, is not installed.
  """
  nlp = _spacy_pipeline(model)
  doc = nlp(text if isinstance(text, str) else "")
  index, objects, attributes, relations = {}, [], [], []
  for chunk in doc.noun_chunks:
    k = len(objects)
    objects.append(chunk.root.lemma_.lower())
    index[chunk.root.i] = k
    attributes += [(k, t.lower_) for t in chunk if t.dep_ in ("amod", "nummod")]

  def subject_of(verb) -> int | None:
    for child in verb.children:
      if child.dep_ in ("nsubj", "nsubjpass") and child.i in index:
        return index[child.i]
    if verb.dep_ in ("acl", "relcl") and verb.head.i in index:
      return index[verb.head.i]
    return None

  for chunk in doc.noun_chunks:
    root, o = chunk.root, index[chunk.root.i]
    if root.dep_ == "pobj" and root.head.dep_ == "prep":
      prep, gov = root.head, root.head.head
      if gov.i in index:
        relations.append((index[gov.i], prep.lower_, o))
      elif gov.pos_ in ("VERB", "AUX") and (s := subject_of(gov)) is not None:
        relations.append((s, f"{gov.lower_} {prep.lower_}", o))
    elif root.dep_ == "dobj" and (s := subject_of(root.head)) is not None:
      relations.append((s, root.head.lower_, o))
  return SceneGraph(tuple(objects), tuple(attributes),
                    tuple(r for r in relations if r[0] != r[2]))
