"""Synthetic-data throughput of the real train step (or the forward pass) on any device.

  harness.py  build the step `main` runs from the config builder, compile it, time it, fit the
              largest batch that fits
  measures.py what a figure is measured against: device peak FLOP/s, memory, HLO op counts,
              versions

The command line is `python -m efficientnet_jax.benchmark`. Importable and runnable without
TensorFlow, TFDS or ml_collections (an accelerator image may have only the JAX stack).
"""
