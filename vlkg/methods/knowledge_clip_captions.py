"""Knowledge-CLIP's "CLIP + KG" ablation: the same triplets, written as captions.

Pan et al., "Contrastive Language-Image Pre-Training with Knowledge Graphs",
NeurIPS 2022, ablation study: "CLIP + KG" fine-tunes CLIP on the knowledge-graph
triplets written as captions, with no fusion encoder and none of E2E, E2R, G2E;
the full framework beats it. ``knowledge_clip.mode="captions"`` trains that
ablation on the very triplet batches of the full method (the same ``kg_draw``
draws, the same groups and counts), so that the two differ only in how a triplet
enters the loss. Each triplet becomes one pair of CLIP's contrastive loss, the
relation written on its text side, as it reads with the image's side left out
(an image entity has no words of its own, and its stored description would give
the answer away):

* ``text_text`` (h, r, t): the text "h r" with the text "t", both by the text
  tower ("scarlet alias of" / "red");
* ``mixed`` with a text head (h, r, image): the text "h r" with the image ("<the
  caption> is a caption of" / the scene);
* ``mixed`` with an image head (image, r, t): the image with the text "r t" ("has
  color red", "is a square", "is an image of dog");
* ``image_image`` (image, r, image): the head image with the tail image, both by
  the image tower; no side has words, so the relation is not written (set
  ``kg_image_image=0`` to leave these pairs out).

The writing of a text head is the KG evaluator's query "h r"
(``vlkg.evaluators.kg``), so the ablation trains what that evaluation asks. Each
group is a CLIP batch of its own (``knowledge_clip_loss.pair_nce``, CLIP's learned
logit scale); a pair's duplicates in the step (the same caption, the same entity:
"has color red" with several red objects) are left out of its softmax, as E2E
leaves them out, since they are true pairs, not negatives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vlkg import preprocess
from vlkg.data import kg_table
from vlkg.methods import knowledge_clip_loss as L

Array = jax.Array
GROUPS = kg_table.GROUPS


def writings(table: kg_table.Table) -> np.ndarray:
  """[T] str: each triplet's caption (module docstring), "" for image-image ones."""
  h, r, t = table.triplets[:, 0], table.triplets[:, 1], table.triplets[:, 2]
  text, rel, image = table.entity_text, table.relations, table.is_image
  out = []
  for k in range(len(table.triplets)):
    if image[h[k]] and image[t[k]]:
      out.append("")
    elif image[h[k]]:
      out.append(f"{rel[r[k]]} {text[t[k]]}")
    else:
      out.append(f"{text[h[k]]} {rel[r[k]]}")
  return np.array(out, dtype=str)


def constants(table: kg_table.Table, tokenizer, *, length: int) -> dict[str, np.ndarray]:
  """The table as the captions-mode step reads it (numpy; held on device by the
  trainer): each distinct caption's token ids at ``length`` and each triplet's
  caption id (a knowledge graph repeats its captions: "is an image of dog" for
  every image of a dog), the text entities' token ids at ``length``, the images,
  the training triplets of each group."""
  captions, caption_id = np.unique(writings(table), return_inverse=True)
  text = np.where(table.is_image, "", table.entity_text)
  out = {"triplets": table.triplets.astype(np.int32),
         "is_image": table.is_image,
         "entity_image": np.maximum(table.entity_image, 0).astype(np.int32),
         "entity_tokens": kg_table.text_ids(text, tokenizer, length),
         "caption_tokens": kg_table.text_ids(captions, tokenizer, length),
         "caption_id": caption_id.astype(np.int32).reshape(-1),
         "images": table.images}
  for g in GROUPS:
    out[f"train_{g}"] = table.training(g).astype(np.int32)
  return out


def _rows(c, draws: Array, g: str, n: int) -> Array:
  train = c[f"train_{g}"]
  return train[draws[:n, GROUPS.index(g)] % train.shape[0]]


def forward(module, images: Array, texts: Array, draws: Array, c: dict,
            n: dict[str, int]) -> dict:
  """The batch's embeddings and each group's pairs (``model.apply(method=forward)``
  on the two towers).

  The text tower runs once on the batch's captions and once on the triplets'
  captions with the text-text tails; the image tower once on the batch's images
  with the triplets' images.

  Args:
    module: the bound ``TwoTowers``.
    images: [B, H, W, 3] normalised batch images; texts: [B, L] their captions.
    draws: [B, 3] int32, the batch's ``kg_draw``.
    c: ``constants``.
    n: triplets per group (``knowledge_clip_step.counts``).

  Returns:
    ``zimg``, ``ztxt``, the scalars and, when a group has triplets, ``pairs``:
    group -> (a [n, D], b [n, D], a_ids [n], b_ids [n]), the two sides' unit
    embeddings and the ids that tell duplicates (caption ids, entity ids).
  """
  c = jax.tree.map(jnp.asarray, c)
  out = dict(module.scalars())
  out["ztxt"] = module.embed_texts(texts)
  sides = {}  # group -> (side a, side b), each (kind, rows of its kind's array, ids)
  for g in GROUPS:
    if not n[g]:
      continue
    rows = _rows(c, draws, g, n[g])
    h, t = c["triplets"][rows, 0], c["triplets"][rows, 2]
    caption = ("caption", c["caption_id"][rows], c["caption_id"][rows])
    if g == "text_text":
      sides[g] = (caption, ("text", t, t))
    elif g == "mixed":
      image = jnp.where(c["is_image"][h], h, t)
      sides[g] = (caption, ("image", image, image))
    else:
      sides[g] = (("image", h, h), ("image", t, t))
  if not sides:
    out["zimg"] = module.embed_images(images)
    return out

  token_rows = {"caption": c["caption_tokens"], "text": c["entity_tokens"]}
  text_parts = [(g, s) for g in sides for s in (0, 1) if sides[g][s][0] != "image"]
  image_parts = [(g, s) for g in sides for s in (0, 1) if sides[g][s][0] == "image"]
  z = {}
  if text_parts:
    tokens = jnp.concatenate([token_rows[sides[g][s][0]][sides[g][s][1]]
                              for g, s in text_parts])
    zt = module.embed_texts(tokens)
    offset = 0
    for g, s in text_parts:
      z[g, s] = zt[offset:offset + n[g]]
      offset += n[g]
  b = images.shape[0]
  if image_parts:
    ids = jnp.concatenate([sides[g][s][1] for g, s in image_parts])
    pixels = preprocess.normalize_images(c["images"][c["entity_image"][ids]])
    zi = module.embed_images(jnp.concatenate([images, pixels.astype(images.dtype)]))
    out["zimg"] = zi[:b]
    offset = b
    for g, s in image_parts:
      z[g, s] = zi[offset:offset + n[g]]
      offset += n[g]
  else:
    out["zimg"] = module.embed_images(images)
  out["pairs"] = {g: (z[g, 0], z[g, 1], sides[g][0][2], sides[g][1][2]) for g in sides}
  return out


def pairs_loss(pairs: dict, scale: Array) -> tuple[Array, Array]:
  """CLIP's loss on the triplets: each group's ``pair_nce``, averaged over the
  groups weighted by their pairs (every triplet counts the same); (loss, the
  retrieval accuracy of both directions)."""
  total = sum(v[0].shape[0] for v in pairs.values())
  loss = acc = jnp.zeros((), jnp.float32)
  for a, b, a_ids, b_ids in pairs.values():
    l, hit = L.pair_nce(a, b, a_ids, b_ids, scale)
    loss += l * a.shape[0] / total
    acc += hit * a.shape[0] / total
  return loss, acc
