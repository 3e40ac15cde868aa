"""Imports pretrained OpenAI / open_clip CLIP weights as a vlkg run directory.

    python -m vlkg.tools.import_clip --checkpoint FILE --arch ViT-B-32 \\
        [--bpe bpe_simple_vocab_16e6.txt.gz] --out DIR

FILE is a ``.safetensors`` file, a ``torch.save`` state dict (``.pt`` / ``.bin``,
read without torch), or one of OpenAI's TorchScript archives (read with torch). The
architecture names are open_clip's (``vlkg.models.clip_archs.ARCHS``); the weights'
shapes are checked against it key by key. OpenAI's own archives were trained with
QuickGELU, so for them a plain name is switched to its ``-quickgelu`` twin.

DIR gets what a finished run has (DESIGN.md contract):

* ``params.npz``: '/'-joined vlkg parameter paths;
* ``config.json``: a full run config of the CLIP method at the ``vit_b32`` preset
  (``vlkg.config.get_config("clip", "vit_b32")``, what ``configs/clip.py:vit_b32``
  gives) with the model of the architecture, its ``model.image_size`` (224),
  ``input.text_len`` 77 and, with ``--bpe``, the CLIP BPE tokenizer's description
  (the vocabulary is copied beside it). Without ``--bpe`` the config has no
  tokenizer, and ``vlkg.api`` embeds images and token ids only.

so that ``vlkg.api.load(DIR)`` embeds images and captions as CLIP does, and
``--config.model_init=DIR`` starts a run from these weights. That run's
``config.model`` must have the same shapes and the CLIP text conventions, i.e. the
``vit_b32`` preset with ``model.text.vocab_size=49408`` and
``model.text.eot_id=49407`` (the preset's eot_id 3 is the sentencepiece one), and
captions tokenised with the same BPE. The imported ``model.text.mask_pad=False``
(open_clip masks no pad keys; id 0 is "!") changes no shapes; without it a caption
containing "!" embeds slightly differently from open_clip.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import app, flags, logging
import jax

from vlkg import checkpoint, config as config_lib, console, files
from vlkg.convert import open_clip as convert
from vlkg.convert import readers
from vlkg.data import clip_bpe
from vlkg.files import atomic_write
from vlkg.models import clip_archs

CONFIG_FILE = "config.json"


def run_config(arch: clip_archs.ClipArch, tokenizer: dict | None) -> dict:
  """The config.json of an imported model: the CLIP method's vit_b32 config with
  ``arch``'s model (its image size included) and context length."""
  config = json.loads(config_lib.get_config("clip", "vit_b32").to_json())
  config["model"] = clip_archs.model_config(arch)
  config["input"]["text_len"] = arch.context_length
  if tokenizer is not None:
    config["tokenizer"] = tokenizer
  return config


def import_clip(checkpoint_path: str, arch: str | clip_archs.ClipArch, out: str,
                bpe: str | None = None) -> str:
  """Converts ``checkpoint_path`` into the run directory ``out``; returns ``out``.

  Raises:
    FileNotFoundError: the checkpoint or the vocabulary is missing.
    readers.CheckpointFormatError: the file cannot be read (e.g. TorchScript
      without torch); the message says what to do.
    convert.StateDictMismatchError: the weights do not fit ``arch``; the message
      names every offending key.
  """
  a = clip_archs.get_arch(arch)
  if readers.is_torchscript(checkpoint_path) and not a.quick_gelu:
    quick = a.name + "-quickgelu"
    logging.warning("%s is an OpenAI TorchScript archive, trained with QuickGELU; "
                    "importing as %s instead of %s", checkpoint_path, quick, a.name)
    a = dataclasses.replace(a, name=quick, quick_gelu=True)
  state_dict = readers.read_checkpoint(checkpoint_path)
  params = convert.to_vlkg(state_dict, a)

  files.makedirs(out)
  tokenizer = None
  if bpe is not None:
    name = os.path.basename(bpe)
    target = os.path.join(out, name)
    if files.abspath(bpe) != files.abspath(target):
      files.copyfile(bpe, target)
    desc = clip_bpe.ClipBpeTokenizer(target, a.context_length).describe()
    tokenizer = dict(desc, vocab_path=name)  # relative: the directory can move
  checkpoint.save_params_npz(os.path.join(out, checkpoint.PARAMS_NPZ),
                             checkpoint.unflatten_params(params))
  atomic_write(os.path.join(out, CONFIG_FILE),
               json.dumps(run_config(a, tokenizer), indent=1, sort_keys=True))
  logging.info("imported %s (%s, %d arrays) into %s", checkpoint_path, a.name,
               len(params), out)
  return out


def _define_flags() -> None:
  flags.DEFINE_string("checkpoint", None, "CLIP weights: .safetensors, .pt/.bin state "
                      "dict, or an OpenAI TorchScript .pt.")
  flags.DEFINE_enum("arch", None, sorted(clip_archs.ARCHS), "open_clip model name.")
  flags.DEFINE_string("bpe", None, "bpe_simple_vocab_16e6.txt.gz, for encode_texts.")
  flags.DEFINE_string("out", None, "Directory to write params.npz and config.json to.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  print(import_clip(f.checkpoint, f.arch, f.out, f.bpe))


if __name__ == "__main__":
  jax.config.update("jax_platforms", "cpu")
  _define_flags()
  flags.mark_flags_as_required(["checkpoint", "arch", "out"])
  console.run(main)
