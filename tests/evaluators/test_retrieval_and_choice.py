"""Retrieval metrics against hand-worked ranks and a brute-force reference; the
binary-choice scorer, its caching, the three tie rules and the image loader."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vlkg.data.benchmarks import order
from vlkg.evaluators import binary_choice, common, retrieval


def _embed(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Image/text embeddings whose dot products are exactly ``similarity`` [N, M]."""
  return np.eye(similarity.shape[0], dtype=np.float32), similarity.T.astype(np.float32)


def _brute_force(sim: np.ndarray, text_to_image: np.ndarray) -> dict[str, float]:
  """Sorts every row/column in full, as open_clip's get_clip_metrics does.

  Only valid without ties; an image's position is its first own caption's.
  """
  n, m = sim.shape
  i2t, t2i = [], []
  for i in range(n):
    ranking = list(np.argsort(-sim[i], kind="stable"))
    i2t.append(min(ranking.index(j) for j in range(m) if text_to_image[j] == i))
  for j in range(m):
    ranking = list(np.argsort(-sim[:, j], kind="stable"))
    t2i.append(ranking.index(text_to_image[j]))
  out = {}
  for name, preds in (("image_to_text", np.array(i2t)),
                      ("text_to_image", np.array(t2i))):
    out[f"{name}_mean_rank"] = preds.mean() + 1
    out[f"{name}_median_rank"] = np.floor(np.median(preds)) + 1
    for k in (1, 5, 10):
      out[f"{name}_R@{k}"] = np.mean(preds < k)
  return out


def _assert_metrics(got: dict[str, float], want: dict[str, float]) -> None:
  assert set(got) == set(want) == set(retrieval.metric_names())
  for key in want:
    assert got[key] == pytest.approx(want[key]), key


def test_three_by_three_hand_worked():
  sim = np.array([[0.9, 0.1, 0.2],   # image 0: own caption first -> position 0
                  [0.8, 0.3, 0.5],   # image 1: 0.8 and 0.5 beat 0.3 -> position 2
                  [0.1, 0.7, 0.6]])  # image 2: 0.7 beats 0.6 -> position 1
  # Columns: caption 0 [0.9 .8 .1] -> 0; caption 1 [.1 .3 .7] -> 1; caption 2 -> 0.
  want = {
      "image_to_text_R@1": 1 / 3, "image_to_text_R@5": 1.0, "image_to_text_R@10": 1.0,
      "image_to_text_mean_rank": 2.0, "image_to_text_median_rank": 2.0,
      "text_to_image_R@1": 2 / 3, "text_to_image_R@5": 1.0, "text_to_image_R@10": 1.0,
      "text_to_image_mean_rank": 4 / 3, "text_to_image_median_rank": 1.0,
  }
  got = retrieval.retrieval_metrics(*_embed(sim), np.arange(3))
  _assert_metrics(got, want)
  _assert_metrics(got, _brute_force(sim, np.arange(3)))


def test_two_images_four_captions_uses_the_best_caption():
  sim = np.array([[0.2, 0.5, 0.6, 0.1],    # own {0, 1}: best 0.5, 0.6 beats it -> 1
                  [0.3, 0.2, 0.4, 0.8]])   # own {2, 3}: best 0.8 -> 0
  text_to_image = np.array([0, 0, 1, 1])
  # Captions: 0 [.2 .3] -> 1; 1 [.5 .2] -> 0; 2 [.6 .4] -> 1; 3 [.1 .8] -> 0.
  want = {
      "image_to_text_R@1": 0.5, "image_to_text_R@5": 1.0, "image_to_text_R@10": 1.0,
      "image_to_text_mean_rank": 1.5, "image_to_text_median_rank": 1.0,
      "text_to_image_R@1": 0.5, "text_to_image_R@5": 1.0, "text_to_image_R@10": 1.0,
      "text_to_image_mean_rank": 1.5, "text_to_image_median_rank": 1.0,
  }
  got = retrieval.retrieval_metrics(*_embed(sim), text_to_image)
  _assert_metrics(got, want)
  _assert_metrics(got, _brute_force(sim, text_to_image))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cases_match_the_brute_force_reference(seed):
  rng = np.random.default_rng(seed)
  n, k, d = 23, 3, 8  # enough images that R@5 and R@10 differ
  image_emb = rng.normal(size=(n, d)).astype(np.float32)
  text_emb = rng.normal(size=(n * k, d)).astype(np.float32)
  text_to_image = rng.permutation(np.repeat(np.arange(n), k))
  sim = image_emb.astype(np.float64) @ text_emb.T.astype(np.float64)
  _assert_metrics(retrieval.retrieval_metrics(image_emb, text_emb, text_to_image),
                  _brute_force(sim, text_to_image))


def test_even_count_median_is_floored_like_open_clip():
  # Text -> image positions 0, 1, 2, 3: np.median = 1.5, floor + 1 = 2.
  sim = np.array([[0.9, 0.8, 0.7, 0.6],
                  [0.1, 0.5, 0.8, 0.7],
                  [0.1, 0.1, 0.6, 0.8],
                  [0.1, 0.1, 0.1, 0.5]])
  got = retrieval.retrieval_metrics(*_embed(sim), np.arange(4))
  assert got["text_to_image_median_rank"] == 2.0
  assert got["text_to_image_mean_rank"] == pytest.approx(2.5)


def test_ties_count_against_the_model():
  # All embeddings equal: every competitor ties with the ground truth.
  n, k = 4, 2
  image_emb = np.ones((n, 3), np.float32) / np.sqrt(3)
  text_emb = np.ones((n * k, 3), np.float32) / np.sqrt(3)
  got = retrieval.retrieval_metrics(image_emb, text_emb, np.repeat(np.arange(n), k))
  # Image -> text: the n*k - k other captions are ahead; text -> image: n - 1 images.
  assert got["image_to_text_mean_rank"] == n * k - k + 1
  assert got["image_to_text_median_rank"] == n * k - k + 1
  assert got["text_to_image_mean_rank"] == n
  assert got["text_to_image_R@1"] == 0.0 and got["image_to_text_R@5"] == 0.0
  # One tie only: image 0's caption ties image 1's caption for image 0.
  sim = np.array([[0.5, 0.5], [0.1, 0.9]])
  got = retrieval.retrieval_metrics(*_embed(sim), np.arange(2))
  assert got["image_to_text_R@1"] == 0.5  # image 0 is at position 1, image 1 at 0


def test_retrieval_rejects_an_image_without_captions():
  with pytest.raises(ValueError, match="no caption"):
    retrieval.retrieval_metrics(np.eye(3), np.eye(3)[:2], np.array([0, 1]))
  with pytest.raises(ValueError, match="outside"):
    retrieval.retrieval_metrics(np.eye(2), np.eye(2), np.array([0, 2]))


# ----------------------------------------------------------------- tie rules


def test_aro_rule_tie_is_wrong():
  scores = np.array([[0.5, 0.5], [0.4, 0.6], [0.6, 0.4]])  # [false, true]
  np.testing.assert_array_equal(binary_choice.aro_correct(scores), [False, True, False])


def test_sugarcrepe_rule_tie_is_wrong():
  scores = np.array([[0.5, 0.5], [0.6, 0.4], [0.4, 0.6]])  # [positive, negative]
  np.testing.assert_array_equal(binary_choice.sugarcrepe_correct(scores),
                                [False, True, False])


def test_order_rule_tie_with_the_original_is_right():
  scores = np.array([[0.5, 0.5, 0.1, 0.5, 0.0],
                     [0.4, 0.6, 0.1, 0.2, 0.3],
                     [0.7, 0.2, 0.7, 0.1, 0.1],
                     [0.1, 0.1, 0.1, 0.1, 0.2]])
  correct = order.order_correct(scores)
  np.testing.assert_array_equal(correct, [True, False, True, False])
  assert correct.mean() == order.precision_at_1(scores)
  with pytest.raises(ValueError, match="NaN"):
    order.order_correct(np.array([[np.nan, 0.1]]))


# ----------------------------------------------------------------- scorer


class CountingEncoder:
  """Embeds by looking up fixed unit vectors; records every input it is given."""

  def __init__(self, image_vectors: dict[int, np.ndarray],
               text_vectors: dict[str, np.ndarray]):
    self.image_vectors, self.text_vectors = image_vectors, text_vectors
    self.images_seen: list[int] = []
    self.texts_seen: list[str] = []
    self.calls = 0

  def encode_images(self, images):
    self.calls += 1
    keys = [int(im[0, 0, 0]) for im in images]  # the first pixel names the image
    self.images_seen += keys
    return np.stack([self.image_vectors[k] for k in keys]).astype(np.float32)

  def encode_texts(self, texts):
    self.calls += 1
    self.texts_seen += list(texts)
    return np.stack([self.text_vectors[t] for t in texts]).astype(np.float32)


def _unit(*v):
  v = np.asarray(v, np.float64)
  return v / np.linalg.norm(v)


def test_choice_scores_are_cosines_and_encode_each_input_once():
  img = {1: _unit(1, 0, 0), 2: _unit(0, 1, 0)}
  txt = {"a": _unit(1, 1, 0), "b": _unit(0, 0, 1), "c": _unit(1, 0, 1)}
  enc = CountingEncoder(img, txt)
  im1 = np.full((4, 4, 3), 1, np.uint8)
  im2 = np.full((6, 5, 3), 2, np.uint8)  # a different size, so another batch shape
  images = [im1, im2, im1, im1.copy()]   # the copy has equal pixels: no re-encode
  options = [["a", "b"], ["a", "c"], ["c", "b"], ["b", "a"]]
  scores = binary_choice.choice_scores(enc, images, options, batch_size=2)
  want = np.array([[img[int(i[0, 0, 0])] @ txt[t] for t in opts]
                   for i, opts in zip(images, options)])
  np.testing.assert_allclose(scores, want, rtol=0, atol=1e-6)
  assert sorted(enc.images_seen) == [1, 2]
  assert sorted(enc.texts_seen) == ["a", "b", "c"]
  assert enc.calls == 2 + 2  # one batch per image shape; texts in 2 batches of 2

  cache = common.EmbeddingCache(enc, batch_size=8)
  binary_choice.choice_scores(enc, images, options, cache=cache)
  calls = enc.calls
  binary_choice.choice_scores(enc, [im2], [["c", "a"]], cache=cache)
  assert enc.calls == calls  # everything already cached


def test_equal_embeddings_tie_exactly():
  v = _unit(*np.random.default_rng(0).normal(size=37))  # awkward width on purpose
  names = [f"caption {i}" for i in range(9)]
  enc = CountingEncoder({i: v for i in range(5)}, {t: v for t in names})
  images = [np.full((3, 3, 3), i, np.uint8) for i in range(5)]
  options = [names[i:i + 5] for i in range(5)]
  scores = binary_choice.choice_scores(enc, images, options, batch_size=3)
  assert (scores == scores[0, 0]).all()
  assert not binary_choice.aro_correct(scores[:, :2]).any()
  assert not binary_choice.sugarcrepe_correct(scores[:, :2]).any()
  assert order.order_correct(scores).all()


def test_unnormalised_encoder_output_is_rejected():
  enc = CountingEncoder({1: np.array([2.0, 0.0])}, {"a": np.array([1.0, 0.0])})
  with pytest.raises(ValueError, match="L2-normalised.*norm 2"):
    binary_choice.choice_scores(enc, [np.ones((2, 2, 3), np.uint8)], [["a"]])


def test_ragged_options_are_rejected():
  enc = CountingEncoder({}, {})
  with pytest.raises(ValueError, match="different numbers of options"):
    binary_choice.choice_scores(enc, [np.ones((2, 2, 3), np.uint8)] * 2,
                                [["a", "b"], ["a"]])


# ----------------------------------------------------------------- image loader


def test_load_image_reads_rgb_and_names_bad_files(tmp_path):
  grey = tmp_path / "grey.png"
  Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).save(grey)
  image = binary_choice.load_image(grey)
  assert image.shape == (3, 4, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[..., 0], np.arange(12).reshape(3, 4))

  missing = tmp_path / "nope.jpg"
  with pytest.raises(FileNotFoundError, match="nope.jpg"):
    binary_choice.load_image(missing)
  assert binary_choice.load_image(missing, missing_ok=True) is None

  corrupt = tmp_path / "corrupt.png"
  corrupt.write_bytes(grey.read_bytes()[:20])
  with pytest.raises(binary_choice.ImageLoadError, match="corrupt.png"):
    binary_choice.load_image(corrupt, missing_ok=True)
