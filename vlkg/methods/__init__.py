"""One module per method; ``config.method = "x"`` imports ``vlkg.methods.x``.

A method module provides ``FIELDS`` (the batch keys it reads), ``build_model(config)``
and ``make_loss_fn(model, config) -> loss_fn(params, batch, rng, step)``.
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp


def load(name: str):
  try:
    return importlib.import_module(f"vlkg.methods.{name}")
  except ModuleNotFoundError as e:
    if e.name == f"vlkg.methods.{name}":
      raise ValueError(f"config.method={name!r}: there is no module vlkg/methods/{name}.py")
    raise


def method_config(config, key: str, defaults: dict) -> dict:
  """``config.<key>`` over ``defaults``; a key the method does not know is an error
  that names it (a typo must not silently fall back to the default)."""
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
  return module.init(rng, *example_inputs(config))["params"]


def abstract_params(module, config):
  return jax.eval_shape(lambda r: init_params(module, config, r), jax.random.key(0))
