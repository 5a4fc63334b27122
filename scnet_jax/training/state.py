"""Train state and initialisation with static shapes."""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from scnet_jax.models import dummy_batch
from scnet_jax.models.detectors.base import DTYPES
from scnet_jax.models.structures import stream


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any
  # The key's raw data (uint32 [2] for threefry): checkpoints hold plain
  # arrays; the step wraps it into a typed key.
  rng: jnp.ndarray


def seed_key(seed, name):
  """The typed key of a run's PRNG stream `name`, derived from the root
  key of `seed`: "params" (initialisation), "sample" (the sampling at
  init), "train" (the train state's key)."""
  return stream(jax.random.key(seed), name)


def _init_fn(model, seed):
  """batch -> the model's variables, its parameters created in float32
  and cast to model.param_dtype (ops/precision.py)."""
  rngs = {"params": seed_key(seed, "params"),
          "sample": seed_key(seed, "sample")}
  dtype = DTYPES[model.cfg.param_dtype]

  def init(batch):
    variables = model.init(rngs, batch)
    return {**variables, "params": jax.tree.map(
        lambda x: x.astype(dtype), variables["params"])}
  return init


def init_variables(model, config, seed):
  """Parameters and batch statistics, initialised under jit."""
  variables = jax.jit(_init_fn(model, seed))(dummy_batch(config, 1))
  return variables["params"], variables.get("batch_stats", {})


def abstract_variables(model, config):
  """The model's variables as jax.ShapeDtypeStructs ({"params", and
  "batch_stats" where the model has them}), traced, nothing computed: the
  target of a checkpoint restore, or a parameter count."""
  return jax.eval_shape(_init_fn(model, 0), dummy_batch(config, 1))


def create_state(params, batch_stats, tx, seed):
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=tx.init(params),
                    rng=jax.random.key_data(seed_key(seed, "train")))


def param_count(params):
  """Number of parameters (or of elements) in a tree of arrays or
  ShapeDtypeStructs."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
