"""Data: sources (TFDS, image folder, embedded digits) → deterministic, resumable numpy batches.

  sources.py           the datasets and their sizes (`dataset_info`)
  cluttered_digits.py  the embedded digits as "cluttered MNIST" canvases (numpy; split by digit)
  pipeline.py          `train_iterator` / `eval_iterator`: order, sharding over processes, resume
  preprocessing.py     decode, crop, resize, flip, normalise (one image, in TF)
  image_header.py      an image file's declared size, read before decoding (decompression bombs)
  augment.py           RandAugment and AutoAugment v0 on uint8 images (one image, in TF)
  augment_policies.py  the policies (`AUGMENT_POLICIES`: each one's TF op, JAX op and config
                       keys) and their tables: op names, policy v0, levels → op arguments
  device_augment.py    the same ops and policies in JAX, on a batch, for the accelerator
  device_preprocessing.py  `augment.on_device`: the train batch augmented and normalised in the
                       train step
  normalization.py     the (mean, std) of each input normalisation
  data_service.py      the train pipeline on tf.data service workers, in step order

The only part of the package that imports TensorFlow, except augment_policies, device_augment,
device_preprocessing, normalization and image_header, which must import on the accelerator
machines (they have no TensorFlow) or before TensorFlow loads.
"""
