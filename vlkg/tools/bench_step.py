"""``bench step``: the training step's time, FLOPs, MFU, and a PyTorch peer.

FLOPs come from XLA's cost analysis of the compiled update step (forward, backward
and optimizer). MFU is achieved FLOP/s over this machine's *measured* f32 matmul
peak (a large jnp.dot timed the same way), not a datasheet number.

The PyTorch peers (``--peer``, or ``--peer transformers open_clip`` to name them)
are Hugging Face transformers' ``CLIPModel`` and open_clip's ``CLIP``
(``vlkg.tools.bench_open_clip``) with the same widths, depths, heads, patch size,
sequence length, vocabulary, batch and AdamW, timed on the same machine (open_clip's
step in alternation with vlkg's); each runs only when torch and its package import.
``peer_speedup`` is against the fastest.

For a method other than CLIP, CLIP's step on the same towers and batch is timed in
alternation with the method's (``--ratio``, on by default), and ``step_ratio`` is
the method's median over CLIP's: a ratio measured this way survives a machine whose
load changes during the run.
"""

from __future__ import annotations

import statistics

import jax
import jax.numpy as jnp
import numpy as np

from vlkg.tools import timing
from vlkg.tools.timing import median_seconds


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
  """Measured f32 matmul FLOP/s of this machine's default JAX device."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  seconds = median_seconds(lambda: f(a).block_until_ready(), repeats, warmup=2)
  return 2 * n**3 / seconds


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", 0.0))


def synthetic_batch(config, vocab_size: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  b, s, l = config.input.batch_size, config.model.image_size, config.input.text_len
  text = rng.integers(4, vocab_size, size=(b, l)).astype(np.int32)
  text[:, -1] = 3
  return {"image": rng.integers(0, 256, size=(b, s, s, 3)).astype(np.uint8), "text": text}


def clip_config(config):
  """``config`` with CLIP as the method: the same towers, batch and optimizer."""
  import ml_collections
  data = config.to_dict()
  data.pop(config.method, None)  # the method's own section
  data["method"] = "clip"
  return ml_collections.ConfigDict(data)


class _Stepper:
  """A compiled update step with its own state, run two steps per call.

  Two consecutive steps per sample: a method with work on alternate steps (LOUPE's
  tsim_every=2) is timed at its mean cost, not at one of its two.
  """

  def __init__(self, config, host_batch, devices=None):
    from vlkg import sharding, train
    trainer = train.Trainer(config, devices=devices)
    self.state = trainer.init_state()
    self.batch = sharding.global_batch(host_batch, trainer.mesh)
    self.compiled = trainer.update_step.lower(self.state, self.batch).compile()
    # XLA's cost analysis counts one device's program; the step runs on them all.
    self.flops = _flops(self.compiled) * trainer.mesh.size

  def __call__(self):
    for _ in range(2):
      self.state, m = self.compiled(self.state, self.batch)
    jax.block_until_ready(m["loss"])


PEERS = ("transformers", "open_clip")


def selected_peers(peer) -> tuple[str, ...]:
  """The peers to time: ``True`` is all of ``PEERS``, a sequence names some."""
  if isinstance(peer, bool) or peer is None:
    return PEERS if peer else ()
  unknown = [p for p in peer if p not in PEERS]
  if unknown:
    raise ValueError(f"unknown peer(s) {unknown}; expected some of {PEERS}")
  return tuple(peer)


def run(config, repeats: int, peer, ratio: bool = True, peer_compile: bool = False) -> dict:
  """Times ``config``'s training step; with ``ratio``, a method other than CLIP is
  timed in alternation with CLIP's step on the same towers and batch, and its
  cost is reported as a multiple of CLIP's (``step_ratio``)."""
  from vlkg import methods, train
  from vlkg.data import input_pipeline, prepare
  dataset_dir = prepare.ensure_prepared(config)
  config = train.resolve_config(config, dataset_dir)
  # A real batch of every field the method reads (scene-graph negatives, phrase
  # spans, MosaiCLIP's texts), so each method's step is timed on what it trains on.
  host_batch = next(input_pipeline.train_iterator(
      dataset_dir, batch_size=config.input.batch_size, seed=0,
      fields=methods.batch_keys(config), shuffle_buffer=1000))
  steppers = {"method": _Stepper(config, host_batch)}
  with_clip = ratio and config.method != "clip"
  if with_clip:
    clip_batch = {k: host_batch[k] for k in ("image", "text")}
    steppers["clip"] = _Stepper(clip_config(config), clip_batch)
  # open_clip's step joins the alternation (two steps a sample, as vlkg's).
  alternating = {}
  if "open_clip" in selected_peers(peer):
    from vlkg.tools import bench_open_clip
    made = bench_open_clip.prepare_step(
        config, {k: host_batch[k] for k in ("image", "text")}, peer_compile,
        jax.default_backend())
    if made is not None:
      alternating["open_clip"] = made[0]
      steppers["open_clip"] = lambda step=made[1]: (step(), step())
  times = timing.interleaved_seconds(steppers, repeats * 2)
  seconds = statistics.median(times["method"]) / 2
  flops = steppers["method"].flops
  peak = matmul_peak_flops()
  out = {
      "method": config.method,
      "batch_size": config.input.batch_size,
      "step_seconds": seconds,
      "examples_per_sec": config.input.batch_size / seconds,
      "flops_per_step": flops,
      "achieved_flops_per_sec": flops / seconds,
      "matmul_peak_flops_per_sec": peak,
      "mfu": flops / seconds / peak,
      "clip_step_seconds": None,
      "step_ratio": None,
      "peer": None,
      "peer_speedup": None,
  }
  print(f"vlkg step: {seconds * 1e3:.1f} ms, {out['examples_per_sec']:.0f} examples/s, "
        f"{flops / 1e9:.2f} GFLOP/step, {flops / seconds / 1e9:.1f} GFLOP/s achieved, "
        f"measured f32 matmul peak {peak / 1e9:.1f} GFLOP/s, MFU {out['mfu']:.1%}")
  if with_clip:
    clip_seconds = statistics.median(times["clip"]) / 2
    out["clip_step_seconds"] = clip_seconds
    out["step_ratio"] = seconds / clip_seconds
    print(f"{config.method} / CLIP step: {out['step_ratio']:.2f}x (CLIP "
          f"{clip_seconds * 1e3:.1f} ms; medians of {repeats * 2} alternating samples)")
  peers = {}
  for name in selected_peers(peer):
    if name in alternating:
      result = alternating[name], statistics.median(times[name]) / 2
    elif name == "open_clip":
      result = None  # skipped, with a message
    else:
      result = peer_step_seconds(config, repeats)
    if result is not None:
      peers[name] = {"name": result[0], "step_seconds": result[1],
                     "speedup": result[1] / seconds}
      print(f"peer {result[0]}: {result[1] * 1e3:.1f} ms/step; vlkg is "
            f"{peers[name]['speedup']:.2f}x faster")
  if peers:
    fastest = min(peers.values(), key=lambda p: p["step_seconds"])
    out["peer"] = {"name": fastest["name"], "step_seconds": fastest["step_seconds"]}
    out["peer_speedup"] = fastest["speedup"]
    out["peers"] = peers
  return out


def peer_step_seconds(config, repeats: int):
  """(name, median seconds) of the same training step in HF transformers, or None."""
  try:
    import torch
    import transformers
    clip_model = transformers.CLIPModel  # transformers imports its model code lazily
  except ImportError as e:
    print(f"peer skipped: {e}")
    return None
  m, img, txt = config.model, config.model.image, config.model.text
  act = "quick_gelu" if img.act == "quick_gelu" else "gelu"
  cfg = transformers.CLIPConfig(
      text_config=dict(vocab_size=txt.vocab_size, hidden_size=txt.width,
                       intermediate_size=int(txt.width * txt.mlp_ratio),
                       num_hidden_layers=txt.depth, num_attention_heads=txt.heads,
                       max_position_embeddings=txt.context_length, hidden_act=act,
                       eos_token_id=3, pad_token_id=0, bos_token_id=2),
      vision_config=dict(hidden_size=img.width, intermediate_size=int(img.width * img.mlp_ratio),
                         num_hidden_layers=img.depth, num_attention_heads=img.heads,
                         image_size=config.model.image_size, patch_size=img.patch_size,
                         hidden_act=act),
      projection_dim=m.embed_dim)
  torch.manual_seed(0)
  model = clip_model(cfg)
  model.train()
  o = config.optim
  opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(o.b1, o.b2), eps=o.eps,
                          weight_decay=o.weight_decay)
  b = synthetic_batch(config, txt.vocab_size)
  pixels = torch.tensor(b["image"], dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
  ids = torch.tensor(b["text"], dtype=torch.long)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip_norm)
    opt.step()

  return f"transformers {transformers.__version__} CLIPModel (torch {torch.__version__}, " \
         f"{torch.get_num_threads()} threads)", median_seconds(step, repeats * 2)
