"""CLIP weights in and out without torch: the key/shape map, the file readers, the
import and export tools and vlkg.api on an imported model (tiny architectures)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import struct
import sys
import zipfile

import jax
import ml_collections
import ml_dtypes
import numpy as np
import pytest
from PIL import Image

from vlkg import api, checkpoint, preprocess
from vlkg.convert import open_clip as convert
from vlkg.convert import readers
from vlkg.models import clip_archs, two_towers
from vlkg.tools import export, import_clip

# 16 px images in 8 px patches, two towers of one block each; its BPE vocabulary is
# the 518-id one of tests/data/test_clip_bpe.py.
TINY = clip_archs.ClipArch(
    name="tiny", embed_dim=6, image_size=16, patch_size=8, vision_width=8,
    vision_layers=1, vision_heads=2, text_width=8, text_layers=2, text_heads=2,
    context_length=7, vocab_size=518, quick_gelu=True)


def random_state_dict(arch, seed=0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  sd = {e.torch_key: rng.normal(size=e.torch_shape).astype(np.float32)
        for e in convert.layout(arch)}
  sd["logit_scale"] = np.asarray(np.log(1 / 0.07), np.float32)
  return sd


def zero_copy(shape):
  """A read-only array of ``shape`` that allocates one element (for L/14 shapes)."""
  return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape, [0] * len(shape))


@pytest.mark.parametrize("name", sorted(clip_archs.ARCHS))
def test_layout_matches_the_flax_model(name):
  arch = clip_archs.ARCHS[name]
  config = ml_collections.ConfigDict({"model": clip_archs.model_config(arch)})
  module = two_towers.build_model(config)
  abstract = jax.eval_shape(lambda r: module.init(
      r, np.zeros((1, 224, 224, 3), np.float32), np.zeros((1, 77), np.int32))["params"],
      jax.random.key(0))
  want = {k: tuple(v.shape) for k, v in checkpoint.flatten_params(abstract).items()}
  got = {e.vlkg_key: e.to_vlkg(zero_copy(e.torch_shape)).shape
         for e in convert.layout(arch)}
  got["logit_bias"] = ()
  assert got == want
  text = config.model.text
  assert (text.act == "quick_gelu") == name.endswith("quickgelu")
  assert (text.mask_pad, text.eot_id, text.vocab_size) == (False, 49407, 49408)


def test_arch_table():
  b32, l14 = clip_archs.ARCHS["ViT-B-32"], clip_archs.ARCHS["ViT-L-14-quickgelu"]
  assert (b32.vision_width, b32.vision_heads, b32.text_heads, b32.embed_dim) == (768, 12, 8, 512)
  assert (l14.vision_layers, l14.vision_heads, l14.text_width, l14.grid) == (24, 16, 768, 16)
  with pytest.raises(ValueError, match="RN50"):
    clip_archs.get_arch("RN50")


def test_state_dict_round_trip_is_identity():
  sd = random_state_dict(TINY)
  params = convert.to_vlkg(sd, TINY)
  assert params["logit_bias"] == 0 and params["img/conv1/kernel"].shape == (8, 8, 3, 8)
  back = convert.from_vlkg(params, TINY)
  assert sorted(back) == sorted(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
  # Nested params and a DDP "module." prefix work the same.
  prefixed = {"module." + k: v for k, v in sd.items()}
  again = convert.to_vlkg(prefixed, TINY)
  for k in params:
    np.testing.assert_array_equal(again[k], params[k])
  nested = convert.from_vlkg(checkpoint.unflatten_params(params), TINY)
  np.testing.assert_array_equal(nested["visual.proj"], sd["visual.proj"])


def test_transforms_are_the_torch_layouts():
  sd = random_state_dict(TINY)
  p = convert.to_vlkg(sd, TINY)
  w = sd["visual.conv1.weight"]  # [out, in, kh, kw]
  assert p["img/conv1/kernel"][1, 2, 0, 5] == w[5, 0, 1, 2]
  q = sd["transformer.resblocks.1.attn.in_proj_weight"]  # [3W, W]
  assert p["txt/transformer/resblocks_1/attn/in_proj/kernel"][3, 17] == q[17, 3]
  f = sd["visual.transformer.resblocks.0.mlp.c_fc.weight"]
  np.testing.assert_array_equal(p["img/transformer/resblocks_0/mlp/c_fc/kernel"], f.T)
  np.testing.assert_array_equal(p["txt/ln_final/scale"], sd["ln_final.weight"])
  np.testing.assert_array_equal(p["txt/token_embedding/embedding"],
                                sd["token_embedding.weight"])


def test_mismatches_name_the_keys():
  sd = random_state_dict(TINY)
  bad = dict(sd)
  bad["visual.ln_post.weight"] = np.zeros(9, np.float32)
  with pytest.raises(convert.StateDictMismatchError,
                     match=r"visual\.ln_post\.weight: expected \(8,\), got \(9,\)"):
    convert.to_vlkg(bad, TINY)
  missing = {k: v for k, v in sd.items() if k != "text_projection"}
  with pytest.raises(convert.StateDictMismatchError, match="missing keys.*\n.*text_projection"):
    convert.to_vlkg(missing, TINY)
  with pytest.raises(convert.StateDictMismatchError, match="unexpected keys.*\n.*visual.head"):
    convert.to_vlkg(dict(sd, **{"visual.head": np.zeros(2)}), TINY)
  # Weights of a bigger model: the message says what they look like.
  with pytest.raises(convert.StateDictMismatchError, match="suggest: .*width 8 x 1 layers"):
    convert.to_vlkg(sd, dataclasses.replace(TINY, vision_layers=2))
  # OpenAI's hyper-parameter entries are checked, not loaded.
  convert.to_vlkg(dict(sd, input_resolution=np.asarray(16), vocab_size=np.asarray(518)),
                  TINY)
  with pytest.raises(convert.StateDictMismatchError, match="input_resolution: expected 16"):
    convert.to_vlkg(dict(sd, input_resolution=np.asarray(224)), TINY)
  params = convert.to_vlkg(sd, TINY)
  with pytest.raises(convert.StateDictMismatchError, match="missing params.*\n.*img/proj"):
    convert.from_vlkg({k: v for k, v in params.items() if k != "img/proj"}, TINY)


def test_infer_arch():
  inferred = convert.infer_arch(random_state_dict(TINY), TINY)
  assert inferred == TINY


# --- readers -----------------------------------------------------------------


def handmade_safetensors(path, tensors):
  """Writes the format by hand: u64 header size, JSON header, raw bytes."""
  header, body = {"__metadata__": {"format": "pt"}}, b""
  for name, (kind, array) in tensors.items():
    raw = array.tobytes()
    header[name] = {"dtype": kind, "shape": list(array.shape),
                    "data_offsets": [len(body), len(body) + len(raw)]}
    body += raw
  text = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + body)


def test_safetensors_reader_and_writer(tmp_path):
  rng = np.random.default_rng(0)
  f32 = rng.normal(size=(3, 4)).astype(np.float32)
  f16 = rng.normal(size=(5,)).astype(np.float16)
  bf16 = rng.normal(size=(2, 2)).astype(ml_dtypes.bfloat16)
  path = str(tmp_path / "w.safetensors")
  handmade_safetensors(path, {"a": ("F32", f32), "b": ("F16", f16), "c": ("BF16", bf16),
                              "s": ("F32", np.asarray(2.5, np.float32))})
  got = readers.read_checkpoint(path)
  np.testing.assert_array_equal(got["a"], f32)
  assert got["b"].dtype == np.float16 and np.array_equal(got["b"], f16)
  assert got["c"].dtype == ml_dtypes.bfloat16 and np.array_equal(got["c"], bf16)
  assert got["s"].shape == () and got["s"] == 2.5
  out = readers.write_safetensors(str(tmp_path / "x.safetensors"), got)
  (n,) = struct.unpack("<Q", open(out, "rb").read(8))
  assert (8 + n) % 8 == 0  # tensor data aligned
  again = readers.read_safetensors(out)
  for k in got:
    np.testing.assert_array_equal(again[k], got[k])
  handmade_safetensors(path, {"q": ("F8_E4M3", np.zeros(2, np.uint8))})
  with pytest.raises(readers.CheckpointFormatError, match="'q'.*F8_E4M3"):
    readers.read_checkpoint(path)


def test_safetensors_writer_layouts_and_errors(tmp_path):
  # A transposed (non-contiguous) and a big-endian array come back as the values.
  m = np.arange(6, dtype=np.float32).reshape(2, 3)
  path = readers.write_safetensors(
      str(tmp_path / "l.safetensors"),
      {"t": m.T, "be": np.arange(3, dtype=">i4"), "flag": np.array([True, False])},
      metadata={"format": "pt"})
  got = readers.read_safetensors(path)
  np.testing.assert_array_equal(got["t"], [[0, 3], [1, 4], [2, 5]])
  assert got["be"].dtype == np.int32 and list(got["be"]) == [0, 1, 2]
  assert got["flag"].dtype == np.bool_ and list(got["flag"]) == [True, False]
  with pytest.raises(ValueError, match="'s'.*<U1"):
    readers.write_safetensors(str(tmp_path / "bad.safetensors"), {"s": np.array(["a"])})
  assert not (tmp_path / "bad.safetensors").exists()
  with open(tmp_path / "cut.safetensors", "wb") as f:
    f.write(open(path, "rb").read()[:-4])
  with pytest.raises(readers.CheckpointFormatError, match="cut.safetensors"):
    readers.read_checkpoint(str(tmp_path / "cut.safetensors"))


def _pickle_str(s: str) -> bytes:
  raw = s.encode()
  return b"X" + struct.pack("<I", len(raw)) + raw


def _pickle_int(i: int) -> bytes:
  return b"J" + struct.pack("<i", i)


def _pickle_global(module: str, name: str) -> bytes:
  return b"c" + f"{module}\n{name}\n".encode()


def _pickle_tuple(items) -> bytes:
  return b"(" + b"".join(items) + b"t"


def handmade_torch_zip(path, tensors, extra_global=None):
  """A torch.save-format zip written opcode by opcode: data.pkl is a dict of
  ``_rebuild_tensor_v2(persistent storage, offset, size, stride, ...)`` calls."""
  storage_class = {np.float32: "FloatStorage", np.float16: "HalfStorage"}
  pkl, files = b"\x80\x02}(", {}
  for key, (name, array, offset, size, stride) in enumerate(tensors):
    files[f"archive/data/{key}"] = array.tobytes()
    pid = _pickle_tuple([_pickle_str("storage"),
                         _pickle_global("torch", storage_class[array.dtype.type]),
                         _pickle_str(str(key)), _pickle_str("cpu"),
                         _pickle_int(array.size)]) + b"Q"
    args = _pickle_tuple([pid, _pickle_int(offset),
                          _pickle_tuple(map(_pickle_int, size)),
                          _pickle_tuple(map(_pickle_int, stride)), b"\x89",
                          _pickle_global("collections", "OrderedDict") + b")R"])
    pkl += _pickle_str(name) + _pickle_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"
  if extra_global:
    pkl += _pickle_str("evil") + _pickle_global(*extra_global) + b")R"
  pkl += b"u."
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", pkl)
    z.writestr("archive/byteorder", "little")
    for name, raw in files.items():
      z.writestr(name, raw)


def test_torch_zip_reader_without_torch(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # prove torch is not needed
  storage = np.arange(12, dtype=np.float32)
  half = np.arange(4, dtype=np.float16) / 4
  path = str(tmp_path / "state.pt")
  handmade_torch_zip(path, [
      ("w", storage, 0, (3, 4), (4, 1)),
      ("w_t", storage, 0, (4, 3), (1, 4)),  # a transposed view of the same storage
      ("tail", storage, 10, (2,), (1,)),
      ("h", half, 0, (2, 2), (2, 1)),
      ("scalar", storage, 5, (), ()),
  ])
  got = readers.read_checkpoint(path)
  np.testing.assert_array_equal(got["w"], storage.reshape(3, 4))
  np.testing.assert_array_equal(got["w_t"], storage.reshape(3, 4).T)
  np.testing.assert_array_equal(got["tail"], [10, 11])
  assert got["h"].dtype == np.float16 and np.array_equal(got["h"], half.reshape(2, 2))
  assert got["scalar"].shape == () and got["scalar"] == 5
  # Anything but tensors is refused, naming the global.
  handmade_torch_zip(path, [("w", storage, 0, (12,), (1,))], extra_global=("os", "system"))
  with pytest.raises(readers.CheckpointFormatError, match="os.system"):
    readers.read_checkpoint(path)


def test_torchscript_without_torch_says_what_to_do(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)
  path = str(tmp_path / "ViT-B-32.pt")
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("ViT-B-32/data.pkl", b"\x80\x02}.")
    z.writestr("ViT-B-32/code/__torch__/model.py", "")
    z.writestr("ViT-B-32/constants.pkl", b"")
  assert readers.is_torchscript(path)
  with pytest.raises(readers.CheckpointFormatError, match="install torch"):
    readers.read_checkpoint(path)
  with pytest.raises(FileNotFoundError, match="nothing.pt"):
    readers.read_checkpoint(str(tmp_path / "nothing.pt"))


# --- the tools and vlkg.api ---------------------------------------------------------


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  root = tmp_path_factory.mktemp("import")
  vocab = root / "tiny_vocab.txt.gz"
  with gzip.open(vocab, "wt", encoding="utf-8") as f:
    f.write("#version: 0.2\nl l\nh e\nhe ll\nhell o</w>\n")
  sd = random_state_dict(TINY)
  ckpt = str(root / "tiny.safetensors")
  readers.write_safetensors(ckpt, sd)
  out = import_clip.import_clip(ckpt, TINY, str(root / "run"), bpe=str(vocab))
  return sd, out


def test_import_writes_a_loadable_run(imported):
  sd, out = imported
  config = json.load(open(os.path.join(out, "config.json")))
  assert config["method"] == "clip" and config["model"]["image_size"] == 16
  assert "image_size" not in config["world"] and "image_size" not in config["input"]
  assert config["input"]["text_len"] == 7
  assert config["tokenizer"]["type"] == "clip_bpe"
  assert config["tokenizer"]["vocab_path"] == "tiny_vocab.txt.gz"  # copied beside
  assert os.path.exists(os.path.join(out, "tiny_vocab.txt.gz"))
  flat = checkpoint.load_params_npz(os.path.join(out, "params.npz"))
  np.testing.assert_array_equal(flat["img/proj"], sd["visual.proj"])

  model = api.load(out)
  assert model.image_size == 16
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 20, 24, 3), dtype=np.uint8)
  zi = model.encode_images(images)
  zt = model.encode_texts(["hello", "hell!"])
  assert zi.shape == (2, 6) and zt.shape == (2, 6)
  np.testing.assert_allclose(np.linalg.norm(zi, axis=1), 1, atol=1e-5)
  np.testing.assert_array_equal(model.tokenizer.encode(["hello"])[0], [516, 515, 517, 0, 0, 0, 0])


def test_model_init_from_an_imported_run(imported):
  # config.model_init=DIR loads params.npz through train._init_from_npz, which checks
  # every key and shape against a fresh model with load_params_npz(expected=...);
  # done here directly, so the test does not import the trainer's TensorFlow.
  from vlkg import methods
  _, out = imported
  config = ml_collections.ConfigDict(json.load(open(os.path.join(out, "config.json"))))
  assert checkpoint.resolve_init(str(out) + "_fresh", "", out) == (
      "model_init", os.path.join(out, "params.npz"))
  module = methods.build_model(config)
  fresh = methods.abstract_params(module, config)
  loaded = checkpoint.load_params_npz(os.path.join(out, "params.npz"), expected=fresh)
  assert sorted(loaded) == sorted(checkpoint.flatten_params(fresh))


def test_export_open_clip_safetensors_round_trip(imported, tmp_path, monkeypatch):
  sd, out = imported
  path = export.export(out, out=str(tmp_path / "tiny.safetensors"), fmt="open_clip")
  back = readers.read_checkpoint(path)
  assert sorted(back) == sorted(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match="safetensors"):
    export.export(out, out=str(tmp_path / "tiny.pt"), fmt="open_clip")


def test_export_open_clip_leaves_out_method_modules(imported, tmp_path):
  """A Structure-CLIP or LOUPE run holds modules open_clip has no place for
  (kee/, shapley/, region_head/): the export keeps the two towers only."""
  import shutil
  sd, out = imported
  run = tmp_path / "method_run"
  shutil.copytree(out, run)
  flat = checkpoint.load_params_npz(os.path.join(run, "params.npz"))
  flat["kee/encoder/dense/kernel"] = np.ones((2, 3), np.float32)
  checkpoint.save_params_npz(os.path.join(run, "params.npz"),
                             checkpoint.unflatten_params(flat))
  path = export.export(str(run), out=str(tmp_path / "m.safetensors"), fmt="open_clip")
  back = readers.read_checkpoint(path)
  assert sorted(back) == sorted(sd)


def test_export_refuses_non_clip_models():
  model = clip_archs.model_config("ViT-B-32")
  model["image"]["stem"] = "conv"
  with pytest.raises(ValueError, match="image.stem"):
    convert.arch_from_model_config(model)


def test_resize_matches_torchvision_semantics():
  rng = np.random.default_rng(0)
  # Shorter side already 224: no resampling; the crop offset is round(111 / 2) = 56
  # (half to even), where a floor would give 55.
  wide = rng.integers(0, 256, (1, 224, 335, 3), dtype=np.uint8)
  np.testing.assert_array_equal(preprocess.resize(wide, 224)[0], wide[0, :, 56:280])
  # 225 x 300 -> 224 x int(298.67) = 298 (truncated, not rounded to 299), then
  # round(74 / 2) = 37 columns off the left.
  im = rng.integers(0, 256, (1, 225, 300, 3), dtype=np.uint8)
  want = np.asarray(Image.fromarray(im[0]).resize((298, 224), Image.BICUBIC))[:, 37:261]
  np.testing.assert_array_equal(preprocess.resize(im, 224)[0], want)
  tall = rng.integers(0, 256, (1, 300, 225, 3), dtype=np.uint8)
  want = np.asarray(Image.fromarray(tall[0]).resize((224, 298), Image.BICUBIC))[37:261]
  np.testing.assert_array_equal(preprocess.resize(tall, 224)[0], want)
