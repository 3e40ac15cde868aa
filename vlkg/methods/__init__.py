"""One module per method; ``config.method = "x"`` imports ``vlkg.methods.x``.

A method module is the whole method. It provides

* ``fields(config) -> tuple[vlkg.graphs.fields.Field, ...]``: what it adds to each
  caption's record, with the builders that make it at prepare time (``()`` for
  none); the batch holds ``image``, ``text`` and every declared feature by name;
* ``default_config() -> dict``: its ``config.<method>`` section, which
  ``configs/<method>.py`` starts from, so each default is written once;
* ``build_model(config)`` and ``make_loss_fn(model, config) -> loss_fn(params,
  batch, rng, step)``;
* optionally ``eval_encoder(module, params, tokenizer, config, *, image_size,
  batch_size, dataset_dir)``: its evaluation encoder (``vlkg.api.make_encoder``
  calls it; None falls back to the plain two towers).

``config.method`` may also be a dotted module path (``"my_pkg.my_method"``), so that
a method can live outside the package, e.g. in a test.
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp


def load(name: str):
  """The module of method ``name``: ``vlkg.methods.<name>``, or ``name`` itself if
  it is a dotted module path."""
  module = name if "." in name else f"vlkg.methods.{name}"
  try:
    return importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name == module or module.startswith(f"{e.name}."):
      where = f"vlkg/methods/{name}.py" if "." not in name else f"module {name}"
      raise ValueError(f"config.method={name!r}: there is no {where}") from None
    raise


def fields(config) -> tuple:
  """The fields the method of ``config`` declares (``vlkg.graphs.fields.Field``)."""
  from vlkg.graphs import fields as fields_lib
  return fields_lib.check(load(config.method).fields(config))


def batch_keys(config) -> tuple[str, ...]:
  """The keys of a training batch of ``config``'s method: image, text, its features."""
  return ("image", "text", *(n for field in fields(config) for n in field.names))


def method_config(config, key: str, defaults: dict) -> dict:
  """``config.<key>`` over ``defaults``; a key the method does not know is an error
  that names it (a typo must not silently fall back to the default). Configs from
  ``configs/`` carry the whole section; the defaults fill in hand-made configs."""
  out = dict(defaults)
  given = config.get(key, None)
  if given is not None:
    given = given.to_dict() if hasattr(given, "to_dict") else dict(given)
    unknown = set(given) - set(out)
    if unknown:
      raise KeyError(f"unknown config.{key} keys {sorted(unknown)}")
    out.update(given)
  return out


def build_model(config):
  return load(config.method).build_model(config)


def example_inputs(config):
  """Smallest inputs of the right shapes and dtypes for ``model.init``."""
  s = config.model.image_size
  return (jnp.zeros((1, s, s, 3), jnp.float32),
          jnp.zeros((1, config.model.text.context_length), jnp.int32))


def init_params(module, config, rng):
  """The module's initial params, computed by one jitted program (run op by op, a
  model's init compiles each of its hundreds of distinct operations apart)."""
  return jax.jit(lambda r: module.init(r, *example_inputs(config))["params"])(rng)


def abstract_params(module, config):
  return jax.eval_shape(lambda r: init_params(module, config, r), jax.random.key(0))
