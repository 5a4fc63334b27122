"""`--config.init_from`: start training from other weights.

Accepts an Orbax checkpoint written by train.py or by `scnet_jax.convert`
(a full model, or a backbone only). Every parameter whose path matches is
taken; parameters only the model has keep their fresh initialisation, and
the log says how many of each. A parameter in both with another shape
(a checkpoint of another config) is refused in one line naming it, unless
`init_skip_mismatched` is set (fine-tuning to other classes: such
parameters then start fresh too).
"""
import flax
import numpy as np

from scnet_jax.checkpoint import old_layout, restore_any_params
from scnet_jax.errors import CheckpointError


def load_init_weights(config, params, path, log=print):
  loaded, step = restore_any_params(path, log)
  old = old_layout(params, loaded)
  if old:
    raise CheckpointError(f"{path} (step {step}): {old}")
  src = flax.traverse_util.flatten_dict(loaded, sep="/")
  dst = flax.traverse_util.flatten_dict(params, sep="/")
  taken, skipped = 0, []
  for k, v in dst.items():
    if k not in src:
      continue
    shape = tuple(np.shape(src[k]))
    if shape != tuple(v.shape):
      if not config.init_skip_mismatched:
        raise CheckpointError(
            f"{path} (step {step}): parameter {k} is {shape} in init_from "
            f"but {tuple(v.shape)} in the model {config.model_name}: a "
            f"checkpoint of another config (set "
            f"--config.init_skip_mismatched=True to start such parameters "
            f"fresh, e.g. to fine-tune to other classes)")
      skipped.append(k)
      continue
    dst[k] = np.asarray(src[k], v.dtype)
    taken += 1
  if taken == 0:
    raise CheckpointError(f"{path}: no parameter of init_from matches the "
                          f"model {config.model_name}")
  log(f"init_from {path} (step {step}): {taken} of {len(dst)} parameter "
      f"arrays loaded"
      + (f"; {len(skipped)} of another shape start fresh" if skipped else ""))
  return flax.traverse_util.unflatten_dict(dst, sep="/")
