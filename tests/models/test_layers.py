"""vlkg.models.layers: the exact GELU against Python's own erf, value and slope."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from vlkg.models import layers


def test_exact_gelu_matches_the_erf_definition_and_its_derivative():
  x = np.linspace(-8.0, 8.0, 401)
  # x * Phi(x), and its derivative Phi(x) + x * phi(x), in float64.
  phi_cdf = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
  phi_pdf = np.exp(-0.5 * x**2) / math.sqrt(2.0 * math.pi)
  gelu = layers.get_activation("gelu")
  np.testing.assert_allclose(jax.jit(gelu)(jnp.asarray(x, jnp.float32)), x * phi_cdf,
                             atol=2e-6)
  slope = jax.jit(jax.vmap(jax.grad(gelu)))(jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(slope, phi_cdf + x * phi_pdf, atol=2e-6)
  np.testing.assert_allclose(gelu(jnp.float32(1.0)), 0.8413447460685429, rtol=1e-6)  # Phi(1)
