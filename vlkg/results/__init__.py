"""The world protocol: one base model, every method fine-tuned from it, the claims.

    python -m vlkg.tools.results [--methods a,b] [--seeds 3] [--out DIR] [--quick]
        [--ablations]

The papers measure structure methods as fine-tunes of a CLIP that already knows
objects (Huang et al., AAAI 2024; Singh et al., EMNLP 2023; Li et al., NeurIPS
2022). The protocol reproduces that regime on the built-in world:

* ``command``: what the command does, without its flags;
* ``protocol``: the stages (train the base once, fine-tune every run from it for
  each seed, evaluate each run), each a subprocess, with resume and timings;
* ``workdir``: what a stage leaves in its directory (finished? stale? how long?);
* ``evaluation``: the evaluations that are not in a run's ``metrics.jsonl``
  (linear probes, the caption prior's blind score), one subprocess per run;
* ``claims``: ``Claim``, declared by each method module as ``CLAIMS``, and the
  arithmetic that judges one (mean and standard error over seeds, Δ, the rules);
* ``runs``: ``Run``, the runs a method module declares beside itself as ``RUNS``
  (its paper's ablations, a claim's baseline such as "CLIP + KG");
* ``report``: the claims table in ``docs/results.md`` (between markers), the
  ablation tables, the final JSON line;
* ``figure``: ``results.png``, each suite with the runs side by side.
"""
