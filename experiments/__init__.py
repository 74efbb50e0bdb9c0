"""The paper's compound-scaling method as runnable experiments (see experiments/README.md).

  compound_search.py  step 1: fix φ = 1, grid-search (α, β, γ) under α·β²·γ² ≈ 2.
  scaling_curves.py   step 2: fix (α, β, γ), raise φ; plus width/depth/resolution-only ablations.

Shared pieces: `grid` (the constrained grid), `points` (scaled models and their measured FLOPs,
the single-dimension solver), `sweep` (resumable trials, merge, CLI), `report` (tables, plots).
"""
