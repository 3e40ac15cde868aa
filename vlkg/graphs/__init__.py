"""Scene graphs of captions: the structure behind Structure-CLIP (Huang et al., AAAI 2024).

``parse(text)`` turns a caption into a ``SceneGraph`` with a rule-based parser, as
Structure-CLIP does before it builds its negatives and its triple encoder's input.
Backends:
  * ``"general"`` (default): the lexicon parser for free English captions
    (``general_parser``);
  * ``"world"``: the exact parser of the synthetic world's captions
    (``world_parser``), with canonical words;
  * ``"spacy"``: a thin dependency-parse backend; raises ImportError without spaCy.
"""

from __future__ import annotations

from vlkg.graphs.scene_graph import SceneGraph

BACKENDS = ("general", "world", "spacy")

__all__ = ["BACKENDS", "SceneGraph", "parse"]


def parse(text: str, backend: str = "general") -> SceneGraph:
  """The scene graph of ``text`` (DESIGN.md contract).

  Args:
    text: a caption.
    backend: one of ``BACKENDS``.

  Raises:
    ValueError: for an unknown backend.
    ImportError: for ``backend="spacy"`` when spaCy is not installed.
  """
  # Imported here so that importing vlkg.graphs stays cheap for code that only needs
  # SceneGraph, and the world's modules load only for the world backend.
  if backend == "general":
    from vlkg.graphs import general_parser  # pylint: disable=import-outside-toplevel
    return general_parser.parse(text)
  if backend == "world":
    from vlkg.graphs import world_parser  # pylint: disable=import-outside-toplevel
    return world_parser.parse(text)
  if backend == "spacy":
    from vlkg.graphs import spacy_parser  # pylint: disable=import-outside-toplevel
    return spacy_parser.parse_spacy(text)
  raise ValueError(f"unknown parser backend {backend!r}; expected one of {BACKENDS}")
