"""A test-only tiny experiment for the subprocess reliability tests (kill, resume, multi-host).

  python -m efficientnet_jax.main --config=tests/reliability_config.py --workdir=/tmp/run

The tiny variant of tests/training/test_loop.py (width/depth 0.25, 32 px digits, float32, XLA's
grouped convolution for the depthwise layers: it compiles faster) with a checkpoint every 2 steps,
so that kills land between, on and inside checkpoint writes.

The learning rate (1e-5 after batch scaling) is 100x below the recipe's. With 2 processes × 2
devices the all-reduces add the devices' partial sums in another order than 1 × 4, so the losses
differ in the last ulps (2e-7 relative at step 1, where the parameters are equal); at 1e-3 this
net amplifies that tenfold per step (3e-6 by step 5), past the 1e-6 of the multi-host test, while
at 1e-5 it stays at the float32 floor (≤ 7e-7 over 8 steps, measured). A wrong data slice or a
missing all-reduce still moves the loss by ≥ 1e-3, and the bit-identity tests are unaffected:
they tolerate no difference at all.
"""

from efficientnet_jax import config


# What makes the train and eval steps the programs they are; tests/training/test_loop.py's tiny
# config shares it, so that its steps are this run's compiled programs (the cadence of steps,
# logging and checkpoints is not part of them).
PROGRAM = dict(dataset='digits', width=0.25, depth=0.25, image_size=32, dtype='float32',
               batch_size=16, eval_batch_size=120, warmup_epochs=0.0, ema_decay=0.99,
               learning_rate=0.00016, bn_group_size=0, depthwise_impl='conv',
               **{'augment.policy': 'none'})


def get_config(arg=None):
  return config.get_config(
      'b0', arg, total_steps=8, log_every_steps=1, eval_every_steps=8, checkpoint_every_steps=2,
      keep_checkpoints=5, **PROGRAM)
