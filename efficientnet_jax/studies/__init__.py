"""The compound-scaling studies' machinery (the scripts and configs are in experiments/).

  grid.py           the constrained (α, β, γ) grid of step 1
  points.py         scaled models as points, their measured cost, the single-dimension solver
  sweep.py          resumable trials, `--list` / `--count` / `--item` / `--trial` / `--merge`, the
                    scripts' command line
  plan_cache.py     DIR/plan.json: the trials planned once per study directory, keyed by the config
  locks.py          one trainer per (trial, seed) item: a flock in its directory, exit 73 otherwise
  seeds.py          several seeds per trial: their training seeds, mean ± std
  statistics.py     intervals of top-1 and of differences over seeds and test images, verdicts
  comparisons.py    each study's claims tested on the seeds' per-example predictions
  report.py         tables and plots of the results
  proxies.py        the proxy tasks trials train on (digits on a CPU, imagenette on an accelerator)
  recalibration.py  evaluating a trial's checkpoint after re-estimating its BN statistics
"""
