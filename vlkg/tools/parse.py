"""Prints the scene graph of a caption as one line of JSON (DESIGN.md contract).

    python -m vlkg.tools.parse "a man riding a brown horse" [--backend general|world|spacy]

The output is exactly ``SceneGraph.to_json()``:
``{"objects": [...], "attributes": [[i, attr], ...], "relations": [[s, pred, o], ...]}``.
The parsers are the rule-based text scene-graph parsers of Structure-CLIP
(Structure-CLIP, Huang et al., AAAI 2024); see ``vlkg.graphs``.
"""

from __future__ import annotations

import argparse
import json
import sys

from vlkg import graphs


def main(argv: list[str] | None = None) -> int:
  # argparse rather than absl: this tool must start fast and never import JAX.
  ap = argparse.ArgumentParser(prog="python -m vlkg.tools.parse",
                               description="Print a caption's scene graph as JSON.")
  ap.add_argument("caption", help="the caption to parse")
  ap.add_argument("--backend", default="general", choices=graphs.BACKENDS)
  args = ap.parse_args(argv)
  print(json.dumps(graphs.parse(args.caption, args.backend).to_json()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
