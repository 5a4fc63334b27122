"""Every Orbax call in one place.

A checkpoint holds the train state (params, batch statistics, optimiser
state, step, PRNG key), the data iterator state and a small `meta` record
(model name and parts, parameter shapes digest) that tells a checkpoint of
another model from ours. Orbax writes into a temporary directory and
renames it when complete, so a save killed halfway is never restored.
"""
import hashlib
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from scnet_jax.errors import CheckpointError

# Config sections of the model whose `type` names the checkpoint's parts.
PARTS = ("backbone", "neck", "rpn", "roi_heads")


def params_digest(params):
  shapes = sorted((jax.tree_util.keystr(k), tuple(v.shape)) for k, v in
                  jax.tree_util.tree_flatten_with_path(params)[0])
  return hashlib.sha1(repr(shapes).encode()).hexdigest()[:16]


def make_meta(config, params, class_names=None):
  return {"model_name": config.model_name,
          "parts": "/".join(config.model[s].type for s in PARTS
                            if s in config.model),
          "params_digest": params_digest(params),
          "class_names": list(class_names or [])}


def _checkpoints_dir(path):
  path = os.path.abspath(path)
  sub = os.path.join(path, "checkpoints")
  return sub if os.path.isdir(sub) else path


def read_class_names(checkpoint_dir):
  """Class names stored with the latest checkpoint ([] if none)."""
  ckpt = Checkpointer(_checkpoints_dir(checkpoint_dir), async_save=False)
  try:
    step = ckpt.latest_step()
    return ckpt.read_meta(step).get("class_names", []) if step is not None \
        else []
  finally:
    ckpt.close()


class Checkpointer:
  """Checkpoints under `directory` (workdir/checkpoints)."""

  def __init__(self, directory, max_to_keep=3, async_save=True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save, create=True))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step, state, data_state, meta, wait=False):
    self.manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state or {}),
        meta=ocp.args.JsonSave(meta)), force=True)
    if wait:
      self.manager.wait_until_finished()

  def wait(self):
    self.manager.wait_until_finished()

  def read_meta(self, step=None):
    step = self.latest_step() if step is None else step
    return self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, abstract_state, expected_meta, step=None):
    """Returns (state, data_state, step); CheckpointError if the checkpoint
    belongs to another model."""
    step = self.latest_step() if step is None else step
    meta = self.read_meta(step)
    check_meta(meta, expected_meta, os.path.join(self.directory, str(step)))
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore()))
    return out["state"], out["data"], step

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def check_meta(meta, expected, where):
  if meta.get("params_digest") != expected["params_digest"]:
    raise CheckpointError(
        f"{where}: checkpoint of model '{meta.get('model_name')}' "
        f"({meta.get('parts')}) does not fit the configured model "
        f"'{expected['model_name']}' ({expected['parts']}): parameter "
        f"shapes differ")


def restore_params(checkpoint_dir, config, abstract_params):
  """Params (and batch stats) of the latest checkpoint in `checkpoint_dir`
  (a workdir, its checkpoints/ folder, or a converted checkpoint), for
  evaluation and Predictor."""
  path = _checkpoints_dir(checkpoint_dir)
  if not os.path.isdir(path):
    raise CheckpointError(f"{checkpoint_dir}: checkpoint directory not found")
  ckpt = Checkpointer(path, async_save=False)
  step = ckpt.latest_step()
  if step is None:
    raise CheckpointError(f"{checkpoint_dir}: holds no complete checkpoint")
  meta = ckpt.read_meta(step)
  check_meta(meta, make_meta(config, abstract_params["params"]),
             os.path.join(path, str(step)))
  state = ckpt.manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore()))["state"]
  ckpt.close()
  return ({"params": state["params"],
           "batch_stats": state.get("batch_stats", {})}, step)


def to_host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))
