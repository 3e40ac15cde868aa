"""vlkg: structure- and knowledge-enhanced vision-language pre-training in JAX/Flax."""
