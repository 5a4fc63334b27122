"""`--config.init_from`: start training from other weights.

Accepts an Orbax checkpoint written by train.py or by `scnet_jax.convert`
(a full model, or a backbone only). Every parameter whose path and shape
match is taken; the rest keep their fresh initialisation, and the log says
how many of each.
"""
import os

import flax
import numpy as np
import orbax.checkpoint as ocp

from scnet_jax.errors import CheckpointError


def load_init_weights(config, params, path, log=print):
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    path = os.path.join(path, "checkpoints")
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: init_from checkpoint not found")
  mgr = ocp.CheckpointManager(path)
  step = mgr.latest_step()
  if step is None:
    raise CheckpointError(f"{path}: init_from holds no complete checkpoint")
  loaded = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore()))["state"]["params"]
  mgr.close()
  src = flax.traverse_util.flatten_dict(loaded, sep="/")
  dst = flax.traverse_util.flatten_dict(params, sep="/")
  taken = 0
  for k, v in dst.items():
    if k in src and tuple(np.shape(src[k])) == tuple(v.shape):
      dst[k] = np.asarray(src[k], v.dtype)
      taken += 1
  if taken == 0:
    raise CheckpointError(f"{path}: no parameter of init_from matches the "
                          f"model {config.model_name}")
  log(f"init_from {path}: {taken} of {len(dst)} parameter arrays loaded")
  return flax.traverse_util.unflatten_dict(dst, sep="/")
