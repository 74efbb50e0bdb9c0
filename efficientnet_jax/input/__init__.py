"""Data: sources (TFDS, image folder, embedded digits) → deterministic, resumable numpy batches.

  sources.py        the datasets and their sizes (`dataset_info`)
  pipeline.py       `train_iterator` / `eval_iterator`: order, sharding over processes, resume
  preprocessing.py  decode, crop, resize, flip, normalise (one image, in TF)
  augment.py        RandAugment and AutoAugment v0 on uint8 images

The only part of the package that imports TensorFlow.
"""
