"""vlkg: structure- and knowledge-enhanced vision-language pre-training in JAX/Flax."""

from vlkg import xla_cpu as _xla_cpu

_xla_cpu.configure()
