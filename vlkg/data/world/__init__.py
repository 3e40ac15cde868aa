"""The built-in synthetic world: scenes, renderer, captions, suites, knowledge graph."""

from __future__ import annotations

import ml_collections


def settings(config) -> ml_collections.ConfigDict:
  """What the world's builder reads: ``config.world`` and the image size.

  The world renders at the size the model reads, ``config.model.image_size``; it
  has no size of its own, so that one key sets the input size for every dataset.
  """
  out = ml_collections.ConfigDict(config.world.to_dict())
  out.image_size = config.model.image_size
  return out
