"""Train state and initialisation with static shapes."""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jnp.ndarray


def dummy_batch(config, batch_size, bucket=None):
  """Zero batch with the loader's shapes and dtypes (for init / tracing)."""
  d, m = config.data, config.model
  h, w = bucket or tuple(d.buckets[0])
  g, r = d.max_instances, d.mask_crop_size
  batch = dict(
      image=np.zeros((batch_size, h, w, 3), np.uint8),
      image_hw=np.tile(np.array([[h, w]], np.int32), (batch_size, 1)),
      gt_boxes=np.zeros((batch_size, g, 4), np.float32),
      gt_labels=np.zeros((batch_size, g), np.int32),
      gt_valid=np.zeros((batch_size, g), bool),
      gt_mask_crops=np.zeros((batch_size, g, r, r), np.uint8),
      gt_mask_windows=np.zeros((batch_size, g, 4), np.float32))
  if m.semantic:
    batch["gt_semantic"] = np.zeros((batch_size, h // 8, w // 8), np.uint8)
  return batch


def init_variables(model, config, seed):
  """Parameters and batch statistics, initialised under jit."""
  batch = dummy_batch(config, 1)
  rngs = {"params": jax.random.PRNGKey(seed),
          "sample": jax.random.PRNGKey(seed + 1)}
  variables = jax.jit(lambda b: model.init(rngs, b))(batch)
  return variables["params"], variables.get("batch_stats", {})


def create_state(params, batch_stats, tx, seed):
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=tx.init(params),
                    rng=jax.random.PRNGKey(seed + 2))


def param_count(params):
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
