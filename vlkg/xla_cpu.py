"""XLA's CPU backend, set up for vlkg's training steps.

XLA:CPU hands parts of a program to YNNPACK as library fusions. Its default set
also fuses elementwise ops, which materialises every broadcast feeding such a
fusion (a LayerNorm's scale to the full activation, a softmax's constants) and
ran CLIP's step 1.6x slower than dots and reductions alone
(``--xla_cpu_experimental_ynn_fusion_type=dot,reduce``, measured with ``python -m
vlkg.tools.bench step``; docs/results.md, "Training step").

``configure`` appends that flag to ``XLA_FLAGS`` unless the flag is there already,
so a user's own setting wins. vlkg calls it on import; XLA reads its flags once,
when JAX first starts a backend, so it takes effect in any process that imports
vlkg before its first JAX computation. Other backends ignore the flag.
"""

from __future__ import annotations

import os
from typing import MutableMapping

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_FUSION_TYPES = "dot,reduce"


def configure(environ: MutableMapping[str, str] = os.environ) -> str:
  """Adds vlkg's YNNPACK fusion types to ``environ["XLA_FLAGS"]`` where the user
  has not chosen them; returns the resulting flags."""
  flags = environ.get("XLA_FLAGS", "")
  if YNN_FUSION_FLAG + "=" not in flags:
    flags = f"{flags} {YNN_FUSION_FLAG}={YNN_FUSION_TYPES}".strip()
    environ["XLA_FLAGS"] = flags
  return flags
