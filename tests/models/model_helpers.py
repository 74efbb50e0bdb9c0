"""What the model and layer tests share: abstract and fake-valued variables, test images.

Compiling jax.random initialisers is slow on CPU (about half a second per parameter shape), so
the numerical tests use `fake_variables`, which has init's structure and well-scaled numpy
values. For the same reason the tests that compile a net use `TINY_BLOCKS`, B0's first two
stages (3 blocks: no expansion, then expansion + stride, then a droppable skip), unless they
need B0's full schedule.
"""

import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.models import scaling

TINY_BLOCKS = scaling.B0_BLOCKS[:2]


def abstract_init(net, shape=(1, 32, 32, 3)):
  images = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda x: net.init(jax.random.key(0), x), images)


def fake_variables(net, shape=(1, 32, 32, 3), seed=0, **init_kwargs):
  """init's variable tree filled with numpy values: fan-in-scaled kernels, perturbed BN."""
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(lambda x: net.init(jax.random.key(0), x, **init_kwargs),
                            jax.ShapeDtypeStruct(shape, jnp.float32))

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':  # Depthwise (k, k, 1, C) has fan-in k·k, as it should.
      value = rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
    elif name == 'scale':
      value = 1 + 0.1 * rng.standard_normal(leaf.shape)
    elif name == 'var':
      value = rng.uniform(0.5, 1.5, leaf.shape)
    else:  # Biases and running means.
      value = 0.1 * rng.standard_normal(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def images(shape, seed=1, mean=0.0):
  return jnp.asarray(mean + np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))
