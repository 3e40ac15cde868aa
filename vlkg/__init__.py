"""vlkg: structure- and knowledge-enhanced vision-language pre-training in JAX/Flax."""

from vlkg import xla_workarounds as _xla_workarounds

_xla_workarounds.apply()
